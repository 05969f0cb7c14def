//! The key-value pools of the guest, as Hyper-V's KVP.
//!
//! ```text
//! external  host writes (the daemon's push, or kvp_set from the host); guest programs read
//! guest     guest programs write (local socket); the host reads
//! auto      computed on each read from the guest's own facts; read-only
//! ```
//!
//! With a state directory the external and guest pools live in
//! `<state-dir>/kvp.json`, written to a temporary file, synced and renamed
//! after every change, so they survive an agent restart; without one they
//! are kept in memory only. Every change is checked against the protocol's
//! limits before it is applied, and a change that cannot be saved is undone.
//!
//! With Hyper-V's pool files ([`crate::hyperv_kvp`]) the guest pool lives in
//! `.kvp_pool_1`, read on every host read and changed under its lock, so a
//! program written for Hyper-V's KVP adds items the host sees; the external
//! pool is written to `.kvp_pool_0` after each change, the auto pool to
//! `.kvp_pool_2` whenever it is computed, and the host's own data (host
//! name, VM id and name, sent with the host's push) to `.kvp_pool_3`.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use guestcomm_protocol::integration::{
    check_key, check_value, short_key, GuestInfo, KvpEntries, KvpError, KvpPool, KvpSide,
};
use guestcomm_protocol::limits::MAX_KVP_KEYS_PER_POOL;
use serde::{Deserialize, Serialize};
use tracing::warn;

use crate::hyperv_kvp::{PoolFileError, PoolFiles, Update};

/// The file in the state directory.
pub(crate) const STATE_FILE: &str = "kvp.json";

/// Largest state file read at start: two full pools with room to spare.
const MAX_STATE_FILE_BYTES: u64 = 4 * 1024 * 1024;

/// Why a key-value operation failed in the agent.
#[derive(Debug, thiserror::Error)]
pub enum KvpStoreError {
    /// The request broke a rule of the pools.
    #[error(transparent)]
    Kvp(#[from] KvpError),
    /// The state file could not be written; nothing changed.
    #[error("cannot save the key-value pools to {0}")]
    Save(String, #[source] std::io::Error),
    /// A Hyper-V pool file could not be used; nothing changed.
    #[error(transparent)]
    PoolFile(#[from] PoolFileError),
}

/// What the state file holds.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
struct Pools {
    external: KvpEntries,
    guest: KvpEntries,
}

impl Pools {
    fn pool_mut(&mut self, pool: KvpPool) -> Option<&mut KvpEntries> {
        match pool {
            KvpPool::External => Some(&mut self.external),
            KvpPool::Guest => Some(&mut self.guest),
            KvpPool::Auto => None,
        }
    }
}

/// The pools of this agent.
pub struct KvpStore {
    pools: Mutex<Pools>,
    file: Option<PathBuf>,
    hyperv: Option<PoolFiles>,
}

/// Keeps only entries within the limits (a state file edited by hand, or
/// written by another version, must not break the pools).
fn valid(entries: KvpEntries) -> KvpEntries {
    entries
        .into_iter()
        .filter(|(k, v)| check_key(k).is_ok() && check_value(v).is_ok())
        .take(MAX_KVP_KEYS_PER_POOL)
        .collect()
}

/// Checks a whole pool pushed by the host.
pub(crate) fn check_entries(entries: &KvpEntries) -> Result<(), KvpError> {
    if entries.len() > MAX_KVP_KEYS_PER_POOL {
        return Err(KvpError::PoolFull {
            pool: KvpPool::External,
            max: MAX_KVP_KEYS_PER_POOL,
        });
    }
    for (k, v) in entries {
        check_key(k)?;
        check_value(v)?;
    }
    Ok(())
}

impl KvpStore {
    /// Pools in memory only.
    pub fn in_memory() -> Self {
        Self {
            pools: Mutex::new(Pools::default()),
            file: None,
            hyperv: None,
        }
    }

    /// Pools kept in `<dir>/kvp.json` (created on the first change).
    pub fn open(dir: &Path) -> Result<Self, std::io::Error> {
        use std::io::Read;
        let file = dir.join(STATE_FILE);
        let mut pools = Pools::default();
        match std::fs::File::open(&file) {
            Ok(f) => {
                let mut text = Vec::new();
                f.take(MAX_STATE_FILE_BYTES).read_to_end(&mut text)?;
                match serde_json::from_slice::<Pools>(&text) {
                    Ok(p) => {
                        pools.external = valid(p.external);
                        pools.guest = valid(p.guest);
                    }
                    Err(e) => {
                        warn!(file = %file.display(), error = %e, "ignoring an unreadable key-value state file")
                    }
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                std::fs::create_dir_all(dir)?;
            }
            Err(e) => return Err(e),
        }
        Ok(Self {
            pools: Mutex::new(pools),
            file: Some(file),
            hyperv: None,
        })
    }

    /// Keeps the pools in Hyper-V's pool files too: the guest pool is taken
    /// from `.kvp_pool_1` from now on, the external pool is written to
    /// `.kvp_pool_0` at once.
    pub fn with_pool_files(mut self, files: PoolFiles) -> Result<Self, KvpStoreError> {
        let mut pools = self.lock().clone();
        pools.guest = valid(files.read(KvpPool::Guest)?);
        files.write(KvpPool::External, &pools.external)?;
        self.save(&pools)?;
        *self.lock() = pools;
        self.hyperv = Some(files);
        Ok(self)
    }

    /// The guest pool as the pool file holds it now (kept in memory and in
    /// the state file too).
    fn refresh_guest(&self, files: &PoolFiles) -> Result<KvpEntries, KvpStoreError> {
        let guest = valid(files.read(KvpPool::Guest)?);
        let mut pools = self.lock();
        if pools.guest != guest {
            pools.guest = guest.clone();
            if let Err(e) = self.save(&pools) {
                warn!(error = %guestcomm_protocol::error_chain(&e), "the guest pool changed in its pool file but cannot be saved");
            }
        }
        Ok(guest)
    }

    /// The auto pool, computed now (and published in its pool file).
    fn auto(&self, info: impl FnOnce() -> GuestInfo) -> KvpEntries {
        let entries = intrinsic(&info());
        if let Some(files) = &self.hyperv {
            if let Err(e) = files.write(KvpPool::Auto, &entries) {
                warn!(error = %guestcomm_protocol::error_chain(&e), "cannot publish the auto pool");
            }
        }
        entries
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Pools> {
        self.pools.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Every key of `pool`; `auto` is computed from `info`.
    pub fn list(
        &self,
        pool: KvpPool,
        info: impl FnOnce() -> GuestInfo,
    ) -> Result<KvpEntries, KvpStoreError> {
        Ok(match (pool, &self.hyperv) {
            (KvpPool::External, _) => self.lock().external.clone(),
            (KvpPool::Guest, Some(files)) => self.refresh_guest(files)?,
            (KvpPool::Guest, None) => self.lock().guest.clone(),
            (KvpPool::Auto, _) => self.auto(info),
        })
    }

    /// One value.
    pub fn get(
        &self,
        pool: KvpPool,
        key: &str,
        info: impl FnOnce() -> GuestInfo,
    ) -> Result<String, KvpStoreError> {
        check_key(key)?;
        let found = self.list(pool, info)?.remove(key);
        found.ok_or_else(|| {
            KvpError::UnknownKey {
                pool,
                key: short_key(key),
            }
            .into()
        })
    }

    /// Applies `change` to the pools if `side` writes `pool`, then saves;
    /// undoes it if saving fails.
    fn change(
        &self,
        side: KvpSide,
        pool: KvpPool,
        change: impl FnOnce(&mut KvpEntries) -> Result<(), KvpError>,
    ) -> Result<(), KvpStoreError> {
        if pool.writer() != Some(side) {
            return Err(KvpError::ReadOnly { pool, side }.into());
        }
        if let (KvpPool::Guest, Some(files)) = (pool, &self.hyperv) {
            return self.change_guest_file(files, change);
        }
        let mut pools = self.lock();
        let before = pools.clone();
        let Some(entries) = pools.pool_mut(pool) else {
            return Err(KvpError::ReadOnly { pool, side }.into());
        };
        change(entries)?;
        let published = match (pool, &self.hyperv) {
            (KvpPool::External, Some(files)) => files.write(pool, &pools.external),
            _ => Ok(()),
        };
        if let Err(e) = published {
            *pools = before;
            return Err(e.into());
        }
        if let Err(e) = self.save(&pools) {
            if let (KvpPool::External, Some(files)) = (pool, &self.hyperv) {
                let _ = files.write(pool, &before.external);
            }
            *pools = before;
            return Err(e);
        }
        Ok(())
    }

    /// A change of the guest pool when its pool file holds it: made to the
    /// file under its lock, then kept in memory and the state file.
    fn change_guest_file(
        &self,
        files: &PoolFiles,
        change: impl FnOnce(&mut KvpEntries) -> Result<(), KvpError>,
    ) -> Result<(), KvpStoreError> {
        let mut pools = self.lock();
        let guest = files.update(KvpPool::Guest, change).map_err(|e| match e {
            Update::File(e) => KvpStoreError::from(e),
            Update::Change(e) => KvpStoreError::from(e),
        })?;
        pools.guest = valid(guest);
        if let Err(e) = self.save(&pools) {
            warn!(error = %guestcomm_protocol::error_chain(&e), "the guest pool changed in its pool file but cannot be saved");
        }
        Ok(())
    }

    /// Sets a key.
    pub fn set(
        &self,
        side: KvpSide,
        pool: KvpPool,
        key: &str,
        value: &str,
    ) -> Result<(), KvpStoreError> {
        check_key(key)?;
        check_value(value)?;
        self.change(side, pool, |entries| {
            if !entries.contains_key(key) && entries.len() >= MAX_KVP_KEYS_PER_POOL {
                return Err(KvpError::PoolFull {
                    pool,
                    max: MAX_KVP_KEYS_PER_POOL,
                });
            }
            entries.insert(key.into(), value.into());
            Ok(())
        })
    }

    /// Removes a key.
    pub fn delete(&self, side: KvpSide, pool: KvpPool, key: &str) -> Result<(), KvpStoreError> {
        check_key(key)?;
        self.change(side, pool, |entries| {
            entries
                .remove(key)
                .map(drop)
                .ok_or_else(|| KvpError::UnknownKey {
                    pool,
                    key: short_key(key),
                })
        })
    }

    /// Replaces the whole external pool (the host's push), and with
    /// Hyper-V's pool files, the host's own data in `.kvp_pool_3` when the
    /// push carries it. Both are checked before anything changes.
    pub fn replace_external(
        &self,
        entries: KvpEntries,
        host_data: Option<KvpEntries>,
    ) -> Result<(), KvpStoreError> {
        check_entries(&entries)?;
        if let Some(data) = &host_data {
            check_entries(data)?;
        }
        self.change(KvpSide::Host, KvpPool::External, |pool| {
            *pool = entries;
            Ok(())
        })?;
        match (&self.hyperv, host_data) {
            (Some(files), Some(data)) => Ok(files.write_host_data(&data)?),
            _ => Ok(()),
        }
    }

    fn save(&self, pools: &Pools) -> Result<(), KvpStoreError> {
        let Some(file) = &self.file else {
            return Ok(());
        };
        let err = |e| KvpStoreError::Save(file.display().to_string(), e);
        let tmp = file.with_extension("json.tmp");
        let text = serde_json::to_vec(pools).map_err(|e| err(e.into()))?;
        let mut f = std::fs::File::create(&tmp).map_err(err)?;
        f.write_all(&text).map_err(err)?;
        f.sync_all().map_err(err)?;
        std::fs::rename(&tmp, file).map_err(err)
    }
}

/// The `auto` pool, with the key names of Hyper-V's Linux KVP daemon.
pub(crate) fn intrinsic(info: &GuestInfo) -> KvpEntries {
    let mut version = info.os.version_id.splitn(3, '.');
    let (major, minor) = (version.next().unwrap_or(""), version.next().unwrap_or(""));
    let addresses = |v6: bool| {
        info.interfaces
            .iter()
            .filter(|i| i.name != "lo")
            .flat_map(|i| &i.addresses)
            .filter(|a| a.contains(':') == v6)
            .map(|a| a.split('/').next().unwrap_or(a))
            .collect::<Vec<_>>()
            .join(";")
    };
    let os_name = if info.os.name.is_empty() {
        info.kernel.sysname.clone()
    } else {
        info.os.name.clone()
    };
    let pairs = [
        ("FullyQualifiedDomainName", info.fqdn.clone()),
        ("IntegrationServicesVersion", info.agent.clone()),
        ("NetworkAddressIPv4", addresses(false)),
        ("NetworkAddressIPv6", addresses(true)),
        ("OSBuildNumber", info.kernel.release.clone()),
        ("OSName", os_name),
        ("OSMajorVersion", major.to_string()),
        ("OSMinorVersion", minor.to_string()),
        ("OSVersion", info.os.version_id.clone()),
        ("OSKernelVersion", info.kernel.version.clone()),
        ("ProcessorArchitecture", info.kernel.machine.clone()),
    ];
    pairs
        .into_iter()
        .map(|(k, v)| {
            // Cut to the value limit on a character boundary: many addresses can be long.
            let mut v: String = v.chars().filter(|c| !c.is_control()).collect();
            let mut end = v.len().min(guestcomm_protocol::limits::MAX_KVP_VALUE_BYTES);
            while !v.is_char_boundary(end) {
                end -= 1;
            }
            v.truncate(end);
            (k.to_string(), v)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use guestcomm_protocol::integration::InterfaceInfo;

    fn none() -> GuestInfo {
        GuestInfo::default()
    }

    #[test]
    fn each_pool_is_written_only_by_its_writer() {
        let s = KvpStore::in_memory();
        s.set(KvpSide::Host, KvpPool::External, "a", "1").unwrap();
        s.set(KvpSide::Guest, KvpPool::Guest, "b", "2").unwrap();
        for (side, pool) in [
            (KvpSide::Guest, KvpPool::External),
            (KvpSide::Host, KvpPool::Guest),
            (KvpSide::Host, KvpPool::Auto),
        ] {
            let err = s.set(side, pool, "x", "y").unwrap_err();
            assert!(
                matches!(err, KvpStoreError::Kvp(KvpError::ReadOnly { .. })),
                "{err}"
            );
        }
        assert_eq!(s.get(KvpPool::External, "a", none).unwrap(), "1");
        assert_eq!(s.list(KvpPool::Guest, none).unwrap().len(), 1);
        let err = s.get(KvpPool::Guest, "nope", none).unwrap_err();
        assert!(
            matches!(err, KvpStoreError::Kvp(KvpError::UnknownKey { .. })),
            "{err}"
        );
    }

    #[test]
    fn a_full_pool_refuses_new_keys_but_accepts_updates() {
        let s = KvpStore::in_memory();
        for i in 0..MAX_KVP_KEYS_PER_POOL {
            s.set(KvpSide::Guest, KvpPool::Guest, &format!("k{i}"), "v")
                .unwrap();
        }
        let err = s
            .set(KvpSide::Guest, KvpPool::Guest, "one-more", "v")
            .unwrap_err();
        assert!(matches!(err, KvpStoreError::Kvp(KvpError::PoolFull { .. })));
        s.set(KvpSide::Guest, KvpPool::Guest, "k0", "new").unwrap();
        s.delete(KvpSide::Guest, KvpPool::Guest, "k1").unwrap();
        s.set(KvpSide::Guest, KvpPool::Guest, "one-more", "v")
            .unwrap();
    }

    #[test]
    fn pools_survive_reopening_the_state_directory() {
        let dir = tempfile::tempdir().unwrap();
        let s = KvpStore::open(dir.path()).unwrap();
        s.set(KvpSide::Guest, KvpPool::Guest, "g", "1").unwrap();
        let pushed: KvpEntries = [("h".to_string(), "2".to_string())].into();
        s.replace_external(pushed, None).unwrap();
        drop(s);
        let s = KvpStore::open(dir.path()).unwrap();
        assert_eq!(s.get(KvpPool::Guest, "g", none).unwrap(), "1");
        assert_eq!(s.get(KvpPool::External, "h", none).unwrap(), "2");
    }

    #[test]
    fn a_push_over_the_limits_changes_nothing() {
        let s = KvpStore::in_memory();
        s.replace_external([("a".into(), "1".into())].into(), None)
            .unwrap();
        let bad: KvpEntries = [("b".into(), "x".repeat(2049))].into();
        assert!(s.replace_external(bad.clone(), None).is_err());
        // Host data over the limits refuses the whole push.
        assert!(s.replace_external(KvpEntries::new(), Some(bad)).is_err());
        assert_eq!(s.list(KvpPool::External, none).unwrap().len(), 1);
    }

    #[test]
    fn the_hosts_own_data_goes_to_pool_3_and_is_not_a_pool_of_the_agent() {
        let dir = tempfile::tempdir().unwrap();
        let files = PoolFiles::create(dir.path()).unwrap();
        let s = KvpStore::in_memory()
            .with_pool_files(files.clone())
            .unwrap();
        let data: KvpEntries = [("HostName".to_string(), "host1".to_string())].into();
        s.replace_external(KvpEntries::new(), Some(data)).unwrap();
        let bytes = std::fs::read(dir.path().join(".kvp_pool_3")).unwrap();
        assert!(bytes.starts_with(b"HostName\0"), "{bytes:?}");
        assert!(s.list(KvpPool::External, none).unwrap().is_empty());
        // A push without it (an older daemon) leaves the file as it is.
        s.replace_external([("a".into(), "1".into())].into(), None)
            .unwrap();
        assert_eq!(
            std::fs::read(dir.path().join(".kvp_pool_3")).unwrap(),
            bytes
        );
    }

    #[test]
    fn intrinsic_pool_has_hyperv_key_names_and_no_loopback() {
        let mut info = GuestInfo::default();
        info.os.version_id = "12.4".into();
        info.interfaces = vec![
            InterfaceInfo {
                name: "lo".into(),
                addresses: vec!["127.0.0.1/8".into()],
                ..Default::default()
            },
            InterfaceInfo {
                name: "eth0".into(),
                addresses: vec!["192.0.2.5/24".into(), "2001:db8::5/64".into()],
                ..Default::default()
            },
        ];
        let pool = intrinsic(&info);
        assert_eq!(pool["NetworkAddressIPv4"], "192.0.2.5");
        assert_eq!(pool["NetworkAddressIPv6"], "2001:db8::5");
        assert_eq!(
            (
                pool["OSMajorVersion"].as_str(),
                pool["OSMinorVersion"].as_str()
            ),
            ("12", "4")
        );
    }
}

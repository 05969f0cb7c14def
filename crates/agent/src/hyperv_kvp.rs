//! Hyper-V's key-value pool files in the guest, so programs written for
//! Hyper-V's KVP read and write them unchanged.
//!
//! Hyper-V's Linux KVP daemon (hv_kvp_daemon) keeps each pool in a file
//! `/var/lib/hyperv/.kvp_pool_N` of fixed-size records and no header:
//!
//! ```text
//! record = key: 512 bytes, value: 2,048 bytes, each UTF-8, NUL-padded
//!          (a field filled to the last byte has no NUL)
//! pool 0 external        the host's items (AddKvpItems)      the agent writes
//! pool 1 guest           the guest's items, read by the host  guest programs and the agent write
//! pool 2 auto            the guest's intrinsic facts         the agent writes
//! pool 3 auto external   the host's facts (host name, VM id)  the agent writes what the host sends
//! pool 4 auto internal   unused                              created, left as it is
//! ```
//!
//! Every access holds an fcntl lock on the whole file, as hv_kvp_daemon and
//! Microsoft's sample client take it (shared to read, exclusive to write),
//! waited for at most [`LOCK_DEADLINE`]: a program that holds a pool's lock
//! for ever costs a clear error, not a stuck agent. Files are opened without
//! following symlinks, read up to [`MAX_RECORDS`] records, and records the
//! agent cannot take as items (not UTF-8, control characters) are kept as
//! they are when it rewrites the file, so no other program's data is lost.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use guestcomm_protocol::integration::{check_key, check_value, KvpEntries, KvpPool};
use nix::fcntl::{fcntl, FcntlArg};

/// Where hv_kvp_daemon keeps the pools.
pub const DEFAULT_DIR: &str = "/var/lib/hyperv";

/// The device through which Hyper-V itself exchanges KVP items with
/// hv_kvp_daemon: where it exists, the files are that daemon's.
pub const HYPERV_KVP_DEVICE: &str = "/dev/vmbus/hv_kvp";

/// Bytes of a record's key field.
const KEY_FIELD: usize = 512;
/// Bytes of a record's value field.
const VALUE_FIELD: usize = 2048;
/// Bytes of one record.
const RECORD: usize = KEY_FIELD + VALUE_FIELD;
/// The pools hv_kvp_daemon keeps (0 to 4).
const POOL_FILES: u8 = 5;
/// The file of the host's own data (hv_kvp_daemon's KVP_POOL_AUTO_EXTERNAL).
const HOST_DATA_FILE: u8 = 3;
/// Most records read from one file (Hyper-V keeps far fewer per pool).
pub(crate) const MAX_RECORDS: usize = 1024;
/// Longest wait for a pool file's lock.
pub(crate) const LOCK_DEADLINE: Duration = Duration::from_secs(5);
/// Pause between two tries of a lock another program holds.
const LOCK_RETRY: Duration = Duration::from_millis(10);
/// Mode of the files this agent creates: root writes, everyone reads (as
/// hv_kvp_daemon's files are read by unprivileged programs).
const FILE_MODE: u32 = 0o644;

/// Why a pool file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum PoolFileError {
    /// Another program held the file's lock past the deadline.
    #[error("{path} is locked by another program (waited {} s)", LOCK_DEADLINE.as_secs())]
    Locked {
        /// The pool file.
        path: String,
    },
    /// The file could not be opened, read or written.
    #[error("cannot use {0}")]
    Io(String, #[source] io::Error),
}

/// The pool files in one directory.
#[derive(Clone, Debug)]
pub struct PoolFiles {
    dir: PathBuf,
}

/// The file number of one of this agent's pools.
fn number(pool: KvpPool) -> u8 {
    match pool {
        KvpPool::External => 0,
        KvpPool::Guest => 1,
        KvpPool::Auto => 2,
    }
}

/// A pool file's records: the items, and the records that are not items.
#[derive(Debug, Default)]
struct Records {
    items: KvpEntries,
    foreign: Vec<Vec<u8>>,
}

impl Records {
    fn parse(bytes: &[u8]) -> Self {
        let mut records = Records::default();
        for record in bytes.chunks_exact(RECORD) {
            let (key, value) = record.split_at(KEY_FIELD);
            match (field(key), field(value)) {
                (Some(k), Some(v)) if check_key(&k).is_ok() && check_value(&v).is_ok() => {
                    records.items.insert(k, v);
                }
                (Some(k), _) if k.is_empty() => {} // an empty slot
                _ => records.foreign.push(record.to_vec()),
            }
        }
        records
    }

    fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity((self.foreign.len() + self.items.len()) * RECORD);
        for record in &self.foreign {
            out.extend_from_slice(record);
        }
        for (key, value) in &self.items {
            put_field(&mut out, key, KEY_FIELD);
            put_field(&mut out, value, VALUE_FIELD);
        }
        out
    }
}

/// A field's text: up to its first NUL, or all of it; `None` if not UTF-8.
fn field(bytes: &[u8]) -> Option<String> {
    let end = bytes.iter().position(|b| *b == 0).unwrap_or(bytes.len());
    String::from_utf8(bytes[..end].to_vec()).ok()
}

/// Appends `text` NUL-padded to `width` (checked items always fit).
fn put_field(out: &mut Vec<u8>, text: &str, width: usize) {
    let bytes = &text.as_bytes()[..text.len().min(width)];
    out.extend_from_slice(bytes);
    out.resize(out.len() + width - bytes.len(), 0);
}

/// An open pool file holding its fcntl lock (released when dropped: the
/// file is closed, and closing releases the process's locks on it).
struct Locked {
    file: File,
    name: String,
}

impl Locked {
    fn open(path: &Path, exclusive: bool) -> Result<Self, PoolFileError> {
        let name = path.display().to_string();
        let file = OpenOptions::new()
            .read(true)
            .write(exclusive)
            .create(exclusive)
            .mode(FILE_MODE)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(path)
            .map_err(|e| PoolFileError::Io(name.clone(), e))?;
        let lock = libc::flock {
            l_type: if exclusive {
                libc::F_WRLCK
            } else {
                libc::F_RDLCK
            } as libc::c_short,
            l_whence: libc::SEEK_SET as libc::c_short,
            l_start: 0,
            l_len: 0,
            l_pid: 0,
        };
        let deadline = Instant::now() + LOCK_DEADLINE;
        loop {
            match fcntl(&file, FcntlArg::F_SETLK(&lock)) {
                Ok(_) => return Ok(Self { file, name }),
                Err(nix::errno::Errno::EACCES | nix::errno::Errno::EAGAIN)
                    if Instant::now() < deadline =>
                {
                    std::thread::sleep(LOCK_RETRY)
                }
                Err(nix::errno::Errno::EACCES | nix::errno::Errno::EAGAIN) => {
                    return Err(PoolFileError::Locked { path: name })
                }
                Err(e) => return Err(PoolFileError::Io(name, e.into())),
            }
        }
    }

    fn read(&mut self) -> Result<Records, PoolFileError> {
        let mut bytes = Vec::new();
        self.file
            .seek(SeekFrom::Start(0))
            .and_then(|_| {
                (&self.file)
                    .take((MAX_RECORDS * RECORD) as u64)
                    .read_to_end(&mut bytes)
            })
            .map_err(|e| PoolFileError::Io(self.name.clone(), e))?;
        Ok(Records::parse(&bytes))
    }

    fn write(&mut self, records: &Records) -> Result<(), PoolFileError> {
        let bytes = records.encode();
        let file = &mut self.file;
        file.set_len(0)
            .and_then(|()| file.seek(SeekFrom::Start(0)))
            .and_then(|_| file.write_all(&bytes))
            .map_err(|e| PoolFileError::Io(self.name.clone(), e))
    }
}

impl PoolFiles {
    /// The pool files in `dir`, which is created (mode 0755) if missing, as
    /// is each of the five files (empty; existing ones are kept).
    pub fn create(dir: &Path) -> Result<Self, PoolFileError> {
        let name = dir.display().to_string();
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(dir)
            .map_err(|e| PoolFileError::Io(name, e))?;
        let files = Self {
            dir: dir.to_path_buf(),
        };
        for n in 0..POOL_FILES {
            Locked::open(&files.path(n), true)?;
        }
        Ok(files)
    }

    fn path(&self, n: u8) -> PathBuf {
        self.dir.join(format!(".kvp_pool_{n}"))
    }

    /// The items of `pool`'s file.
    pub fn read(&self, pool: KvpPool) -> Result<KvpEntries, PoolFileError> {
        Ok(Locked::open(&self.path(number(pool)), false)?.read()?.items)
    }

    /// Makes `pool`'s file hold `items` (and the records that are not
    /// items, as they were).
    pub fn write(&self, pool: KvpPool, items: &KvpEntries) -> Result<(), PoolFileError> {
        self.write_file(number(pool), items)
    }

    /// Makes `.kvp_pool_3` hold `items`, the host's own data (and the
    /// records that are not items, as they were).
    pub fn write_host_data(&self, items: &KvpEntries) -> Result<(), PoolFileError> {
        self.write_file(HOST_DATA_FILE, items)
    }

    /// [`PoolFiles::write`] of file number `n`.
    fn write_file(&self, n: u8, items: &KvpEntries) -> Result<(), PoolFileError> {
        match self.update_file(n, |held| {
            held.clone_from(items);
            Ok::<(), PoolFileError>(())
        }) {
            Ok(_) => Ok(()),
            Err(Update::File(e) | Update::Change(e)) => Err(e),
        }
    }

    /// Applies `change` to the items of `pool`'s file under one exclusive
    /// lock; the file is rewritten only if `change` succeeds.
    pub fn update<E>(
        &self,
        pool: KvpPool,
        change: impl FnOnce(&mut KvpEntries) -> Result<(), E>,
    ) -> Result<KvpEntries, Update<E>> {
        self.update_file(number(pool), change)
    }

    /// [`PoolFiles::update`] of file number `n`.
    fn update_file<E>(
        &self,
        n: u8,
        change: impl FnOnce(&mut KvpEntries) -> Result<(), E>,
    ) -> Result<KvpEntries, Update<E>> {
        let mut file = Locked::open(&self.path(n), true).map_err(Update::File)?;
        let mut records = file.read().map_err(Update::File)?;
        change(&mut records.items).map_err(Update::Change)?;
        file.write(&records).map_err(Update::File)?;
        Ok(records.items)
    }
}

/// Why [`PoolFiles::update`] changed nothing.
#[derive(Debug)]
pub enum Update<E> {
    /// The file could not be used.
    File(PoolFileError),
    /// The change refused.
    Change(E),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn items(pairs: &[(&str, &str)]) -> KvpEntries {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn record(key: &[u8], value: &[u8]) -> Vec<u8> {
        let mut r = vec![0u8; RECORD];
        r[..key.len()].copy_from_slice(key);
        r[KEY_FIELD..KEY_FIELD + value.len()].copy_from_slice(value);
        r
    }

    #[test]
    fn records_are_hv_kvp_daemons_fixed_fields() {
        let dir = tempfile::tempdir().unwrap();
        let files = PoolFiles::create(dir.path()).unwrap();
        for n in 0..POOL_FILES {
            assert!(dir.path().join(format!(".kvp_pool_{n}")).exists());
        }
        files
            .write(KvpPool::External, &items(&[("color", "blue")]))
            .unwrap();
        let bytes = std::fs::read(dir.path().join(".kvp_pool_0")).unwrap();
        assert_eq!(bytes, record(b"color", b"blue"));
        assert_eq!(
            files.read(KvpPool::External).unwrap(),
            items(&[("color", "blue")])
        );
    }

    #[test]
    fn full_fields_have_no_nul_and_still_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let files = PoolFiles::create(dir.path()).unwrap();
        let (key, value) = ("k".repeat(KEY_FIELD), "v".repeat(VALUE_FIELD));
        files
            .write(KvpPool::Guest, &items(&[(&key, &value)]))
            .unwrap();
        let bytes = std::fs::read(dir.path().join(".kvp_pool_1")).unwrap();
        assert_eq!(bytes.len(), RECORD);
        assert!(!bytes.contains(&0));
        assert_eq!(
            files.read(KvpPool::Guest).unwrap(),
            items(&[(&key, &value)])
        );
    }

    #[test]
    fn records_that_are_not_items_survive_a_rewrite_and_a_partial_record_is_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let files = PoolFiles::create(dir.path()).unwrap();
        let mut foreign = record(b"bin\xff", b"x");
        foreign.extend(record(b"ok", b"1"));
        foreign.extend_from_slice(b"half a record");
        std::fs::write(dir.path().join(".kvp_pool_1"), &foreign).unwrap();
        assert_eq!(files.read(KvpPool::Guest).unwrap(), items(&[("ok", "1")]));
        files
            .update(KvpPool::Guest, |i| {
                i.insert("new".into(), "2".into());
                Ok::<(), ()>(())
            })
            .unwrap();
        let bytes = std::fs::read(dir.path().join(".kvp_pool_1")).unwrap();
        assert_eq!(&bytes[..RECORD], &record(b"bin\xff", b"x")[..]);
        assert_eq!(
            files.read(KvpPool::Guest).unwrap(),
            items(&[("new", "2"), ("ok", "1")])
        );
    }

    #[test]
    fn a_refused_change_leaves_the_file_as_it_was() {
        let dir = tempfile::tempdir().unwrap();
        let files = PoolFiles::create(dir.path()).unwrap();
        files.write(KvpPool::Guest, &items(&[("a", "1")])).unwrap();
        let refused = files.update(KvpPool::Guest, |i| {
            i.clear();
            Err("no")
        });
        assert!(matches!(refused, Err(Update::Change("no"))));
        assert_eq!(files.read(KvpPool::Guest).unwrap(), items(&[("a", "1")]));
    }

    #[test]
    fn a_symlink_in_place_of_a_pool_file_is_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("elsewhere");
        std::fs::write(&target, b"keep").unwrap();
        let pools = dir.path().join("pools");
        std::fs::create_dir(&pools).unwrap();
        std::os::unix::fs::symlink(&target, pools.join(".kvp_pool_0")).unwrap();
        let err = PoolFiles::create(&pools).unwrap_err();
        assert!(err.to_string().contains(".kvp_pool_0"), "{err}");
        assert_eq!(std::fs::read(&target).unwrap(), b"keep");
    }
}

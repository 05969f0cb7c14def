//! Handshake nonces that never wait for the kernel's random pool.
//!
//! A nonce of `psk-hmac-sha256` must never repeat and must be unpredictable
//! to anyone without the VM's key K. Drawing it from a blocking
//! `getrandom(2)` gives both, but in a guest without an entropy source it
//! waits minutes for the pool ([`crate::entropy`]), so every connection
//! would hang. Both sides hold K whenever a nonce is needed, so a nonce is
//! instead derived from K and inputs that never repeat:
//!
//! ```text
//! N = HMAC-SHA256(K, label 0x00
//!                    len(B) B  pid0 T0 W0     process identity, at its first nonce
//!                    E                        persistent epoch (agent --state-dir)
//!                    C                        per-process counter, never reset
//!                    pid T W                  at this nonce
//!                    R)                       32 bytes, GRND_INSECURE
//! label = "guestcomm psk-hmac-sha256 server nonce" | "... client nonce"
//! B  = /proc/sys/kernel/random/boot_id (at most 64 bytes; len is one byte)
//! T  = CLOCK_BOOTTIME ns, W = CLOCK_REALTIME ns, C = 8 bytes,
//! E  = 0x00 (none) | 0x01 + 8 bytes; pids 4 bytes; integers big-endian
//! ```
//!
//! Unique: within a boot (B) no two processes share (pid0, T0) and a process
//! never repeats C; with a state directory, E is written durably before its
//! first use and never handed out twice, so even a repeated boot id cannot
//! repeat the inputs. HMAC-SHA256 maps distinct inputs to distinct outputs
//! except with negligible probability. Unpredictable: HMAC-SHA256 is a
//! pseudo-random function, so without K its outputs are indistinguishable
//! from random whatever the inputs; R adds the kernel's randomness, which
//! after a VM snapshot is restored is what makes the k-th nonce differ from
//! the original's (docs/SECURITY.md). The labels differ from the proof
//! labels of [`crate::auth`] at byte 32, so a nonce never equals a proof.

use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

use hmac::Mac;

use crate::auth::{Psk, NONCE_BYTES};
use crate::entropy;

/// The file in a state directory that holds the last epoch reserved.
pub const EPOCH_FILE: &str = "nonce-epoch";

/// Largest epoch file read: one decimal `u64` is at most 20 digits.
const MAX_EPOCH_FILE_BYTES: u64 = 64;

/// Longest boot id used (the kernel's is a 36-character UUID and a newline).
const MAX_BOOT_ID_BYTES: u64 = 64;

/// Which side of the handshake a nonce is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// The agent's `auth_challenge.nonce` (`Ns`).
    Server,
    /// The client's `hello.auth_nonce` (`Nc`).
    Client,
}

impl Role {
    fn label(self) -> &'static [u8] {
        match self {
            Self::Server => b"guestcomm psk-hmac-sha256 server nonce",
            Self::Client => b"guestcomm psk-hmac-sha256 client nonce",
        }
    }
}

/// Why the persistent epoch could not be reserved.
#[derive(Debug, thiserror::Error)]
pub enum EpochError {
    /// The file or its directory could not be read, written or synced.
    #[error("cannot reserve a nonce epoch in {path}")]
    Io {
        /// The file.
        path: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The file does not hold one decimal number below the largest `u64`.
    #[error("nonce epoch file {path} is malformed ({reason}); nonces stay unique through the boot id and the process identity; remove the file to count again")]
    Malformed {
        /// The file.
        path: String,
        /// What is wrong.
        reason: String,
    },
}

/// Reserves the next epoch in `dir`'s [`EPOCH_FILE`] and returns it (the
/// first is 1). The new value is on disk (file synced, renamed over the old
/// one, directory synced) before this returns, so a crash at any point
/// never hands the same epoch out twice: at worst one is skipped. Call once
/// per process start; the per-process counter numbers the nonces within it.
pub fn reserve_epoch(dir: &Path) -> Result<u64, EpochError> {
    let file = dir.join(EPOCH_FILE);
    let path = file.display().to_string();
    let io = |source| EpochError::Io {
        path: path.clone(),
        source,
    };
    let malformed = |reason: &str| EpochError::Malformed {
        path: path.clone(),
        reason: reason.into(),
    };
    let last = match std::fs::File::open(&file) {
        Ok(f) => {
            let mut text = String::new();
            f.take(MAX_EPOCH_FILE_BYTES)
                .read_to_string(&mut text)
                .map_err(|_| malformed("not text"))?;
            text.trim()
                .parse::<u64>()
                .map_err(|_| malformed("not a decimal number"))?
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
        Err(e) => return Err(io(e)),
    };
    let next = last
        .checked_add(1)
        .ok_or_else(|| malformed("at the largest value"))?;
    let tmp = dir.join(format!("{EPOCH_FILE}.tmp"));
    let mut out = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(io)?;
    out.write_all(format!("{next}\n").as_bytes()).map_err(io)?;
    out.sync_all().map_err(io)?;
    std::fs::rename(&tmp, &file).map_err(io)?;
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io)?;
    Ok(next)
}

/// What tells this process apart from every other on the machine, taken
/// at its first nonce.
#[derive(Clone, Debug, PartialEq, Eq)]
struct ProcessIdentity {
    /// The kernel's boot id (empty if unreadable).
    boot_id: Vec<u8>,
    /// The process id.
    pid: u32,
    /// CLOCK_BOOTTIME, ns.
    boottime_ns: u64,
    /// CLOCK_REALTIME, ns since the Unix epoch.
    realtime_ns: u64,
}

/// The clocks and process id at one moment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Moment {
    pid: u32,
    boottime_ns: u64,
    realtime_ns: u64,
}

/// Reads `clock` (a `CLOCK_*` id) in ns; 0 if the kernel refuses it.
fn clock_ns(clock: libc::clockid_t) -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec for the call.
    if unsafe { libc::clock_gettime(clock, &mut ts) } != 0 {
        return 0;
    }
    let secs = u64::try_from(ts.tv_sec).unwrap_or(0);
    let nanos = u64::try_from(ts.tv_nsec).unwrap_or(0);
    secs.wrapping_mul(1_000_000_000).wrapping_add(nanos)
}

impl Moment {
    fn now() -> Self {
        Self {
            pid: std::process::id(),
            boottime_ns: clock_ns(libc::CLOCK_BOOTTIME),
            realtime_ns: clock_ns(libc::CLOCK_REALTIME),
        }
    }
}

impl ProcessIdentity {
    fn current() -> Self {
        let mut boot_id = Vec::new();
        // Unreadable (no /proc): the other inputs still tell processes apart
        // within a boot, and the epoch across boots.
        if let Ok(f) = std::fs::File::open("/proc/sys/kernel/random/boot_id") {
            let _ = f.take(MAX_BOOT_ID_BYTES).read_to_end(&mut boot_id);
        }
        let now = Moment::now();
        Self {
            boot_id,
            pid: now.pid,
            boottime_ns: now.boottime_ns,
            realtime_ns: now.realtime_ns,
        }
    }
}

/// Everything a nonce is derived from besides the key and the role.
#[derive(Clone, Debug)]
struct NonceInput<'a> {
    identity: &'a ProcessIdentity,
    epoch: Option<u64>,
    counter: u64,
    now: Moment,
    random: [u8; NONCE_BYTES],
}

/// The construction of the module doc, as raw bytes.
fn derive(psk: &Psk, role: Role, input: &NonceInput<'_>) -> [u8; NONCE_BYTES] {
    let mut mac = psk.hmac();
    mac.update(role.label());
    mac.update(&[0]);
    let id = input.identity;
    // At most MAX_BOOT_ID_BYTES (64), so the length fits one byte.
    let boot_id_len = u8::try_from(id.boot_id.len()).unwrap_or(u8::MAX);
    mac.update(&[boot_id_len]);
    mac.update(&id.boot_id[..usize::from(boot_id_len)]);
    mac.update(&id.pid.to_be_bytes());
    mac.update(&id.boottime_ns.to_be_bytes());
    mac.update(&id.realtime_ns.to_be_bytes());
    match input.epoch {
        Some(epoch) => {
            mac.update(&[1]);
            mac.update(&epoch.to_be_bytes());
        }
        None => mac.update(&[0]),
    }
    mac.update(&input.counter.to_be_bytes());
    mac.update(&input.now.pid.to_be_bytes());
    mac.update(&input.now.boottime_ns.to_be_bytes());
    mac.update(&input.now.realtime_ns.to_be_bytes());
    mac.update(&input.random);
    mac.finalize().into_bytes().into()
}

/// This process's identity, taken once.
fn process_identity() -> &'static ProcessIdentity {
    static IDENTITY: OnceLock<ProcessIdentity> = OnceLock::new();
    IDENTITY.get_or_init(ProcessIdentity::current)
}

/// Numbers every nonce this process makes, whichever key or role.
static COUNTER: AtomicU64 = AtomicU64::new(0);

/// A fresh nonce for `role` under `psk`, as hex. `epoch` is this process's
/// [`reserve_epoch`] if it has a state directory. Never blocks: the kernel's
/// bytes are taken with [`entropy::fill_without_blocking`], and if even that
/// fails the nonce is still unique and unpredictable without them.
pub fn nonce(psk: &Psk, role: Role, epoch: Option<u64>) -> String {
    let mut random = [0u8; NONCE_BYTES];
    if entropy::fill_without_blocking(&mut random).is_err() {
        random = [0u8; NONCE_BYTES];
    }
    let input = NonceInput {
        identity: process_identity(),
        epoch,
        counter: COUNTER.fetch_add(1, Ordering::Relaxed),
        now: Moment::now(),
        random,
    };
    crate::auth::to_hex(&derive(psk, role, &input))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    fn key(byte: u8) -> Psk {
        Psk::from_hex(&format!("{byte:02x}").repeat(32)).unwrap()
    }

    /// The worst case for uniqueness: every restart gets the same pid and
    /// clocks, the kernel gives no random bytes, and the clocks stand still.
    fn frozen_identity() -> ProcessIdentity {
        ProcessIdentity {
            boot_id: b"00000000-0000-0000-0000-000000000000\n".to_vec(),
            pid: 42,
            boottime_ns: 1_000,
            realtime_ns: 2_000,
        }
    }

    fn frozen(identity: &ProcessIdentity, epoch: Option<u64>, counter: u64) -> NonceInput<'_> {
        NonceInput {
            identity,
            epoch,
            counter,
            now: Moment {
                pid: identity.pid,
                boottime_ns: identity.boottime_ns,
                realtime_ns: identity.realtime_ns,
            },
            random: [0; NONCE_BYTES],
        }
    }

    /// The nonces of one simulated process run: `count` handshakes.
    fn run(psk: &Psk, epoch: Option<u64>, count: u64) -> Vec<[u8; NONCE_BYTES]> {
        let identity = frozen_identity();
        (0..count)
            .map(|c| derive(psk, Role::Server, &frozen(&identity, epoch, c)))
            .collect()
    }

    #[test]
    fn nonces_never_repeat_across_many_calls_and_are_hex() {
        let psk = key(7);
        let mut seen = HashSet::new();
        for i in 0..20_000 {
            let role = if i % 2 == 0 {
                Role::Server
            } else {
                Role::Client
            };
            let n = nonce(&psk, role, Some(3));
            crate::auth::check_nonce(&n).unwrap();
            assert!(seen.insert(n), "repeated after {i} nonces");
        }
    }

    #[test]
    fn without_any_randomness_the_counter_alone_keeps_nonces_apart() {
        let nonces = run(&key(1), None, 10_000);
        let distinct: HashSet<_> = nonces.iter().collect();
        assert_eq!(distinct.len(), nonces.len());
    }

    #[test]
    fn restarts_with_the_same_epoch_file_never_repeat_a_nonce() {
        let dir = tempfile::tempdir().unwrap();
        let psk = key(1);
        let mut seen = HashSet::new();
        let mut epochs = Vec::new();
        for _restart in 0..5 {
            // Each restart: same pid and clocks, counter from 0, no randomness.
            let epoch = reserve_epoch(dir.path()).unwrap();
            epochs.push(epoch);
            for n in run(&psk, Some(epoch), 1_000) {
                assert!(seen.insert(n), "epoch {epoch} repeated a nonce");
            }
        }
        assert_eq!(epochs, [1, 2, 3, 4, 5]);
    }

    #[test]
    fn a_crash_never_reuses_an_epoch() {
        let dir = tempfile::tempdir().unwrap();
        let first = reserve_epoch(dir.path()).unwrap();
        // The process used `first`, then died: nothing more was written.
        // Another died while writing: its temporary file is left behind,
        // the rename never happened.
        std::fs::write(dir.path().join(format!("{EPOCH_FILE}.tmp")), b"garb").unwrap();
        let second = reserve_epoch(dir.path()).unwrap();
        assert!(second > first, "{second} after {first}");
        let on_disk = std::fs::read_to_string(dir.path().join(EPOCH_FILE)).unwrap();
        assert_eq!(on_disk, format!("{second}\n"));
        assert!(!dir.path().join(format!("{EPOCH_FILE}.tmp")).exists());
    }

    #[test]
    fn a_malformed_epoch_file_is_reported_not_reset() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join(EPOCH_FILE);
        for (text, reason) in [
            ("twelve\n", "not a decimal number"),
            ("18446744073709551615\n", "largest value"),
            ("", "not a decimal number"),
        ] {
            std::fs::write(&file, text).unwrap();
            let err = reserve_epoch(dir.path()).unwrap_err().to_string();
            assert!(err.contains(reason), "{text:?}: {err}");
            assert_eq!(
                std::fs::read_to_string(&file).unwrap(),
                text,
                "left as it was"
            );
        }
    }

    #[test]
    fn nonces_depend_on_the_key_the_role_and_every_input() {
        let identity = frozen_identity();
        let base = frozen(&identity, Some(1), 0);
        let n = derive(&key(1), Role::Server, &base);
        assert_ne!(n, derive(&key(2), Role::Server, &base), "key");
        assert_ne!(n, derive(&key(1), Role::Client, &base), "role");
        assert_ne!(
            n,
            derive(&key(1), Role::Server, &frozen(&identity, None, 0))
        );
        let other_boot = ProcessIdentity {
            boot_id: b"11111111-0000-0000-0000-000000000000\n".to_vec(),
            ..frozen_identity()
        };
        assert_ne!(
            n,
            derive(&key(1), Role::Server, &frozen(&other_boot, Some(1), 0))
        );
        let later = NonceInput {
            now: Moment {
                realtime_ns: 2_001,
                ..base.now
            },
            ..base.clone()
        };
        assert_ne!(
            n,
            derive(&key(1), Role::Server, &later),
            "clock at the nonce"
        );
        let random = NonceInput {
            random: [9; NONCE_BYTES],
            ..base.clone()
        };
        assert_ne!(n, derive(&key(1), Role::Server, &random), "kernel bytes");
        // Deterministic: the same key and inputs give the same nonce.
        assert_eq!(n, derive(&key(1), Role::Server, &base));
    }

    #[test]
    fn the_process_identity_names_this_boot_and_process() {
        let id = process_identity();
        assert_eq!(id.pid, std::process::id());
        assert!(id.boottime_ns > 0 && id.realtime_ns > 0);
        let boot_id = std::fs::read("/proc/sys/kernel/random/boot_id").unwrap();
        assert_eq!(id.boot_id, boot_id);
    }
}

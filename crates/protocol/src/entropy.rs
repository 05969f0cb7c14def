//! The kernel's random number generator, asked without ever blocking.
//!
//! Linux's `getrandom(2)` without flags (what the `getrandom` crate and most
//! libraries call) blocks until the kernel's random pool is initialized. A
//! guest with no entropy source (no virtio-rng, a CPU without RDRAND: QEMU's
//! default TCG CPU, many microVMs) stays uninitialized for minutes, and
//! everything that asks waits that long. So this crate asks in two ways only:
//!
//! - [`fill_if_initialized`] (`GRND_NONBLOCK`): bytes only from an
//!   initialized pool, else [`PoolState::NotInitialized`] at once. For keys,
//!   which need full entropy ([`crate::auth::Psk::generate`]).
//! - [`fill_without_blocking`] (`GRND_INSECURE`, else `GRND_NONBLOCK`, else
//!   `/dev/urandom`): bytes whatever the pool's state. Only as one input of
//!   a handshake nonce, whose safety does not rest on them
//!   ([`crate::nonce`]).

use std::io::{self, Read};

/// Whether the kernel's random pool has been initialized (seeded with
/// enough entropy for cryptographic use). Once it is, it stays so.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PoolState {
    /// Fully seeded: its bytes are fit for keys.
    Initialized,
    /// Not yet seeded: a blocking read would wait, for minutes without an
    /// entropy source.
    NotInitialized,
}

/// One `getrandom(2)` call with `flags`, repeated until `buf` is full
/// (a signal may cut a call short). Safe wrapper: the pointer and length
/// always describe the unfilled tail of `buf`.
fn getrandom_with(buf: &mut [u8], flags: libc::c_uint) -> io::Result<()> {
    let mut filled = 0;
    while filled < buf.len() {
        let tail = &mut buf[filled..];
        // SAFETY: `tail` is a valid, writable buffer of `tail.len()` bytes
        // for the duration of the call; the kernel writes at most that many.
        let got = unsafe { libc::getrandom(tail.as_mut_ptr().cast(), tail.len(), flags) };
        match usize::try_from(got) {
            Ok(n) => filled += n,
            Err(_) => {
                let err = io::Error::last_os_error();
                if err.kind() != io::ErrorKind::Interrupted {
                    return Err(err);
                }
            }
        }
    }
    Ok(())
}

/// Fills `buf` from the kernel's generator if its pool is initialized, and
/// reports [`PoolState::NotInitialized`] (leaving `buf` as it was) if not.
/// Never blocks. Fails only where `getrandom(2)` itself is refused (a kernel
/// before 3.17, a seccomp filter): then the pool's state cannot be asked
/// without blocking.
pub fn fill_if_initialized(buf: &mut [u8]) -> io::Result<PoolState> {
    match getrandom_with(buf, libc::GRND_NONBLOCK) {
        Ok(()) => Ok(PoolState::Initialized),
        Err(e) if e.raw_os_error() == Some(libc::EAGAIN) => Ok(PoolState::NotInitialized),
        Err(e) => Err(e),
    }
}

/// The pool's state, asked without blocking (and without using its bytes).
pub fn pool_state() -> io::Result<PoolState> {
    fill_if_initialized(&mut [0u8; 1])
}

/// Fills `buf` from the kernel's generator without ever blocking, whether
/// or not its pool is initialized: `GRND_INSECURE` (Linux 5.6 and later),
/// else `GRND_NONBLOCK`, else `/dev/urandom` (which never blocks). Before
/// the pool is initialized these bytes may be guessable: use them only
/// where safety does not depend on them.
pub fn fill_without_blocking(buf: &mut [u8]) -> io::Result<()> {
    match getrandom_with(buf, libc::GRND_INSECURE) {
        // EINVAL: a kernel before 5.6 does not know GRND_INSECURE.
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {}
        // ENOSYS/EPERM: no getrandom(2) here; /dev/urandom may still be.
        Err(e) if matches!(e.raw_os_error(), Some(libc::ENOSYS | libc::EPERM)) => {
            return read_urandom(buf)
        }
        done => return done,
    }
    match fill_if_initialized(buf)? {
        PoolState::Initialized => Ok(()),
        PoolState::NotInitialized => read_urandom(buf),
    }
}

fn read_urandom(buf: &mut [u8]) -> io::Result<()> {
    std::fs::File::open("/dev/urandom")?.read_exact(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_come_without_blocking_and_differ_between_calls() {
        let (mut a, mut b) = ([0u8; 32], [0u8; 32]);
        fill_without_blocking(&mut a).unwrap();
        fill_without_blocking(&mut b).unwrap();
        assert_ne!(a, b);
        assert_ne!(a, [0u8; 32]);
    }

    #[test]
    fn an_initialized_pool_fills_the_whole_buffer() {
        // The test host has an initialized pool (a host without one cannot
        // run this suite's key generation either); the guest case is the
        // VM test's (crates/cli/tests/vm.rs).
        let mut buf = [0u8; 300];
        assert_eq!(
            fill_if_initialized(&mut buf).unwrap(),
            PoolState::Initialized
        );
        assert!(buf[250..].iter().any(|&b| b != 0));
        assert_eq!(pool_state().unwrap(), PoolState::Initialized);
    }

    #[test]
    fn urandom_fallback_fills_the_buffer() {
        let mut buf = [0u8; 64];
        read_urandom(&mut buf).unwrap();
        assert_ne!(buf, [0u8; 64]);
    }
}

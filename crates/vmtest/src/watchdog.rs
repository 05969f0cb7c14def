//! The deadline of a whole VM test, so that a stall anywhere (a stuck
//! stream, a guest that stopped answering) fails the test with a report
//! instead of hanging CI. A thread waits for the deadline; when it passes,
//! it prints the VM's state, then kills QEMU and vhost-device-vsock by PID:
//! every connection to the guest closes, so whatever the test waits for ends
//! in an error, and the [`crate::Vm`]'s drop fails the test even if it went
//! on to pass. Should the test still run a grace period later (stuck on
//! something other than the guest), the thread ends the test process: a
//! last resort that leaves processes the test did not hand to the VM.

#[cfg(not(test))]
use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::diagnostics::VmLogs;
use crate::process::ChildGuard;

/// How long a test may go on after its VM was killed before the process is
/// ended: enough for every wait on the guest to see its connection close.
const GRACE_AFTER_KILL: Duration = Duration::from_secs(120);

/// Exit code of a test process ended by the watchdog (what a failed Rust
/// test binary returns).
const EXIT_CODE_STUCK: i32 = 101;

/// A child process that the test and the watchdog both may kill.
pub(crate) type SharedChild = Arc<Mutex<ChildGuard>>;

/// Locks `child`; a panic elsewhere while holding it does not matter here.
pub(crate) fn lock(child: &SharedChild) -> MutexGuard<'_, ChildGuard> {
    child
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Writes `text` to stderr at once: not `eprintln!`, which the test harness
/// captures and would show only at the test's end, or never if the process
/// is ended here.
#[cfg(not(test))]
fn say(text: &str) {
    let _ = writeln!(std::io::stderr().lock(), "\n{text}\n");
}

/// This module's own tests fire the watchdog on purpose: their banner stays
/// in the harness's capture, shown only if such a test fails.
#[cfg(test)]
fn say(text: &str) {
    eprintln!("\n{text}\n");
}

/// A running deadline; [`Watchdog::stop`] ends it.
#[derive(Debug)]
pub(crate) struct Watchdog {
    stop: Option<mpsc::Sender<()>>,
    thread: Option<JoinHandle<()>>,
    fired: Arc<AtomicBool>,
}

impl Watchdog {
    /// Starts the deadline of `limit` for the VM of `logs`, whose processes
    /// are `victims` (killed in that order when it passes).
    pub(crate) fn start(
        limit: Duration,
        logs: VmLogs,
        victims: Vec<SharedChild>,
    ) -> std::io::Result<Self> {
        let (stop, stopped) = mpsc::channel::<()>();
        let fired = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&fired);
        let thread = std::thread::Builder::new()
            .name("vm-deadline".into())
            .spawn(move || {
                if stopped.recv_timeout(limit) != Err(RecvTimeoutError::Timeout) {
                    return;
                }
                flag.store(true, Ordering::SeqCst);
                say(&format!(
                    "*** VM test deadline of {limit:?} passed: killing its VM (QEMU, \
                     then vhost-device-vsock) so that every wait on the guest fails ***\n{}",
                    logs.report()
                ));
                for child in &victims {
                    let _ = lock(child).kill();
                }
                if stopped.recv_timeout(GRACE_AFTER_KILL) == Err(RecvTimeoutError::Timeout) {
                    say(&format!(
                        "*** the VM test still runs {GRACE_AFTER_KILL:?} after its VM was \
                         killed: ending the test process ***"
                    ));
                    std::process::exit(EXIT_CODE_STUCK);
                }
            })?;
        Ok(Self {
            stop: Some(stop),
            thread: Some(thread),
            fired,
        })
    }

    /// Ends the deadline; true if it had passed.
    pub(crate) fn stop(&mut self) -> bool {
        // Dropping the sender wakes the thread at once.
        self.stop.take();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        self.fired.load(Ordering::SeqCst)
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        self.stop();
    }
}

#[cfg(test)]
mod tests {
    use std::process::Command;
    use std::time::Instant;

    use super::*;

    /// A `sleep 60` under a watchdog of `limit` (and the directory its
    /// report would read).
    fn watched_sleeper(limit: Duration) -> (tempfile::TempDir, SharedChild, Watchdog) {
        let dir = tempfile::tempdir().expect("tempdir");
        let logs = VmLogs {
            dir: dir.path().to_path_buf(),
            backend_bin: dir.path().join("vhost-device-vsock"),
        };
        let child = Command::new("sleep").arg("60").spawn().expect("sleep runs");
        let child = Arc::new(Mutex::new(ChildGuard::new(child)));
        let watchdog = Watchdog::start(limit, logs, vec![Arc::clone(&child)]).expect("thread");
        (dir, child, watchdog)
    }

    #[test]
    fn a_passed_deadline_kills_the_processes_and_is_reported() {
        let (_dir, child, mut watchdog) = watched_sleeper(Duration::from_millis(50));
        // The kill is an event to wait for: the child's exit (bounded).
        let end = Instant::now() + Duration::from_secs(30);
        while !lock(&child).has_exited() && Instant::now() < end {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(lock(&child).has_exited(), "the watchdog did not kill it");
        assert!(watchdog.stop());
    }

    #[test]
    fn a_deadline_stopped_in_time_touches_nothing() {
        let (_dir, child, mut watchdog) = watched_sleeper(Duration::from_secs(600));
        assert!(!watchdog.stop());
        assert!(!lock(&child).has_exited());
    }
}

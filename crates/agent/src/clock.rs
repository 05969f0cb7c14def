//! The guest clock, behind a trait so that tests never set the real one.
//!
//! [`SystemClock`] reads and steps CLOCK_REALTIME (stepping needs
//! CAP_SYS_TIME); [`SimulatedClock`] is the real clock plus an offset kept
//! in memory (`guestcomm-agent --simulated-clock-offset`), for tests and
//! demos on a machine whose clock must not move.

use std::sync::atomic::{AtomicI64, Ordering};

use nix::errno::Errno;
use nix::sys::time::TimeSpec;
use nix::time::{clock_gettime, clock_settime, ClockId};

/// Why the clock could not be read or set.
#[derive(Debug, thiserror::Error)]
pub enum ClockError {
    /// The agent may not set the clock.
    #[error("cannot set the guest clock: the agent lacks CAP_SYS_TIME (run it as root or grant it that capability)")]
    NotPermitted,
    /// The step would leave the clock's range.
    #[error("a step of {0} ns takes the clock out of range")]
    OutOfRange(i64),
    /// The system call failed otherwise.
    #[error("the guest clock failed")]
    Os(#[source] Errno),
}

/// A wall clock the time service reads and steps.
pub trait Clock: Send + Sync {
    /// Nanoseconds since the Unix epoch.
    fn now_ns(&self) -> Result<i64, ClockError>;
    /// Moves the clock by `delta_ns`; returns the new reading.
    fn step(&self, delta_ns: i64) -> Result<i64, ClockError>;
}

fn to_ns(ts: TimeSpec) -> i64 {
    ts.tv_sec()
        .saturating_mul(1_000_000_000)
        .saturating_add(ts.tv_nsec())
}

/// CLOCK_REALTIME of the guest.
#[derive(Debug, Default)]
pub(crate) struct SystemClock;

impl Clock for SystemClock {
    fn now_ns(&self) -> Result<i64, ClockError> {
        clock_gettime(ClockId::CLOCK_REALTIME)
            .map(to_ns)
            .map_err(ClockError::Os)
    }

    fn step(&self, delta_ns: i64) -> Result<i64, ClockError> {
        let now = self.now_ns()?;
        let target = now
            .checked_add(delta_ns)
            .filter(|t| *t >= 0)
            .ok_or(ClockError::OutOfRange(delta_ns))?;
        let ts = TimeSpec::new(target / 1_000_000_000, target % 1_000_000_000);
        match clock_settime(ClockId::CLOCK_REALTIME, ts) {
            Ok(()) => self.now_ns(),
            Err(Errno::EPERM) => Err(ClockError::NotPermitted),
            Err(e) => Err(ClockError::Os(e)),
        }
    }
}

/// The real clock plus an offset held in memory: steps move the offset.
#[derive(Debug, Default)]
pub(crate) struct SimulatedClock {
    offset_ns: AtomicI64,
}

impl SimulatedClock {
    /// A clock `offset_ns` ahead of the real one (behind if negative).
    pub(crate) fn new(offset_ns: i64) -> Self {
        Self {
            offset_ns: AtomicI64::new(offset_ns),
        }
    }
}

impl Clock for SimulatedClock {
    fn now_ns(&self) -> Result<i64, ClockError> {
        Ok(SystemClock
            .now_ns()?
            .saturating_add(self.offset_ns.load(Ordering::Relaxed)))
    }

    fn step(&self, delta_ns: i64) -> Result<i64, ClockError> {
        self.offset_ns.fetch_add(delta_ns, Ordering::Relaxed);
        self.now_ns()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn simulated_clock_steps_its_offset_only() {
        let clock = SimulatedClock::new(3_600_000_000_000);
        let real = SystemClock.now_ns().unwrap();
        let ahead = clock.now_ns().unwrap() - real;
        assert!(ahead >= 3_600_000_000_000, "{ahead}");
        let after = clock.step(-3_600_000_000_000).unwrap();
        // Only the order is checked: the real clock moved meanwhile.
        assert!(after < real + 3_600_000_000_000);
    }

    #[test]
    fn not_permitted_names_the_capability() {
        assert!(ClockError::NotPermitted
            .to_string()
            .contains("CAP_SYS_TIME"));
    }
}

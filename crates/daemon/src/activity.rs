//! The idle bound of a relay: when the bytes it carries were last seen
//! moving, and a future that resolves once none has moved for a while.
//!
//! ```text
//! up   (client -> guest): each read and each write done -> touch()
//! down (guest -> client): each read and each write done -> touch()
//! stalled(idle): sleeps until last touch + idle; fires if nothing moved since
//! ```

use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;

/// When bytes last moved through a relay, either way.
#[derive(Debug)]
pub(crate) struct Activity {
    start: Instant,
    /// Milliseconds from `start` to the last movement.
    last_ms: AtomicU64,
}

impl Default for Activity {
    fn default() -> Self {
        Self {
            start: Instant::now(),
            last_ms: AtomicU64::new(0),
        }
    }
}

impl Activity {
    /// Bytes moved just now.
    pub(crate) fn touch(&self) {
        let ms = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_ms.fetch_max(ms, Ordering::Relaxed);
    }

    /// Resolves, with an error of kind [`io::ErrorKind::TimedOut`], once no
    /// byte has moved for `idle`; never when `idle` is `None`.
    pub(crate) async fn stalled(&self, idle: Option<Duration>) -> io::Error {
        let Some(idle) = idle else {
            return std::future::pending().await;
        };
        loop {
            let last = self.start + Duration::from_millis(self.last_ms.load(Ordering::Relaxed));
            let due = last + idle;
            if Instant::now() >= due {
                return io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!(
                        "stalled: no byte moved either way for {idle:?}; guestcommd closed the copy"
                    ),
                );
            }
            tokio::time::sleep_until(due).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn fires_only_after_a_whole_idle_period_without_movement() {
        let activity = Activity::default();
        let idle = Duration::from_secs(10);
        let stalled = activity.stalled(Some(idle));
        tokio::pin!(stalled);
        tokio::time::advance(Duration::from_secs(6)).await;
        activity.touch();
        // 6 s after the touch: not yet (a timer from the start would fire).
        tokio::time::advance(Duration::from_secs(6)).await;
        assert!(futures::FutureExt::now_or_never(stalled.as_mut()).is_none());
        tokio::time::advance(Duration::from_secs(5)).await;
        let err = stalled.await;
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert!(err.to_string().contains("stalled"), "{err}");
    }

    #[tokio::test(start_paused = true)]
    async fn without_a_bound_it_never_fires() {
        let activity = Activity::default();
        let waited = tokio::time::timeout(Duration::from_secs(3600), activity.stalled(None)).await;
        assert!(waited.is_err());
    }
}

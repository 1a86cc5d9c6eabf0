//! Failing accepts back off instead of spinning, and repeated warnings are logged once in a
//! while with a count instead of once each. Used by the proxy's listeners and the daemon's
//! control socket.
//!
//! Out of descriptors (`EMFILE`), `accept` fails at once and keeps failing until something
//! closes; retried at once, it turns a busy daemon into a spinning one that writes a warning
//! per try (hundreds of MB of log in seconds).

use std::time::{Duration, Instant};

/// The first pause after a failed accept; each further failure in a row doubles it.
const FIRST_PAUSE: Duration = Duration::from_millis(5);
/// The longest pause: long enough to stop the spinning, short enough that a freed
/// descriptor is used within a second.
const MAX_PAUSE: Duration = Duration::from_secs(1);
/// At most one warning per this long for one kind of failure.
pub(crate) const LOG_EVERY: Duration = Duration::from_secs(10);

/// Decides when a warning that may repeat many times a second deserves a line: the first
/// time, then at most once per `every`, saying how many were not logged in between.
#[derive(Debug)]
pub(crate) struct Throttle {
    every: Duration,
    last: Option<Instant>,
    unlogged: u64,
}

impl Throttle {
    pub(crate) fn new(every: Duration) -> Self {
        Self {
            every,
            last: None,
            unlogged: 0,
        }
    }

    /// Records one occurrence at `now`. `Some(n)`: log it now, adding that `n` more happened
    /// since the last line; `None`: stay quiet.
    pub(crate) fn hit(&mut self, now: Instant) -> Option<u64> {
        let due = self
            .last
            .is_none_or(|last| now.saturating_duration_since(last) >= self.every);
        if due {
            self.last = Some(now);
            Some(std::mem::take(&mut self.unlogged))
        } else {
            self.unlogged += 1;
            None
        }
    }
}

/// What to do after a failed accept.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Pause {
    /// How long to wait before accepting again.
    pub(crate) wait: Duration,
    /// `Some(n)`: log this failure, with `n` failures since the last line.
    pub(crate) log: Option<u64>,
}

/// The back-off of one accept loop: exponential while accepts fail in a row, reset by one that
/// succeeds; its warnings throttled across back-offs.
#[derive(Debug)]
pub(crate) struct AcceptBackoff {
    next: Duration,
    throttle: Throttle,
}

impl Default for AcceptBackoff {
    fn default() -> Self {
        Self {
            next: FIRST_PAUSE,
            throttle: Throttle::new(LOG_EVERY),
        }
    }
}

impl AcceptBackoff {
    pub(crate) fn failed(&mut self, now: Instant) -> Pause {
        let wait = self.next;
        self.next = (self.next * 2).min(MAX_PAUSE);
        Pause {
            wait,
            log: self.throttle.hit(now),
        }
    }

    pub(crate) fn succeeded(&mut self) {
        self.next = FIRST_PAUSE;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pauses_double_up_to_a_second_and_reset_after_a_success() {
        let mut backoff = AcceptBackoff::default();
        let now = Instant::now();
        let waits: Vec<u128> = (0..10)
            .map(|_| backoff.failed(now).wait.as_millis())
            .collect();
        assert_eq!(waits, [5, 10, 20, 40, 80, 160, 320, 640, 1000, 1000]);
        backoff.succeeded();
        assert_eq!(backoff.failed(now).wait, FIRST_PAUSE);
    }

    #[test]
    fn a_storm_of_failures_is_logged_once_per_interval_with_a_count() {
        let mut backoff = AcceptBackoff::default();
        let start = Instant::now();
        let mut lines = Vec::new();
        // 25 s of failures, 100 a second, with a success between each (the worst case:
        // every back-off starts again).
        for i in 0..2500u64 {
            let now = start + Duration::from_millis(i * 10);
            if let Some(unlogged) = backoff.failed(now).log {
                lines.push(unlogged);
            }
            backoff.succeeded();
        }
        assert_eq!(lines, [0, 999, 999]);
    }

    #[test]
    fn a_throttle_logs_the_first_and_then_once_per_interval() {
        let mut throttle = Throttle::new(Duration::from_secs(1));
        let t = Instant::now();
        assert_eq!(throttle.hit(t), Some(0));
        assert_eq!(throttle.hit(t + Duration::from_millis(500)), None);
        assert_eq!(throttle.hit(t + Duration::from_millis(900)), None);
        assert_eq!(throttle.hit(t + Duration::from_millis(1000)), Some(2));
        assert_eq!(throttle.hit(t + Duration::from_secs(5)), Some(0));
    }
}

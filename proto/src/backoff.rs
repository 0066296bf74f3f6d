//! The retry delay every peer that dials the master uses between attempts: 100 ms doubling to
//! 5 s. One policy, so an agent and a framework come back after a master restart on the same
//! schedule, and a change to it is made once.

use std::time::Duration;

/// The first delay, and the one after a [`Backoff::reset`].
pub const MIN_BACKOFF: Duration = Duration::from_millis(100);
/// The delay never grows past this.
pub const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Reconnect delays: [`MIN_BACKOFF`] doubling to [`MAX_BACKOFF`].
#[derive(Debug, Clone)]
pub struct Backoff {
    next: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self::new()
    }
}

impl Backoff {
    pub fn new() -> Self {
        Self { next: MIN_BACKOFF }
    }

    /// The delay to wait now; the next one is twice as long, up to the maximum.
    pub fn next_delay(&mut self) -> Duration {
        let delay = self.next;
        self.next = (self.next * 2).min(MAX_BACKOFF);
        delay
    }

    /// Start again from the shortest delay (the last attempt got somewhere).
    pub fn reset(&mut self) {
        self.next = MIN_BACKOFF;
    }

    /// Wait the longest delay from now on (retrying soon will not help).
    pub fn slowest(&mut self) {
        self.next = MAX_BACKOFF;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_from_100ms_to_5s() {
        let mut b = Backoff::new();
        let delays: Vec<u64> = (0..9).map(|_| b.next_delay().as_millis() as u64).collect();
        assert_eq!(
            delays,
            [100, 200, 400, 800, 1600, 3200, 5000, 5000, 5000],
            "delays"
        );
    }

    #[test]
    fn reset_and_slowest_move_the_next_delay() {
        let mut b = Backoff::new();
        b.slowest();
        assert_eq!(b.next_delay(), MAX_BACKOFF);
        assert_eq!(b.next_delay(), MAX_BACKOFF);
        b.reset();
        assert_eq!(b.next_delay(), MIN_BACKOFF);
        assert_eq!(b.next_delay(), MIN_BACKOFF * 2);
    }
}

//! The retry delay every peer that dials the master uses between attempts: a ceiling of
//! 100 ms doubling to 5 s, and a delay drawn at random below it ("full jitter"). One policy, so
//! an agent and a framework come back after a master restart on the same schedule, and a
//! change to it is made once.
//!
//! Why jitter: a restarted master resets every old connection at once (its stateless-reset key
//! is derived from its node key), so without it thousands of agents would dial in the same
//! instant, be refused by the master's handshake budget in the same instant, and come back in
//! the same instant again, every round. Drawn delays spread each round over its whole window,
//! so the master sees a steady stream it can admit (`bench/scale.sh` measures it).

use crate::rng::XorShift64Star;
use std::time::Duration;

/// The first ceiling, and the one after a [`Backoff::reset`].
pub const MIN_BACKOFF: Duration = Duration::from_millis(100);
/// The ceiling never grows past this.
pub const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Reconnect delays: uniform in `[0, ceiling]`, the ceiling [`MIN_BACKOFF`] doubling to
/// [`MAX_BACKOFF`].
#[derive(Debug, Clone)]
pub struct Backoff {
    ceiling: Duration,
    rng: XorShift64Star,
}

impl Default for Backoff {
    fn default() -> Self {
        Self::new()
    }
}

impl Backoff {
    /// Seeded from the system's randomness, so peers started together draw apart.
    pub fn new() -> Self {
        let mut seed = [0u8; 8];
        // The system RNG does not fail on Linux; a fixed seed would only mean less spread.
        let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut seed);
        Self::with_seed(u64::from_le_bytes(seed))
    }

    /// A backoff whose delays replay from `seed` (tests, simulations).
    pub fn with_seed(seed: u64) -> Self {
        Self {
            ceiling: MIN_BACKOFF,
            rng: XorShift64Star::new(seed | 1),
        }
    }

    /// The delay to wait now, drawn below the current ceiling; the next ceiling is twice as
    /// high, up to the maximum.
    pub fn next_delay(&mut self) -> Duration {
        let ceiling = self.ceiling;
        self.ceiling = (self.ceiling * 2).min(MAX_BACKOFF);
        let micros = self.rng.below(ceiling.as_micros() as u64 + 1);
        Duration::from_micros(micros)
    }

    /// The ceiling the next delay is drawn under.
    pub fn ceiling(&self) -> Duration {
        self.ceiling
    }

    /// Start again from the lowest ceiling (the last attempt got somewhere).
    pub fn reset(&mut self) {
        self.ceiling = MIN_BACKOFF;
    }

    /// The master answered busy with an appointment `retry_after`: the delay to honour it,
    /// with up to a quarter more drawn at random (peers told the same instant draw apart). The
    /// ceiling starts again from the lowest: the master is there and answering.
    pub fn busy(&mut self, retry_after: Duration) -> Duration {
        self.reset();
        let spread = (retry_after / 4).as_micros() as u64;
        retry_after + Duration::from_micros(self.rng.below(spread + 1))
    }

    /// Draw under the highest ceiling from now on (retrying soon will not help).
    pub fn slowest(&mut self) {
        self.ceiling = MAX_BACKOFF;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_busy_answer_is_honoured_with_some_jitter() {
        let mut b = Backoff::with_seed(7);
        b.slowest();
        let hint = Duration::from_millis(800);
        let delays: Vec<Duration> = (0..200).map(|_| b.busy(hint)).collect();
        assert!(delays.iter().all(|d| *d >= hint && *d <= hint + hint / 4));
        assert!(delays.iter().any(|d| *d != delays[0]), "drawn apart");
        assert_eq!(b.ceiling(), MIN_BACKOFF);
    }

    #[test]
    fn the_ceiling_doubles_from_100ms_to_5s_and_delays_stay_below_it() {
        let mut b = Backoff::with_seed(7);
        let mut ceilings = Vec::new();
        for _ in 0..9 {
            let ceiling = b.ceiling();
            ceilings.push(ceiling.as_millis() as u64);
            assert!(b.next_delay() <= ceiling);
        }
        assert_eq!(
            ceilings,
            [100, 200, 400, 800, 1600, 3200, 5000, 5000, 5000],
            "ceilings"
        );
    }

    #[test]
    fn reset_and_slowest_move_the_ceiling() {
        let mut b = Backoff::with_seed(1);
        b.slowest();
        assert!(b.next_delay() <= MAX_BACKOFF);
        assert_eq!(b.ceiling(), MAX_BACKOFF);
        b.reset();
        assert_eq!(b.ceiling(), MIN_BACKOFF);
        assert!(b.next_delay() <= MIN_BACKOFF);
        assert_eq!(b.ceiling(), MIN_BACKOFF * 2);
    }

    /// The point of the jitter: peers that lose the master together do not come back together.
    /// 1,000 backoffs (as 1,000 agents would seed them) spread their first retry over the window.
    #[test]
    fn peers_reset_together_spread_their_retries_over_the_window() {
        let delays: Vec<Duration> = (0..1000)
            .map(|_| {
                let mut b = Backoff::new();
                b.slowest();
                b.next_delay()
            })
            .collect();
        // Ten equal slices of [0, 5 s]: each holds some of the retries, none most of them.
        let mut slices = [0usize; 10];
        for d in &delays {
            let i = (d.as_secs_f64() / MAX_BACKOFF.as_secs_f64() * 10.0) as usize;
            slices[i.min(9)] += 1;
        }
        assert!(
            slices.iter().all(|&n| (30..=200).contains(&n)),
            "retries per half second: {slices:?}"
        );
    }
}

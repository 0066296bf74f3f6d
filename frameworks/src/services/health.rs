//! Health checks' bookkeeping, pure: when each check of an instance is due, what a result
//! means (a pass makes it healthy; `max_failures` failures in a row past the grace period
//! condemn it), and the reason a condemned instance is killed with. The probes themselves
//! (network, processes) are `probe.rs`'s; `book.rs` holds one [`Checks`] per instance.

use super::spec::HealthCheck;
use std::time::{Duration, Instant};

/// One check's state on one instance.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CheckState {
    /// Failures in a row since the last pass (only those past the grace period count).
    pub failures: u32,
    /// Whether it passed since the instance started. A failure does not take that back: an
    /// instance stays healthy (an endpoint, counted by rollouts) until its failures condemn
    /// it, so one slow answer on a busy Pi neither hides it nor gets it replaced early.
    pub passed: bool,
    /// The last failure, as the probe said it.
    pub last_failure: Option<String>,
    /// A probe is out: no other is started until its result is in.
    pub in_flight: bool,
    /// The next probe is not started before this.
    pub next_at: Option<Instant>,
}

/// What a result meant.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    Nothing,
    /// The instance passed all its checks for the first time (or again after failing).
    Healthy,
    /// A failure that does not yet condemn the instance.
    Failing(String),
    /// Kill the instance; the reason names the check and what it saw.
    Kill(String),
}

/// The checks of one instance.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Checks {
    pub states: Vec<CheckState>,
}

impl Checks {
    pub fn new(count: usize) -> Self {
        Self {
            states: vec![CheckState::default(); count],
        }
    }

    /// Healthy: every check has passed, and none has yet failed `max_failures` times in a
    /// row (such an instance is killed). No checks: always.
    pub fn healthy(&self) -> bool {
        self.states.iter().all(|s| s.passed)
    }

    /// The last failure of a check that is not passing, if any.
    pub fn last_failure(&self) -> Option<&str> {
        self.states.iter().find_map(|s| s.last_failure.as_deref())
    }

    /// Which checks are due at `now` (for an instance RUNNING since `since`); each is marked
    /// in flight until its [`Checks::result`].
    pub fn due(&mut self, checks: &[HealthCheck], now: Instant) -> Vec<usize> {
        if self.states.len() != checks.len() {
            *self = Checks::new(checks.len());
        }
        let mut due = Vec::new();
        for (n, (state, check)) in self.states.iter_mut().zip(checks).enumerate() {
            if state.in_flight || state.next_at.is_some_and(|t| t > now) {
                continue;
            }
            state.in_flight = true;
            state.next_at = Some(now + secs(check.interval_secs));
            due.push(n);
        }
        due
    }

    /// Takes in check `n`'s result for an instance RUNNING since `since`.
    pub fn result(
        &mut self,
        checks: &[HealthCheck],
        n: usize,
        outcome: Result<(), String>,
        since: Instant,
        now: Instant,
    ) -> Verdict {
        let (Some(state), Some(check)) = (self.states.get_mut(n), checks.get(n)) else {
            return Verdict::Nothing;
        };
        state.in_flight = false;
        match outcome {
            Ok(()) => {
                let was = state.passed;
                state.passed = true;
                state.failures = 0;
                state.last_failure = None;
                if !was && self.healthy() {
                    Verdict::Healthy
                } else {
                    Verdict::Nothing
                }
            }
            Err(why) => {
                let what = format!("health check {} failed: {why}", check.describe());
                state.last_failure = Some(what.clone());
                if now.duration_since(since) < secs(check.grace_secs) {
                    return Verdict::Failing(format!("{what} (in the grace period)"));
                }
                state.failures = state.failures.saturating_add(1);
                if state.failures >= check.max_failures {
                    Verdict::Kill(format!(
                        "{what} ({} times in a row, max_failures = {})",
                        state.failures, check.max_failures
                    ))
                } else {
                    Verdict::Failing(format!(
                        "{what} ({} of {} allowed)",
                        state.failures, check.max_failures
                    ))
                }
            }
        }
    }
}

fn secs(v: f64) -> Duration {
    Duration::try_from_secs_f64(v.max(0.0)).unwrap_or(Duration::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::services::spec::Protocol;

    fn http(grace: f64, max_failures: u32) -> HealthCheck {
        HealthCheck {
            protocol: Protocol::Http,
            path: Some("/health".into()),
            status: Some(200),
            port_index: 0,
            command: None,
            grace_secs: grace,
            interval_secs: 1.0,
            timeout_secs: 0.5,
            max_failures,
        }
    }

    #[test]
    fn checks_are_due_once_per_interval_and_never_twice_in_flight() {
        let t0 = Instant::now();
        let checks = [http(0.0, 3)];
        let mut c = Checks::new(1);
        assert_eq!(c.due(&checks, t0), vec![0]);
        assert!(
            c.due(&checks, t0 + Duration::from_secs(5)).is_empty(),
            "in flight"
        );
        c.result(&checks, 0, Ok(()), t0, t0);
        assert!(c.due(&checks, t0 + Duration::from_millis(500)).is_empty());
        assert_eq!(c.due(&checks, t0 + Duration::from_secs(1)), vec![0]);
    }

    #[test]
    fn failures_in_a_row_past_the_grace_period_kill_and_say_why() {
        let t0 = Instant::now();
        let checks = [http(10.0, 2)];
        let mut c = Checks::new(1);
        let early = c.result(
            &checks,
            0,
            Err("status 500".into()),
            t0,
            t0 + Duration::from_secs(1),
        );
        assert!(
            matches!(early, Verdict::Failing(ref m) if m.contains("grace")),
            "{early:?}"
        );
        let t = t0 + Duration::from_secs(11);
        assert_eq!(c.result(&checks, 0, Ok(()), t0, t), Verdict::Healthy);
        assert!(c.healthy());
        let first = c.result(&checks, 0, Err("status 500".into()), t0, t);
        assert!(matches!(first, Verdict::Failing(_)), "{first:?}");
        assert!(c.healthy(), "one failure does not condemn it");
        assert!(c.last_failure().is_some_and(|f| f.contains("status 500")));
        // A pass in between resets the count.
        assert_eq!(c.result(&checks, 0, Ok(()), t0, t), Verdict::Nothing);
        assert_eq!(c.last_failure(), None);
        c.result(&checks, 0, Err("status 500".into()), t0, t);
        let kill = c.result(&checks, 0, Err("status 503".into()), t0, t);
        match kill {
            Verdict::Kill(why) => {
                assert!(why.contains("http GET /health on PORT0"), "{why}");
                assert!(why.contains("status 503"), "{why}");
                assert!(why.contains("2 times in a row"), "{why}");
            }
            other => panic!("expected a kill: {other:?}"),
        }
    }

    #[test]
    fn no_checks_is_healthy_and_all_must_pass() {
        assert!(Checks::new(0).healthy());
        let t0 = Instant::now();
        let checks = [http(0.0, 3), http(0.0, 3)];
        let mut c = Checks::new(2);
        assert!(!c.healthy());
        assert_eq!(c.result(&checks, 0, Ok(()), t0, t0), Verdict::Nothing);
        assert_eq!(c.result(&checks, 1, Ok(()), t0, t0), Verdict::Healthy);
    }
}

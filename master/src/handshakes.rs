//! What connection attempts may cost the master before they are anyone: the pre-handshake
//! budget.
//!
//! A QUIC handshake costs a task, TLS state and buffers, and an attacker on the LAN can start
//! them faster than they time out. So handshakes get their own small budget, separate from
//! the connection permits admitted peers hold (taken only once the handshake is done): a
//! bounded number in flight overall, fewer from any one IP address (so one noisy host cannot
//! crowd out the agents), and, once a handful are in flight, a QUIC retry first for an
//! address that has not proven it receives our packets (so a spoofed flood costs one
//! stateless packet each). Stalled handshakes hold a slot for at most the handshake deadline.
//!
//! Past the handshake, agents are admitted a bounded number at a time ([`Admissions`]: from
//! the hello until their registration is with the state task). The excess is answered at once
//! with `HelloReply::Busy` and an appointment — "retry in N ms", the appointments spaced at the
//! pace admissions complete — rather than left to time out: a cold start or a restart of
//! thousands of agents then becomes a steady stream instead of a retry storm in which work
//! already done is thrown away.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tracing::info;

/// Handshakes in flight at once, from everyone.
pub const MAX_HANDSHAKES: usize = 256;
/// Handshakes in flight at once from one IP address: a Pi runs one agent and a few clients.
pub const MAX_HANDSHAKES_PER_ADDRESS: usize = 16;
/// With this many handshakes in flight, unvalidated addresses are sent a retry first.
pub const RETRY_ABOVE: usize = 32;

/// Agents admitted at once past their handshake (from the hello until their registration is
/// with the state task); more are answered busy with an appointment.
pub const MAX_ADMITTING: usize = 128;
/// Overrides [`MAX_ADMITTING`] (tests and benchmarks that want to see the busy answer).
pub const MAX_ADMITTING_ENV: &str = "BRAMBLE_MASTER_MAX_ADMITTING";
/// The shortest and longest "retry in" handed out.
pub const MIN_RETRY_HINT: Duration = Duration::from_millis(50);
pub const MAX_RETRY_HINT: Duration = Duration::from_secs(30);
/// What an admission is assumed to take before one has been measured.
const FIRST_HOLD: Duration = Duration::from_millis(50);

/// What the accept loop does with one connection attempt.
#[derive(Debug)]
pub enum Verdict {
    /// Go on with the handshake, holding this slot until it is over.
    Handshake(Slot),
    /// Under pressure and the address is not validated: answer with a QUIC retry.
    Retry,
    /// Over budget (overall or for this address): refuse.
    Refuse(&'static str),
}

/// Counts handshakes in flight, overall and per address.
#[derive(Clone, Default)]
pub struct Budget {
    inner: Arc<Mutex<Counts>>,
}

#[derive(Default)]
struct Counts {
    total: usize,
    per_address: HashMap<IpAddr, usize>,
}

impl Budget {
    /// Decides about an attempt from `ip`; `validated`: the peer has proven it receives
    /// packets sent to its address (it came back with our retry token).
    pub fn admit(&self, ip: IpAddr, validated: bool) -> Verdict {
        let mut counts = self.lock();
        if !validated && counts.total >= RETRY_ABOVE {
            return Verdict::Retry;
        }
        if counts.total >= MAX_HANDSHAKES {
            return Verdict::Refuse("too many handshakes in flight");
        }
        let mine = counts.per_address.entry(ip).or_insert(0);
        if *mine >= MAX_HANDSHAKES_PER_ADDRESS {
            return Verdict::Refuse("too many handshakes in flight from this address");
        }
        *mine += 1;
        counts.total += 1;
        Verdict::Handshake(Slot {
            budget: self.clone(),
            ip,
        })
    }

    /// Handshakes in flight now.
    pub fn in_flight(&self) -> usize {
        self.lock().total
    }

    fn release(&self, ip: IpAddr) {
        let mut counts = self.lock();
        counts.total = counts.total.saturating_sub(1);
        if let Some(n) = counts.per_address.get_mut(&ip) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                counts.per_address.remove(&ip);
            }
        }
    }

    fn lock(&self) -> MutexGuard<'_, Counts> {
        // Plain counters; a panic elsewhere cannot leave them half-updated.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// One handshake's place in the budget, given back when dropped.
#[derive(Debug)]
pub struct Slot {
    budget: Budget,
    ip: IpAddr,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.budget.release(self.ip);
    }
}

impl std::fmt::Debug for Budget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Budget")
            .field("in_flight", &self.in_flight())
            .finish()
    }
}

/// Agents being admitted past their handshake, and the appointments handed to the excess.
#[derive(Clone)]
pub struct Admissions {
    limit: usize,
    inner: Arc<Mutex<AdmitState>>,
}

struct AdmitState {
    in_progress: usize,
    /// How long an admission takes, a moving average, in seconds.
    mean_hold: f64,
    /// The latest appointment handed out.
    next_slot: Option<Instant>,
    /// Busy answers not yet logged, and when the last line was.
    unsaid: u64,
    last_said: Option<Instant>,
}

/// The answer to one agent's hello.
#[derive(Debug)]
pub enum Admission {
    /// Go on, holding this ticket until the registration is with the state task.
    Admitted(Ticket),
    /// Answer busy: come back after this.
    Busy(Duration),
}

impl Admissions {
    /// `limit` admissions at once (at least one).
    pub fn new(limit: usize) -> Self {
        Self {
            limit: limit.max(1),
            inner: Arc::new(Mutex::new(AdmitState {
                in_progress: 0,
                mean_hold: FIRST_HOLD.as_secs_f64(),
                next_slot: None,
                unsaid: 0,
                last_said: None,
            })),
        }
    }

    /// [`MAX_ADMITTING`], or what [`MAX_ADMITTING_ENV`] says.
    pub fn from_env() -> Self {
        let limit = std::env::var(MAX_ADMITTING_ENV)
            .ok()
            .and_then(|v| v.trim().parse::<usize>().ok())
            .unwrap_or(MAX_ADMITTING);
        Self::new(limit)
    }

    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Admits one more agent now, or hands it an appointment. Appointments are spaced so that
    /// the agents told to come back return at half the pace admissions complete (the other
    /// half is for agents dialling for the first time), the first one no sooner than one
    /// admission from now.
    pub fn admit(&self, now: Instant) -> Admission {
        let mut st = self.lock();
        if st.in_progress < self.limit {
            st.in_progress += 1;
            return Admission::Admitted(Ticket {
                admissions: self.clone(),
                since: now,
            });
        }
        let hold = Duration::from_secs_f64(st.mean_hold);
        let gap = hold.mul_f64(2.0 / self.limit as f64);
        let earliest = now + hold;
        let slot = match st.next_slot {
            Some(t) if t > earliest => t,
            _ => earliest,
        };
        st.next_slot = Some(slot + gap);
        let after = slot
            .duration_since(now)
            .clamp(MIN_RETRY_HINT, MAX_RETRY_HINT);
        st.unsaid += 1;
        if st
            .last_said
            .is_none_or(|t| now.duration_since(t) >= Duration::from_secs(1))
        {
            info!(
                admitting = st.in_progress,
                busy = st.unsaid,
                retry_in_ms = after.as_millis() as u64,
                "busy admitting agents: telling the excess when to come back"
            );
            st.unsaid = 0;
            st.last_said = Some(now);
        }
        Admission::Busy(after)
    }

    /// Admissions in progress now.
    pub fn in_progress(&self) -> usize {
        self.lock().in_progress
    }

    fn done(&self, held: Duration) {
        let mut st = self.lock();
        st.in_progress = st.in_progress.saturating_sub(1);
        // Capped: one peer that stalls its registration does not push every appointment out.
        let held = held.min(Duration::from_secs(5)).as_secs_f64();
        st.mean_hold = 0.9 * st.mean_hold + 0.1 * held;
    }

    fn lock(&self) -> MutexGuard<'_, AdmitState> {
        // Plain counters; a panic elsewhere cannot leave them half-updated.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl std::fmt::Debug for Admissions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Admissions")
            .field("limit", &self.limit)
            .field("in_progress", &self.in_progress())
            .finish()
    }
}

/// One agent's admission in progress, given back when dropped.
#[derive(Debug)]
pub struct Ticket {
    admissions: Admissions,
    since: Instant,
}

impl Drop for Ticket {
    fn drop(&mut self) {
        self.admissions.done(self.since.elapsed());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ticket(a: Admission) -> Ticket {
        match a {
            Admission::Admitted(t) => t,
            Admission::Busy(after) => panic!("expected a ticket, got busy for {after:?}"),
        }
    }

    fn busy(a: Admission) -> Duration {
        match a {
            Admission::Busy(after) => after,
            Admission::Admitted(_) => panic!("expected busy, got a ticket"),
        }
    }

    #[test]
    fn admissions_are_bounded_and_the_excess_gets_spaced_appointments() {
        let admissions = Admissions::new(2);
        let now = Instant::now();
        let held = [ticket(admissions.admit(now)), ticket(admissions.admit(now))];
        let hints: Vec<Duration> = (0..5).map(|_| busy(admissions.admit(now))).collect();
        // The first comes back no sooner than one admission; each later one later still.
        assert!(hints[0] >= FIRST_HOLD.min(MIN_RETRY_HINT), "{hints:?}");
        assert!(hints.windows(2).all(|w| w[1] > w[0]), "{hints:?}");
        assert_eq!(admissions.in_progress(), 2);
        drop(held);
        assert_eq!(admissions.in_progress(), 0);
        let _again = ticket(admissions.admit(Instant::now()));
    }

    #[test]
    fn appointments_never_pass_the_longest_hint() {
        let admissions = Admissions::new(1);
        let now = Instant::now();
        let _held = ticket(admissions.admit(now));
        let mut last = Duration::ZERO;
        for _ in 0..100_000 {
            last = busy(admissions.admit(now));
        }
        assert_eq!(last, MAX_RETRY_HINT);
    }

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([10, 0, 0, last])
    }

    fn slot(v: Verdict) -> Slot {
        match v {
            Verdict::Handshake(s) => s,
            other => panic!("expected a handshake slot, got {other:?}"),
        }
    }

    #[test]
    fn one_address_cannot_take_the_whole_budget() {
        let budget = Budget::default();
        let held: Vec<Slot> = (0..MAX_HANDSHAKES_PER_ADDRESS)
            .map(|_| slot(budget.admit(ip(1), true)))
            .collect();
        assert!(matches!(budget.admit(ip(1), true), Verdict::Refuse(_)));
        let other = slot(budget.admit(ip(2), true));
        drop(held);
        drop(other);
        assert_eq!(budget.in_flight(), 0);
        let _again = slot(budget.admit(ip(1), true));
    }

    #[test]
    fn under_pressure_unvalidated_addresses_get_a_retry() {
        let budget = Budget::default();
        let held: Vec<Slot> = (0..RETRY_ABOVE)
            .map(|i| slot(budget.admit(ip(i as u8), false)))
            .collect();
        assert!(matches!(budget.admit(ip(200), false), Verdict::Retry));
        let _validated = slot(budget.admit(ip(200), true));
        drop(held);
        let _calm = slot(budget.admit(ip(201), false));
    }

    #[test]
    fn the_total_is_bounded() {
        let budget = Budget::default();
        let held: Vec<Slot> = (0..MAX_HANDSHAKES)
            .map(|i| {
                slot(budget.admit(
                    IpAddr::from([10, 1, (i / 200) as u8, (i % 200) as u8]),
                    true,
                ))
            })
            .collect();
        assert!(matches!(budget.admit(ip(250), true), Verdict::Refuse(_)));
        drop(held);
        assert_eq!(budget.in_flight(), 0);
    }
}

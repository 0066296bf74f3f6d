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

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard};

/// Handshakes in flight at once, from everyone.
pub const MAX_HANDSHAKES: usize = 256;
/// Handshakes in flight at once from one IP address: a Pi runs one agent and a few clients.
pub const MAX_HANDSHAKES_PER_ADDRESS: usize = 16;
/// With this many handshakes in flight, unvalidated addresses are sent a retry first.
pub const RETRY_ABOVE: usize = 32;

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

#[cfg(test)]
mod tests {
    use super::*;

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

//! How many wrong tokens a client may try: [`MAX_FAILURES`] per sliding [`WINDOW`], then
//! `429 Too Many Requests` with `Retry-After` until the oldest failure leaves the window.
//!
//! The check and the failure's record happen under one lock with no `.await` between them
//! (see `Auth::check_token`), so guesses sent in parallel are counted one after another like
//! any others: the sixth of six simultaneous wrong guesses is refused.
//!
//! A client is its IP address; an IPv6 client is its /64, since one host usually holds a whole
//! /64 and could otherwise rotate addresses for fresh allowances. Behind a reverse proxy every
//! client shares the proxy's address (`X-Forwarded-For` is not trusted: any client can write
//! it), so the limit is then global, which errs on the safe side.
//!
//! The table is bounded: when [`MAX_CLIENTS`] clients have failures within the window, a new
//! client is refused too (fails closed) until entries age out. Only clients that fail are kept.
//! Pure: the caller passes `now`.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// Wrong tokens a client may send per [`WINDOW`].
pub const MAX_FAILURES: usize = 5;
/// The sliding window failures are counted over.
pub const WINDOW: Duration = Duration::from_secs(60);
/// Clients with recent failures remembered at once.
pub const MAX_CLIENTS: usize = 1024;

/// Who is guessing: an IPv4 address, or an IPv6 /64.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Client(IpAddr);

impl From<IpAddr> for Client {
    fn from(ip: IpAddr) -> Self {
        match ip {
            IpAddr::V4(v4) => Client(IpAddr::V4(v4)),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => Client(IpAddr::V4(v4)),
                None => {
                    let bits = u128::from(v6) & !((1u128 << 64) - 1);
                    Client(IpAddr::V6(bits.into()))
                }
            },
        }
    }
}

impl std::fmt::Display for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            IpAddr::V4(v4) => write!(f, "{v4}"),
            IpAddr::V6(v6) => write!(f, "{v6}/64"),
        }
    }
}

/// Recent failures per client.
pub struct LoginLimiter {
    failures: HashMap<Client, VecDeque<Instant>>,
    max_clients: usize,
}

impl Default for LoginLimiter {
    fn default() -> Self {
        Self::new(MAX_CLIENTS)
    }
}

impl LoginLimiter {
    pub fn new(max_clients: usize) -> Self {
        Self {
            failures: HashMap::new(),
            max_clients: max_clients.max(1),
        }
    }

    /// `Ok` if `client` may try a token now, else how long until it may.
    pub fn check(&mut self, client: Client, now: Instant) -> Result<(), Duration> {
        if let Some(recent) = self.failures.get_mut(&client) {
            forget_old(recent, now);
            return match recent.front() {
                Some(oldest) if recent.len() >= MAX_FAILURES => {
                    Err((*oldest + WINDOW).saturating_duration_since(now))
                }
                _ => Ok(()),
            };
        }
        if self.failures.len() >= self.max_clients {
            self.failures.retain(|_, recent| {
                forget_old(recent, now);
                !recent.is_empty()
            });
            if self.failures.len() >= self.max_clients {
                return Err(WINDOW);
            }
        }
        Ok(())
    }

    /// Records a wrong token from `client` (after [`check`](Self::check) let it try).
    pub fn failed(&mut self, client: Client, now: Instant) {
        if !self.failures.contains_key(&client) && self.failures.len() >= self.max_clients {
            return; // `check` refuses such clients; nothing to record.
        }
        let recent = self.failures.entry(client).or_default();
        forget_old(recent, now);
        recent.push_back(now);
        while recent.len() > MAX_FAILURES {
            recent.pop_front();
        }
    }

    /// A right token: the client's slate is wiped.
    pub fn succeeded(&mut self, client: Client) {
        self.failures.remove(&client);
    }
}

fn forget_old(recent: &mut VecDeque<Instant>, now: Instant) {
    while recent
        .front()
        .is_some_and(|t| now.saturating_duration_since(*t) >= WINDOW)
    {
        recent.pop_front();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    fn v4(last: u8) -> Client {
        IpAddr::V4(Ipv4Addr::new(192, 168, 1, last)).into()
    }

    #[test]
    fn five_failures_a_minute_then_retry_after_the_oldest_ages_out() {
        let mut l = LoginLimiter::default();
        let t0 = Instant::now();
        for i in 0..MAX_FAILURES as u64 {
            let t = t0 + Duration::from_secs(i);
            assert_eq!(l.check(v4(1), t), Ok(()), "attempt {i}");
            l.failed(v4(1), t);
        }
        let t = t0 + Duration::from_secs(10);
        assert_eq!(l.check(v4(1), t), Err(Duration::from_secs(50)));
        assert_eq!(l.check(v4(2), t), Ok(()), "another client is not affected");
        // The first failure leaves the window at 60 s: one more try, then refused again.
        let t = t0 + Duration::from_secs(60);
        assert_eq!(l.check(v4(1), t), Ok(()));
        l.failed(v4(1), t);
        assert_eq!(l.check(v4(1), t), Err(Duration::from_secs(1)));
        l.succeeded(v4(1));
        assert_eq!(l.check(v4(1), t), Ok(()));
    }

    #[test]
    fn an_ipv6_host_is_its_slash_64() {
        let a: Client = IpAddr::V6("2001:db8:1:2::1".parse::<Ipv6Addr>().expect("address")).into();
        let b: Client =
            IpAddr::V6("2001:db8:1:2:ffff::9".parse::<Ipv6Addr>().expect("address")).into();
        let c: Client = IpAddr::V6("2001:db8:1:3::1".parse::<Ipv6Addr>().expect("address")).into();
        assert_eq!(a, b);
        assert_ne!(a, c);
        let mapped: Client = IpAddr::V6(Ipv4Addr::new(10, 0, 0, 7).to_ipv6_mapped()).into();
        assert_eq!(mapped, IpAddr::V4(Ipv4Addr::new(10, 0, 0, 7)).into());
    }

    #[test]
    fn a_full_table_refuses_newcomers_until_entries_age_out() {
        let mut l = LoginLimiter::new(2);
        let t0 = Instant::now();
        l.failed(v4(1), t0);
        l.failed(v4(2), t0);
        assert_eq!(l.check(v4(3), t0), Err(WINDOW));
        assert_eq!(
            l.check(v4(1), t0),
            Ok(()),
            "known clients keep their allowance"
        );
        assert_eq!(l.check(v4(3), t0 + WINDOW), Ok(()));
    }
}

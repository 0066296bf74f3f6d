//! Which master to dial next when there may be several (issue 18's replicated masters): the
//! one policy the agent, the scheduler driver and the operator client share, pure so every
//! rule is unit-tested without a network.
//!
//! - A standby answers a hello with `NotLeader { leader }`. Naming a leader, it is followed
//!   at once ([`MasterList::redirected`]: no backoff), but at most [`MAX_REDIRECTS`] times in
//!   a row, so two confused standbys pointing at each other cannot make a dialer spin: after
//!   that the next configured master is tried after the normal backoff.
//! - Naming none (no leader elected yet), or not answering at all, the next configured
//!   master is tried: after a short jittered pause ([`STANDBY_PAUSE`]) while this round
//!   through the list is not over, then under the caller's backoff.
//! - While masters answer that no leader is elected yet, an election is under way among
//!   them: a master that did not answer (a dead leader most often) is passed over, up to
//!   [`SILENT_SKIPS`] times, and the answering ones asked again after the short pause
//!   ([`MasterList::no_leader_yet`]). Dialling it would cost a whole connect timeout, seconds
//!   after the new leader was elected.
//! - When the link to the leader drops, the other masters are tried first and the lost leader
//!   last ([`MasterList::lost`]): a leader that went away is most often dead, and dialling a
//!   dead address costs a whole connect timeout, while a standby answers at once — naming the
//!   new leader, or the old one if it is back and leads again. With one master, it is that one.
//!
//! With one configured master and no redirect, every step is the caller's backoff: exactly
//! what a single master's dialers did before.

use crate::rng::XorShift64Star;
use std::time::Duration;

/// Redirects followed in a row before falling back to the backoff.
pub const MAX_REDIRECTS: u32 = 3;
/// The ceiling of the pause before the next master while a round through the list lasts.
pub const STANDBY_PAUSE: Duration = Duration::from_millis(300);
/// The floor of that pause.
const STANDBY_PAUSE_MIN: Duration = Duration::from_millis(50);
/// How many "no leader yet" answers silent masters are passed over for: about a second of
/// short pauses on average (0.3–1.8 s), as long as an election usually takes; a longer one
/// costs a dial of the silent master, then the rotation goes on.
pub const SILENT_SKIPS: u32 = 6;

/// How long to wait before dialling [`MasterList::current`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wait {
    /// Dial at once (a redirect to the leader).
    Now,
    /// A short jittered pause: the next master of this round.
    Pause(Duration),
    /// The caller's reconnect backoff (every master of the list failed this round, or too
    /// many redirects in a row).
    Backoff,
}

/// The masters a dialer knows and where it stands among them.
#[derive(Debug, Clone)]
pub struct MasterList<A> {
    /// As configured, in order; never empty.
    list: Vec<A>,
    /// What to dial now.
    current: A,
    /// Index into `list` of the next master the rotation gives.
    next: usize,
    /// The last master that welcomed us.
    leader: Option<A>,
    /// Redirects followed since the last welcome (or since the limit was hit).
    redirects: u32,
    /// Attempts that got no leader since the last welcome.
    misses: usize,
    /// Masters that did not answer since the last welcome (a lost leader counts as one).
    silent: Vec<A>,
    /// "No leader yet" answers that passed silent masters over since the last welcome.
    skips: u32,
    rng: XorShift64Star,
}

impl<A: Clone + PartialEq + std::fmt::Debug> MasterList<A> {
    /// `None` when `list` is empty. Duplicates are dropped (the first one stays).
    pub fn new(list: Vec<A>) -> Option<Self> {
        let mut unique: Vec<A> = Vec::with_capacity(list.len());
        for a in list {
            if !unique.contains(&a) {
                unique.push(a);
            }
        }
        let current = unique.first()?.clone();
        let mut seed = [0u8; 8];
        let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut seed);
        Some(Self {
            next: 1 % unique.len(),
            list: unique,
            current,
            leader: None,
            redirects: 0,
            misses: 0,
            silent: Vec::new(),
            skips: 0,
            rng: XorShift64Star::new(u64::from_le_bytes(seed) | 1),
        })
    }

    /// A list of one.
    pub fn single(master: A) -> Self {
        match Self::new(vec![master]) {
            Some(list) => list,
            None => unreachable!("a list of one is not empty"),
        }
    }

    /// The master to dial next.
    pub fn current(&self) -> &A {
        &self.current
    }

    /// The configured masters.
    pub fn configured(&self) -> &[A] {
        &self.list
    }

    /// Whether more than one master is configured.
    pub fn several(&self) -> bool {
        self.list.len() > 1
    }

    /// The last master that welcomed us.
    pub fn leader(&self) -> Option<&A> {
        self.leader.as_ref()
    }

    /// [`MasterList::current`] welcomed us: it is the leader (or the single master).
    pub fn welcomed(&mut self) {
        self.leader = Some(self.current.clone());
        self.redirects = 0;
        self.misses = 0;
        self.silent.clear();
        self.skips = 0;
    }

    /// [`MasterList::current`] is a standby naming `leader` as the leader. `Some(Wait::Now)`
    /// with `current` set to `leader` when the redirect is followed; `None` when too many
    /// redirects came in a row: then `current` is the next configured master, to be dialled
    /// after the backoff.
    pub fn redirected(&mut self, leader: A) -> Option<Wait> {
        if self.redirects >= MAX_REDIRECTS {
            self.redirects = 0;
            self.misses += 1;
            self.advance(false);
            return None;
        }
        self.redirects += 1;
        self.current = leader;
        Some(Wait::Now)
    }

    /// [`MasterList::current`] did not answer, or the link to it ended before it welcomed
    /// us: on to the next configured master.
    pub fn failed(&mut self) -> Wait {
        if self.several() && !self.silent.contains(&self.current) {
            self.silent.push(self.current.clone());
        }
        self.misses += 1;
        self.advance(false);
        self.wait(false)
    }

    /// [`MasterList::current`] is a standby that knows no leader yet: on to the next master
    /// that answers, passing over silent ones while [`SILENT_SKIPS`] lasts.
    pub fn no_leader_yet(&mut self) -> Wait {
        let answered = self.current.clone();
        self.silent.retain(|a| *a != answered);
        self.misses += 1;
        // Standbys are asked again at the short pace while silent masters are passed over.
        let passing_over = !self.silent.is_empty() && self.skips < SILENT_SKIPS;
        if passing_over {
            self.skips += 1;
        }
        self.advance(passing_over);
        self.wait(passing_over)
    }

    /// A short pause while this round through the list lasts (or while silent masters are
    /// passed over), else the caller's backoff.
    fn wait(&mut self, passing_over: bool) -> Wait {
        if self.misses < self.list.len() || passing_over {
            let (lo, hi) = (
                STANDBY_PAUSE_MIN.as_micros() as u64,
                STANDBY_PAUSE.as_micros() as u64,
            );
            Wait::Pause(Duration::from_micros(self.rng.between(lo, hi)))
        } else {
            Wait::Backoff
        }
    }

    /// The link to the leader (which had welcomed us) ended: the rest of the list from its
    /// start, the lost leader last; with one master configured, that master (or the leader
    /// it named) again.
    pub fn lost(&mut self) {
        self.next = 0;
        self.misses = 0;
        self.redirects = 0;
        self.skips = 0;
        self.current = self.leader.clone().unwrap_or_else(|| self.list[0].clone());
        self.silent.clear();
        if self.several() {
            // Most often dead: passed over while the others elect its successor.
            self.silent.push(self.current.clone());
            self.advance(false);
        }
    }

    /// `current` becomes the next configured master in rotation, not the one just tried
    /// when there is another; with `pass_over_silent`, not a silent one when another answers.
    fn advance(&mut self, pass_over_silent: bool) {
        let tried = self.current.clone();
        let len = self.list.len();
        let another_answers = self
            .list
            .iter()
            .any(|a| *a != tried && !self.silent.contains(a));
        for _ in 0..len {
            let candidate = self.list[self.next].clone();
            self.next = (self.next + 1) % len;
            if candidate == tried && len > 1 {
                continue;
            }
            if pass_over_silent && another_answers && self.silent.contains(&candidate) {
                continue;
            }
            self.current = candidate;
            return;
        }
    }
}

/// Splits a list of masters given as one string (`--master a:5050,b:5050`, an environment
/// variable): by commas, blanks trimmed, empty items dropped.
pub fn split_list(text: &str) -> Vec<String> {
    text.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(names: &[&'static str]) -> MasterList<&'static str> {
        MasterList::new(names.to_vec()).expect("not empty")
    }

    #[test]
    fn an_empty_list_is_refused_and_duplicates_are_dropped() {
        assert!(MasterList::<&str>::new(vec![]).is_none());
        assert_eq!(list(&["a", "b", "a"]).configured(), &["a", "b"]);
    }

    #[test]
    fn a_single_master_always_waits_the_backoff_as_before() {
        let mut m = list(&["a"]);
        assert!(!m.several());
        for _ in 0..3 {
            assert_eq!(m.failed(), Wait::Backoff);
            assert_eq!(*m.current(), "a");
        }
        m.welcomed();
        m.lost();
        assert_eq!(*m.current(), "a");
        assert_eq!(m.failed(), Wait::Backoff);
    }

    #[test]
    fn a_redirect_is_followed_at_once_but_not_more_than_three_times_in_a_row() {
        let mut m = list(&["a", "b", "c"]);
        assert_eq!(m.redirected("b"), Some(Wait::Now));
        assert_eq!(*m.current(), "b");
        // b and a point at each other.
        assert_eq!(m.redirected("a"), Some(Wait::Now));
        assert_eq!(m.redirected("b"), Some(Wait::Now));
        assert_eq!(m.redirected("a"), None, "a fourth redirect in a row");
        assert_ne!(
            *m.current(),
            "a",
            "the next configured master, not the redirect"
        );
        // The count starts again: the next redirect is followed.
        assert_eq!(m.redirected("a"), Some(Wait::Now));
    }

    #[test]
    fn a_welcome_resets_the_redirect_count() {
        let mut m = list(&["a", "b"]);
        for _ in 0..3 {
            assert_eq!(m.redirected("b"), Some(Wait::Now));
            m.welcomed();
        }
        assert_eq!(m.redirected("b"), Some(Wait::Now));
        assert_eq!(m.leader(), Some(&"b"));
    }

    #[test]
    fn without_a_leader_the_next_master_is_tried_after_a_short_pause_then_the_backoff() {
        let mut m = list(&["a", "b", "c"]);
        let mut seen = vec![*m.current()];
        for _ in 0..2 {
            match m.failed() {
                Wait::Pause(d) => assert!(d >= STANDBY_PAUSE_MIN && d <= STANDBY_PAUSE, "{d:?}"),
                other => panic!("expected a short pause, got {other:?}"),
            }
            seen.push(*m.current());
        }
        assert_eq!(seen, ["a", "b", "c"]);
        // The round is over: backoff, and around again.
        assert_eq!(m.failed(), Wait::Backoff);
        assert_eq!(*m.current(), "a");
    }

    #[test]
    fn a_lost_leader_is_tried_after_the_other_masters() {
        let mut m = list(&["a", "b", "c"]);
        m.failed();
        m.failed();
        assert_eq!(*m.current(), "c");
        m.welcomed();
        m.lost();
        assert_eq!(
            *m.current(),
            "a",
            "a standby answers at once; the lost leader may be dead"
        );
        assert!(matches!(m.failed(), Wait::Pause(_)));
        assert_eq!(*m.current(), "b");
        assert!(matches!(m.failed(), Wait::Pause(_)));
        assert_eq!(*m.current(), "c", "the lost leader last");
        assert_eq!(m.failed(), Wait::Backoff);
    }

    #[test]
    fn while_standbys_elect_a_silent_lost_leader_is_passed_over_for_a_while() {
        let mut m = list(&["a", "b", "c"]);
        m.failed();
        m.failed();
        m.welcomed(); // c leads, then dies
        m.lost();
        let mut dialled = vec![*m.current()];
        let mut waits = Vec::new();
        // a and b answer "no leader yet" until c has been passed over SILENT_SKIPS times.
        while *m.current() != "c" {
            waits.push(m.no_leader_yet());
            dialled.push(*m.current());
            assert!(dialled.len() < 50, "c is tried in the end: {dialled:?}");
        }
        // a and b alternate at the short pace for SILENT_SKIPS answers, then c's turn
        // comes in the plain rotation (after the backoff once a round is over).
        let skips = SILENT_SKIPS as usize;
        assert!(
            waits[..skips].iter().all(|w| matches!(w, Wait::Pause(_))),
            "{waits:?}"
        );
        assert!(dialled.len() > skips + 1, "{dialled:?}");
        assert!(dialled.len() <= skips + 3, "{dialled:?}");
        // A welcome forgets who was silent.
        m.welcomed();
        m.lost();
        assert_eq!(*m.current(), "a");
    }

    #[test]
    fn a_master_that_stops_answering_is_passed_over_but_all_silent_goes_round() {
        let mut m = list(&["a", "b", "c"]);
        assert!(matches!(m.failed(), Wait::Pause(_))); // a silent
        assert_eq!(*m.current(), "b");
        assert!(matches!(m.no_leader_yet(), Wait::Pause(_)));
        assert_eq!(*m.current(), "c", "c has not been silent");
        assert!(matches!(m.no_leader_yet(), Wait::Pause(_)));
        assert_eq!(*m.current(), "b", "a is passed over");
        // Everyone silent: plain rotation, and the backoff once a round is over.
        let mut all = list(&["a", "b"]);
        all.failed();
        assert_eq!(*all.current(), "b");
        assert_eq!(all.failed(), Wait::Backoff);
        assert_eq!(*all.current(), "a");
    }

    #[test]
    fn a_leader_outside_the_list_is_remembered() {
        let mut m = list(&["a", "b"]);
        assert_eq!(m.redirected("z"), Some(Wait::Now));
        m.welcomed();
        assert_eq!(m.leader(), Some(&"z"));
        m.lost();
        assert_eq!(
            *m.current(),
            "a",
            "the configured masters name the new leader"
        );
        // With one configured master, the leader it named is dialled again.
        let mut one = list(&["a"]);
        assert_eq!(one.redirected("z"), Some(Wait::Now));
        one.welcomed();
        one.lost();
        assert_eq!(*one.current(), "z");
    }

    #[test]
    fn lists_split_on_commas() {
        assert_eq!(split_list(" a:1, b:2 ,,c:3"), ["a:1", "b:2", "c:3"]);
        assert!(split_list(" , ").is_empty());
    }
}

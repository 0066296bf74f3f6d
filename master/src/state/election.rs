//! Framework leader election (what Mesos frameworks used ZooKeeper for): several instances of
//! one framework — same principal, same name — send `Campaign` instead of `Subscribe`. The
//! master makes exactly one of them the active scheduler, subscribed under the framework's
//! id as any scheduler is, and keeps the others connected as standbys, told who leads. When
//! the active one's connection goes, the first standby still connected is subscribed in its
//! place at once: same framework id, same tasks (nothing is killed), same key/value state.
//!
//! The fence is the connection: a scheduler's calls act on the framework its connection
//! subscribed as, a standby's connection is bound to no framework (any call from it closes
//! it), and a deposed one's is unbound by the failover, so no call of an instance that is not
//! the leader ever reaches the framework.
//!
//! The fencing token is the framework's epoch (`FrameworkEntry::epoch`), raised by
//! `subscribe` — so on every subscription, failover and takeover here — to one above the
//! highest this master or its store ever gave (`Master::fence_high`), durable in the store's
//! `fences` table and told in `Subscribed`. A state write carrying a token that is not the
//! current epoch (`SchedulerCall::WriteStateFenced`) is refused (`framework_state.rs`); the
//! scheduler may hand the token to outside systems to fence them too.

use super::peers::Bound;
use super::ConnId;
use super::Master;
use bramble_proto::messages::{FrameworkInfo, MasterEvent};
use bramble_proto::FrameworkId;
use std::collections::VecDeque;
use std::time::Instant;
use tracing::info;

/// The instances waiting behind one framework's active scheduler, first come first served.
#[derive(Debug, Default)]
pub(super) struct Standbys {
    queue: VecDeque<(ConnId, FrameworkInfo)>,
}

impl Master {
    /// A `Campaign`: subscribe `conn` as the framework's active scheduler if none is
    /// connected, else keep it as a standby.
    pub(super) fn campaign(&mut self, conn: ConnId, info: FrameworkInfo, now: Instant) {
        let principal = self
            .conns
            .get(&conn)
            .and_then(|c| c.identity.principal.clone());
        let group = info
            .framework_id
            .clone()
            .or_else(|| self.framework_of_group(principal.as_deref(), &info.name));
        let Some(id) = group else {
            // The first instance ever: a new framework.
            return self.subscribe(conn, info, now);
        };
        let leader = self
            .frameworks
            .get(&id)
            .and_then(|f| f.conn)
            .filter(|c| *c != conn);
        let mut info = info;
        info.framework_id = Some(id.clone());
        let Some(leader) = leader else {
            return self.subscribe(conn, info, now);
        };
        // Standing by is only for who could take the framework over; anyone else hears why
        // now rather than at promotion.
        let caller = self.caller_of(conn);
        if let Some(refusal) = self.subscription_refusal(&id, &caller, &info) {
            info!(framework = %id, "refusing a campaign: {refusal}");
            return self.send_conn_scheduler(
                conn,
                MasterEvent::Error {
                    message: refusal,
                    fatal: true,
                },
            );
        }
        let leader_address = self
            .conns
            .get(&leader)
            .map(|c| c.identity.address.to_string())
            .unwrap_or_default();
        if let Some(c) = self.conns.get_mut(&conn) {
            c.bound = Some(Bound::Standby(id.clone()));
        }
        let standbys = self.standbys.entry(id.clone()).or_default();
        standbys.queue.push_back((conn, info));
        info!(framework = %id, leader = %leader_address, standbys = standbys.queue.len(),
            "a scheduler instance stands by");
        self.send_conn_scheduler(
            conn,
            MasterEvent::Standby {
                framework_id: id,
                leader: leader_address,
            },
        );
    }

    /// The framework a campaign without an id joins: the one of that principal and name,
    /// preferring a connected one, then the lowest id (deterministic across restarts).
    fn framework_of_group(&self, principal: Option<&str>, name: &str) -> Option<FrameworkId> {
        self.frameworks
            .iter()
            .filter(|(_, f)| f.info.name == name && f.info.principal.as_deref() == principal)
            .min_by_key(|(id, f)| (f.conn.is_none(), (*id).clone()))
            .map(|(id, _)| id.clone())
    }

    /// The active scheduler of `id` went away: the first standby still connected takes over.
    pub(super) fn promote_standby(&mut self, id: &FrameworkId, now: Instant) {
        while let Some((conn, info)) = self.standbys.get_mut(id).and_then(|s| s.queue.pop_front()) {
            if !self.conns.contains_key(&conn) {
                continue;
            }
            if let Some(c) = self.conns.get_mut(&conn) {
                c.bound = None;
            }
            info!(framework = %id, "a standby scheduler takes over");
            self.subscribe(conn, info, now);
            break;
        }
        if self.standbys.get(id).is_some_and(|s| s.queue.is_empty()) {
            self.standbys.remove(id);
        }
    }

    /// A standby's connection ended: it leaves the queue.
    pub(super) fn standby_disconnected(&mut self, id: &FrameworkId, conn: ConnId) {
        if let Some(s) = self.standbys.get_mut(id) {
            s.queue.retain(|(c, _)| *c != conn);
            if s.queue.is_empty() {
                self.standbys.remove(id);
            }
        }
    }

    /// The framework is gone (torn down, or its failover timeout passed): its standbys have
    /// nothing to stand by for.
    pub(super) fn dismiss_standbys(&mut self, id: &FrameworkId, why: &str) {
        let Some(standbys) = self.standbys.remove(id) else {
            return;
        };
        for (conn, _) in standbys.queue {
            if let Some(c) = self.conns.get_mut(&conn) {
                c.bound = None;
            }
            self.send_conn_scheduler(
                conn,
                MasterEvent::Error {
                    message: format!("framework removed: {why}"),
                    fatal: true,
                },
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::state::testing::*;
    use crate::state::Master;
    use crate::store::Store;
    use bramble_proto::framework_state::StateWrite;
    use bramble_proto::identity::Role;
    use bramble_proto::messages::{FrameworkInfo, MasterEvent, MasterToAgent, SchedulerCall};
    use bramble_proto::queue::QueueRx;
    use bramble_proto::FrameworkId;
    use bramble_proto::TaskState;
    use std::time::Instant;

    /// An instance of framework "fw" (no id: found by principal and name) campaigning on
    /// `conn` as `principal`; settled.
    fn campaign(
        m: &mut Master,
        conn: u64,
        principal: Option<&str>,
        now: Instant,
    ) -> QueueRx<MasterEvent> {
        let rx = campaign_unsettled(m, conn, principal, now);
        settle(m, now);
        rx
    }

    /// [`campaign`] leaving the burst open, for a test that commits it.
    fn campaign_unsettled(
        m: &mut Master,
        conn: u64,
        principal: Option<&str>,
        now: Instant,
    ) -> QueueRx<MasterEvent> {
        let info = FrameworkInfo {
            principal: principal.map(str::to_string),
            ..framework_info(None)
        };
        let identity = identity_of(Role::Framework, principal);
        connect_scheduler_calling(m, conn, identity, SchedulerCall::Campaign(info), now)
    }

    fn subscribed_as(events: &[MasterEvent]) -> Option<String> {
        events.iter().find_map(|e| match e {
            MasterEvent::Subscribed { framework_id, .. } => Some(framework_id.to_string()),
            _ => None,
        })
    }

    fn standing_by_for(events: &[MasterEvent]) -> Option<String> {
        events.iter().find_map(|e| match e {
            MasterEvent::Standby { framework_id, .. } => Some(framework_id.to_string()),
            _ => None,
        })
    }

    #[test]
    fn one_instance_leads_the_others_stand_by_and_the_next_takes_over_with_the_tasks() {
        let now = Instant::now();
        let mut m = master(now);
        let mut agent = join(&mut m, 1, "a1", Vec::new(), now);
        let mut first = campaign(&mut m, 10, Some("alice"), now);
        let events = drain(&mut first);
        let fw = subscribed_as(&events).expect("the first instance leads");
        let offer = offers(&events).remove(0);
        let launch = SchedulerCall::Accept {
            offer_ids: vec![offer.id.clone()],
            tasks: vec![task_info("t1")],
            filters: Default::default(),
        };
        call(&mut m, 10, launch, now);
        settle(&mut m, now);
        drain(&mut agent);

        let mut second = campaign(&mut m, 11, Some("alice"), now);
        let mut third = campaign(&mut m, 12, Some("alice"), now);
        let told = drain(&mut second);
        assert_eq!(standing_by_for(&told), Some(fw.clone()), "{told:?}");
        assert_eq!(subscribed_as(&told), None);
        assert_eq!(standing_by_for(&drain(&mut third)), Some(fw.clone()));

        // A standby's calls never act on the framework: its connection is closed instead.
        call(
            &mut m,
            12,
            SchedulerCall::Kill {
                task_id: "t1".into(),
            },
            now,
        );
        settle(&mut m, now);
        assert!(
            !drain(&mut agent)
                .iter()
                .any(|msg| matches!(msg, MasterToAgent::KillTask { .. })),
            "a standby killed a task"
        );

        // The leader goes: the first standby is subscribed under the same id at once.
        disconnect(&mut m, 10, now);
        settle(&mut m, now);
        let events = drain(&mut second);
        assert_eq!(subscribed_as(&events), Some(fw.clone()), "{events:?}");
        assert!(
            matches!(events.get(1), Some(MasterEvent::State { .. })),
            "the new leader gets the framework's state: {events:?}"
        );
        // Nothing was killed; the task is still the framework's.
        assert!(!drain(&mut agent).iter().any(|msg| matches!(
            msg,
            MasterToAgent::KillTask { .. } | MasterToAgent::ShutdownFramework { .. }
        )));
        let snapshot = m.snapshot();
        assert_eq!(snapshot.frameworks.len(), 1);
        let task = snapshot.tasks.iter().find(|t| t.id.as_str() == "t1");
        assert!(task.is_some_and(|t| t.framework_id.as_str() == fw && !t.state.is_terminal()));
        assert!(task.is_some_and(|t| t.state != TaskState::Killed));
    }

    #[test]
    fn a_standby_that_left_is_skipped_and_with_none_left_the_framework_waits_as_before() {
        let now = Instant::now();
        let mut m = master(now);
        let mut first = campaign(&mut m, 10, None, now);
        let fw = subscribed_as(&drain(&mut first)).expect("leads");
        let _gone = campaign(&mut m, 11, None, now);
        let mut next = campaign(&mut m, 12, None, now);
        drain(&mut next);
        disconnect(&mut m, 11, now);
        disconnect(&mut m, 10, now);
        settle(&mut m, now);
        assert_eq!(subscribed_as(&drain(&mut next)), Some(fw.clone()));

        // No standby left: the framework is disconnected, within its failover timeout, and
        // the next campaign takes it over directly.
        disconnect(&mut m, 12, now);
        settle(&mut m, now);
        let mut later = campaign(&mut m, 13, None, now);
        assert_eq!(subscribed_as(&drain(&mut later)), Some(fw));
    }

    #[test]
    fn another_principal_cannot_stand_by_for_a_framework_it_could_not_take_over() {
        let now = Instant::now();
        let mut m = master(now);
        let mut alice = campaign(&mut m, 10, Some("alice"), now);
        let fw = subscribed_as(&drain(&mut alice)).expect("leads");
        // Mallory names alice's framework id.
        let info = FrameworkInfo {
            principal: Some("alice".into()),
            ..framework_info(Some(&fw))
        };
        let mallory = identity_of(Role::Framework, Some("mallory"));
        let mut rx =
            connect_scheduler_calling(&mut m, 11, mallory, SchedulerCall::Campaign(info), now);
        settle(&mut m, now);
        let told = drain(&mut rx);
        assert!(
            told.iter()
                .any(|e| matches!(e, MasterEvent::Error { fatal: true, .. })),
            "{told:?}"
        );
        assert_eq!(standing_by_for(&told), None);
        // And alice leaving hands nothing to mallory.
        disconnect(&mut m, 10, now);
        settle(&mut m, now);
        assert_eq!(subscribed_as(&drain(&mut rx)), None);
    }

    fn token_of(events: &[MasterEvent]) -> Option<u64> {
        events.iter().find_map(|e| match e {
            MasterEvent::Subscribed { fencing_token, .. } => Some(*fencing_token),
            _ => None,
        })
    }

    fn fenced_put(key: &str, value: &str, fence: u64) -> SchedulerCall {
        SchedulerCall::WriteStateFenced {
            write: StateWrite::Put {
                key: key.into(),
                value: value.as_bytes().to_vec(),
                expected_version: None,
            },
            fence,
        }
    }

    /// Ends the burst like the server does: commits its batch to `store`, then releases the
    /// outbox.
    fn commit(m: &mut Master, store: &mut Store, now: Instant) {
        m.end_burst(now);
        store.commit(&m.take_writes()).expect("commit");
        m.flush_outbox();
    }

    #[test]
    fn every_new_active_scheduler_gets_a_higher_fencing_token_and_a_deposed_ones_writes_are_refused(
    ) {
        let now = Instant::now();
        let mut m = master(now);
        let mut first = campaign(&mut m, 10, Some("alice"), now);
        let events = drain(&mut first);
        let fw = subscribed_as(&events).expect("leads");
        let t1 = token_of(&events).expect("a token");
        let mut second = campaign(&mut m, 11, Some("alice"), now);
        assert_eq!(
            token_of(&drain(&mut second)),
            None,
            "a standby holds no token"
        );

        // The leader writes with its token: accepted.
        call(&mut m, 10, fenced_put("k", "from-first", t1), now);
        settle(&mut m, now);
        assert!(drain(&mut first)
            .iter()
            .any(|e| matches!(e, MasterEvent::StateChanged { key, .. } if key == "k")));

        // Standby takeover: a new epoch.
        disconnect(&mut m, 10, now);
        settle(&mut m, now);
        let events = drain(&mut second);
        assert_eq!(subscribed_as(&events), Some(fw.clone()));
        let t2 = token_of(&events).expect("a token");
        assert!(t2 > t1, "{t2} > {t1}");

        // A write stamped with the deposed leader's token is refused, by name, and changes
        // nothing; the current token's is accepted.
        call(&mut m, 11, fenced_put("k", "stale", t1), now);
        settle(&mut m, now);
        let events = drain(&mut second);
        assert!(
            events.iter().any(|e| matches!(e, MasterEvent::Error { message, fatal: false }
                if message.contains("fenced") && message.contains(&t1.to_string()) && message.contains(&t2.to_string()))),
            "{events:?}"
        );
        assert!(!events
            .iter()
            .any(|e| matches!(e, MasterEvent::StateChanged { .. })));
        let value = |m: &Master| {
            m.read_framework_state(&FrameworkId(fw.clone()), "k")
                .expect("known")
                .first()
                .map(|e| e.value.clone())
        };
        assert_eq!(value(&m), Some(b"from-first".to_vec()));
        call(&mut m, 11, fenced_put("k", "from-second", t2), now);
        settle(&mut m, now);
        assert_eq!(value(&m), Some(b"from-second".to_vec()));
        // An unfenced write (a scheduler that does not fence) is not checked.
        call(
            &mut m,
            11,
            SchedulerCall::WriteState(StateWrite::Delete {
                key: "k".into(),
                expected_version: None,
            }),
            now,
        );
        settle(&mut m, now);
        assert_eq!(value(&m), None);

        // A plain failover (Subscribe under the id) deposes too.
        let info = FrameworkInfo {
            principal: Some("alice".into()),
            ..framework_info(Some(&fw))
        };
        let alice = identity_of(Role::Framework, Some("alice"));
        let mut third = connect_scheduler(&mut m, 12, alice, info, now);
        settle(&mut m, now);
        let t3 = token_of(&drain(&mut third)).expect("a token");
        assert!(t3 > t2, "{t3} > {t2}");
        call(&mut m, 12, fenced_put("k", "stale", t2), now);
        settle(&mut m, now);
        assert_eq!(value(&m), None);
    }

    #[test]
    fn fencing_epochs_survive_a_master_restart_and_keep_rising() {
        let now = Instant::now();
        let dir = tempfile::tempdir().expect("tempdir");
        let (mut store, _) = Store::open(dir.path(), "c").expect("open");
        let mut m = master(now);
        let mut first = campaign_unsettled(&mut m, 10, Some("alice"), now);
        commit(&mut m, &mut store, now);
        let events = drain(&mut first);
        let fw = subscribed_as(&events).expect("leads");
        let t1 = token_of(&events).expect("a token");
        // Another framework's subscriptions raise the master-wide mark too.
        let _other = connect_framework(&mut m, 20, Some("other"), now);
        assert_eq!(m.fence_high, t1 + 1);
        commit(&mut m, &mut store, now);
        drop(m);
        drop(store);

        // A restarted master: the framework's epoch is back, and the next leader's is higher
        // than any given before the restart.
        let (mut store, recovered) = Store::open(dir.path(), "c").expect("reopen");
        let mut m = master(now);
        m.recover(recovered, now);
        assert!(
            m.take_writes().is_empty(),
            "recovering epochs writes nothing"
        );
        let mut again = campaign_unsettled(&mut m, 30, Some("alice"), now);
        commit(&mut m, &mut store, now);
        let events = drain(&mut again);
        assert_eq!(subscribed_as(&events), Some(fw.clone()));
        let t2 = token_of(&events).expect("a token");
        assert!(
            t2 > t1 + 1,
            "{t2} is above both tokens given before the restart"
        );
        call(&mut m, 30, fenced_put("k", "stale", t1), now);
        call(&mut m, 30, fenced_put("k", "current", t2), now);
        commit(&mut m, &mut store, now);
        let state = m
            .read_framework_state(&FrameworkId(fw.clone()), "")
            .expect("known");
        assert_eq!(state.len(), 1);
        assert_eq!(state[0].value, b"current".to_vec());
        assert_eq!(state[0].version, 1, "the stale write never landed");
    }

    #[test]
    fn tearing_the_framework_down_dismisses_its_standbys() {
        let now = Instant::now();
        let mut m = master(now);
        let _leader = campaign(&mut m, 10, None, now);
        let mut standby = campaign(&mut m, 11, None, now);
        drain(&mut standby);
        call(&mut m, 10, SchedulerCall::Teardown, now);
        settle(&mut m, now);
        let told = drain(&mut standby);
        assert!(
            told.iter()
                .any(|e| matches!(e, MasterEvent::Error { fatal: true, .. })),
            "{told:?}"
        );
    }
}

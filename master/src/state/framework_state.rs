//! Each framework's own key/value state (`bramble_proto::framework_state`): written by the
//! framework itself (`SchedulerCall::WriteState`) or by an operator on its behalf
//! (`OperatorCall::WriteFrameworkState`, e.g. `bramble service apply` while the service
//! scheduler is down), durable with the rest of the burst, and gone with the framework.
//!
//! A connected framework gets its whole state right after `Subscribed`, and a `StateChanged`
//! for every write that lands, whoever made it: that is how a scheduler watches its state.
//! Both leave through the outbox, so neither is seen before the write is on disk.

use super::Master;
use bramble_proto::framework_state::{
    check_fence, FrameworkState, StateEntry, StateRefusal, StateWrite,
};
use bramble_proto::messages::MasterEvent;
use bramble_proto::FrameworkId;
use tracing::info;

impl Master {
    /// Applies `write` to `fw`'s state: the entry as it is now, or why not. The framework
    /// must be known (connected or within its failover timeout). With a `fence` (a fencing
    /// token from `Subscribed`), only if it is the framework's current epoch: a write made by
    /// an instance that has since been deposed is refused (`StateRefusal::Fenced`).
    pub(super) fn write_framework_state(
        &mut self,
        fw: &FrameworkId,
        write: StateWrite,
        fence: Option<u64>,
    ) -> Result<Option<StateEntry>, String> {
        let Some(epoch) = self.frameworks.get(fw).map(|f| f.epoch) else {
            return Err(format!("no framework {fw} is known to this master"));
        };
        if let Err(refusal) = check_fence(fence, epoch) {
            info!(framework = %fw, key = %write.key(), "refusing a fenced state write: {refusal}");
            return Err(refusal.to_string());
        }
        let key = write.key().to_string();
        let result = self
            .framework_state
            .entry(fw.clone())
            .or_default()
            .apply(write);
        let entry = result.map_err(|e: StateRefusal| e.to_string())?;
        if self
            .framework_state
            .get(fw)
            .is_some_and(FrameworkState::is_empty)
        {
            self.framework_state.remove(fw);
        }
        self.dirty_state.insert((fw.clone(), key.clone()));
        self.service_record_written(fw, &key, entry.as_ref().map(|e| &e.value[..]));
        self.send_framework(
            fw,
            MasterEvent::StateChanged {
                key,
                entry: entry.clone(),
            },
        );
        Ok(entry)
    }

    /// The keys of `fw`'s state starting with `prefix`.
    pub(super) fn read_framework_state(
        &self,
        fw: &FrameworkId,
        prefix: &str,
    ) -> Result<Vec<StateEntry>, String> {
        if !self.frameworks.contains_key(fw) {
            return Err(format!("no framework {fw} is known to this master"));
        }
        Ok(self
            .framework_state
            .get(fw)
            .map(|s| s.list(prefix))
            .unwrap_or_default())
    }

    /// What a framework that just subscribed is sent after `Subscribed`.
    pub(super) fn framework_state_event(&self, fw: &FrameworkId) -> MasterEvent {
        MasterEvent::State {
            entries: self
                .framework_state
                .get(fw)
                .map(|s| s.list(""))
                .unwrap_or_default(),
        }
    }

    /// A removed framework's state goes with it.
    pub(super) fn forget_framework_state(&mut self, fw: &FrameworkId) {
        self.forget_service_records(fw);
        if let Some(state) = self.framework_state.remove(fw) {
            info!(framework = %fw, keys = state.list("").len(), bytes = state.bytes(),
                "dropping the removed framework's state");
            for key in state.keys() {
                self.dirty_state.insert((fw.clone(), key.clone()));
            }
        }
    }

    /// The written entries since the last batch: `None` deletes the key.
    pub(super) fn take_state_writes(&mut self) -> Vec<((FrameworkId, String), Option<StateEntry>)> {
        std::mem::take(&mut self.dirty_state)
            .into_iter()
            .map(|(fw, key)| {
                let entry = self
                    .framework_state
                    .get(&fw)
                    .and_then(|s| s.get(&key))
                    .cloned();
                ((fw, key), entry)
            })
            .collect()
    }

    /// Puts back a stored entry; one of a framework the store no longer holds is deleted.
    pub(super) fn recover_state_entry(&mut self, fw: FrameworkId, entry: StateEntry) {
        if self.frameworks.contains_key(&fw) {
            self.service_record_written(&fw, &entry.key, Some(&entry.value));
            self.framework_state.entry(fw).or_default().restore(entry);
        } else {
            self.dirty_state.insert((fw, entry.key));
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::state::testing::*;
    use crate::state::Input;
    use bramble_proto::framework_state::{StateEntry, StateWrite};
    use bramble_proto::messages::{MasterEvent, OperatorCall, OperatorReply, SchedulerCall};
    use bramble_proto::FrameworkId;
    use std::time::Instant;
    use tokio::sync::oneshot;

    fn put(key: &str, value: &str, expected: Option<u64>) -> StateWrite {
        StateWrite::Put {
            key: key.into(),
            value: value.as_bytes().to_vec(),
            expected_version: expected,
        }
    }

    fn operator(m: &mut crate::state::Master, call: OperatorCall, now: Instant) -> OperatorReply {
        let (reply, mut rx) = oneshot::channel();
        m.handle(Input::Operator { call, reply }, now);
        settle(m, now);
        rx.try_recv().expect("answered after the burst")
    }

    fn changed(events: &[MasterEvent]) -> Vec<(String, Option<u64>)> {
        events
            .iter()
            .filter_map(|e| match e {
                MasterEvent::StateChanged { key, entry } => {
                    Some((key.clone(), entry.as_ref().map(|e| e.version)))
                }
                _ => None,
            })
            .collect()
    }

    #[test]
    fn an_operator_write_is_stored_told_to_the_framework_and_given_back_on_resubscription() {
        let now = Instant::now();
        let mut m = master(now);
        let mut fw = connect_framework(&mut m, 2, Some("fw1"), now);
        settle(&mut m, now);
        let first = drain(&mut fw);
        assert!(
            first
                .iter()
                .any(|e| matches!(e, MasterEvent::State { entries } if entries.is_empty())),
            "{first:?}"
        );
        let write = OperatorCall::WriteFrameworkState {
            framework_id: FrameworkId("fw1".into()),
            write: put("spec/web", "v1", Some(0)),
        };
        m.handle(
            Input::Operator {
                call: write,
                reply: oneshot::channel().0,
            },
            now,
        );
        let batch = m.take_writes();
        assert_eq!(batch.framework_state.len(), 1, "{batch:?}");
        m.flush_outbox();
        assert_eq!(
            changed(&drain(&mut fw)),
            [("spec/web".to_string(), Some(1))]
        );

        // The framework writes too, compare-and-swap on the version it saw.
        call(
            &mut m,
            2,
            SchedulerCall::WriteState(put("spec/web", "v2", Some(1))),
            now,
        );
        call(
            &mut m,
            2,
            SchedulerCall::WriteState(put("spec/web", "stale", Some(1))),
            now,
        );
        settle(&mut m, now);
        let events = drain(&mut fw);
        assert_eq!(changed(&events), [("spec/web".to_string(), Some(2))]);
        assert!(
            events.iter().any(|e| matches!(e, MasterEvent::Error { message, fatal: false } if message.contains("spec/web") && message.contains("version 2"))),
            "{events:?}"
        );

        disconnect(&mut m, 2, now);
        let mut fw = connect_framework(&mut m, 3, Some("fw1"), now);
        settle(&mut m, now);
        let again = drain(&mut fw);
        let entries = again.iter().find_map(|e| match e {
            MasterEvent::State { entries } => Some(entries.clone()),
            _ => None,
        });
        assert_eq!(
            entries,
            Some(vec![StateEntry {
                key: "spec/web".into(),
                value: b"v2".to_vec(),
                version: 2
            }])
        );
        let read = operator(
            &mut m,
            OperatorCall::ReadFrameworkState {
                framework_id: FrameworkId("fw1".into()),
                prefix: "spec/".into(),
            },
            now,
        );
        assert!(
            matches!(&read, OperatorReply::FrameworkState(e) if e.len() == 1),
            "{read:?}"
        );
    }

    #[test]
    fn state_of_an_unknown_framework_is_refused_and_a_removed_frameworks_is_deleted() {
        let now = Instant::now();
        let mut m = master(now);
        let refused = operator(
            &mut m,
            OperatorCall::WriteFrameworkState {
                framework_id: FrameworkId("nobody".into()),
                write: put("k", "v", None),
            },
            now,
        );
        assert!(
            matches!(&refused, OperatorReply::Error { message } if message.contains("nobody")),
            "{refused:?}"
        );
        let _fw = connect_framework(&mut m, 2, Some("fw1"), now);
        call(
            &mut m,
            2,
            SchedulerCall::WriteState(put("a", "1", None)),
            now,
        );
        call(
            &mut m,
            2,
            SchedulerCall::WriteState(put("b", "2", None)),
            now,
        );
        settle(&mut m, now);
        call(&mut m, 2, SchedulerCall::Teardown, now);
        m.end_burst(now);
        let batch = m.take_writes();
        let mut deleted: Vec<&str> = batch
            .framework_state
            .iter()
            .filter(|(_, e)| e.is_none())
            .map(|((_, k), _)| k.as_str())
            .collect();
        deleted.sort();
        assert_eq!(deleted, ["a", "b"]);
    }

    #[test]
    fn recovered_state_is_kept_for_known_frameworks_and_deleted_for_others() {
        let now = Instant::now();
        let mut m = master(now);
        let mut stored = recovered(&[]);
        let entry = |key: &str| StateEntry {
            key: key.into(),
            value: vec![],
            version: 7,
        };
        stored.framework_state = vec![
            (FrameworkId("fw1".into()), entry("kept")),
            (FrameworkId("gone".into()), entry("orphan")),
        ];
        m.recover(stored, now);
        let batch = m.take_writes();
        assert_eq!(
            batch.framework_state,
            vec![((FrameworkId("gone".into()), "orphan".to_string()), None)]
        );
        let mut fw = connect_framework(&mut m, 2, Some("fw1"), now);
        settle(&mut m, now);
        assert!(drain(&mut fw).iter().any(
            |e| matches!(e, MasterEvent::State { entries } if entries == &vec![entry("kept")])
        ));
    }
}

//! An instance's task id: `<service>.<fingerprint>.<unique>` (the `TaskInfo` that launches it
//! is `launch.rs`'s).

use bramble_proto::TaskId;

/// `<service>.<fingerprint>.<unique>` split back, if it is one of ours.
pub fn parse_task_id(task_id: &TaskId) -> Option<(&str, &str)> {
    let mut parts = task_id.as_str().splitn(3, '.');
    let service = parts.next()?;
    let fingerprint = parts.next()?;
    let unique = parts.next()?;
    (!service.is_empty() && !fingerprint.is_empty() && !unique.is_empty())
        .then_some((service, fingerprint))
}

pub(super) fn new_task_id(service: &str, fingerprint: &str) -> TaskId {
    let fresh = bramble_proto::ids::fresh("i");
    // `i-` then 32 hex digits: 12 of them are plenty to tell one service's instances apart.
    let unique: String = fresh.chars().skip(2).take(12).collect();
    TaskId(format!("{service}.{fingerprint}.{unique}"))
}

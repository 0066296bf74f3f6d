//! An instance's task: its id (`<service>.<fingerprint>.<unique>`) and the `TaskInfo` that
//! launches it.

use crate::services::spec::Spec;
use bramble_proto::task::{CommandInfo, TaskInfo};
use bramble_proto::{Resources, TaskId};
use bramble_sdk::Offer;

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

/// The command task for one instance: `/bin/sh -c cmd` with the spec's environment and the
/// ports as `PORT0`… (and `PORT` for the first, the Marathon habit).
pub(super) fn task_info(
    spec: &Spec,
    offer: &Offer,
    task_id: &TaskId,
    resources: Resources,
    ports: &[u16],
) -> TaskInfo {
    let mut command = CommandInfo::shell(spec.cmd.clone());
    command.environment.extend(spec.env.clone());
    for (n, port) in ports.iter().enumerate() {
        command
            .environment
            .insert(format!("PORT{n}"), port.to_string());
    }
    if let Some(first) = ports.first() {
        command.environment.insert("PORT".into(), first.to_string());
    }
    TaskInfo {
        task_id: task_id.clone(),
        name: spec.name.clone(),
        agent_id: offer.agent_id.clone(),
        resources,
        command: Some(command),
        executor: None,
        data: Vec::new(),
        mesos: None,
        image: spec.image.clone(),
    }
}

//! The task one instance of a service is launched as, built from its spec and the ports the
//! book took from the offer: a command task (`/bin/sh -c cmd`), or a task of the instance's own
//! custom executor (the spec's `[executor]`, Marathon's `executor`). Either way the instance's
//! environment is the spec's `env` plus its ports as `PORT0`… (and `PORT` for the first, the
//! Marathon habit); an executor gets them in its process's environment, and its task carries
//! `executor.data` and the same ports in its resources.

use super::spec::Spec;
use bramble_proto::task::{CommandInfo, ExecutorInfo, TaskInfo};
use bramble_proto::{ExecutorId, Resources, TaskId};
use bramble_sdk::Offer;
use std::collections::BTreeMap;

/// The executor id of `task_id`'s own executor: one executor per instance, so killing an
/// instance ends its executor too (the agent shuts an executor down once it has no tasks).
pub fn executor_id(task_id: &TaskId) -> ExecutorId {
    ExecutorId(format!("{task_id}.executor"))
}

/// The task for one instance of `spec` on `offer`'s agent. `taken` is what the book took from
/// the offer for it ([`Spec::footprint`] and the ports); the task itself gets the spec's
/// `cpus`/`mem` and the ports, its executor (if any) the executor's share.
pub fn task_info(
    spec: &Spec,
    offer: &Offer,
    task_id: &TaskId,
    taken: Resources,
    ports: &[u16],
) -> TaskInfo {
    let mut environment: BTreeMap<String, String> = spec.env.clone();
    for (n, port) in ports.iter().enumerate() {
        environment.insert(format!("PORT{n}"), port.to_string());
    }
    if let Some(first) = ports.first() {
        environment.insert("PORT".into(), first.to_string());
    }
    let resources = Resources::new(spec.cpus, spec.mem).with_ports(taken.ports);
    let (command, executor, data) = match &spec.executor {
        None => {
            let mut command = CommandInfo::shell(spec.cmd.clone());
            command.environment = environment;
            (Some(command), None, Vec::new())
        }
        Some(e) => {
            let mut command = CommandInfo::shell(e.cmd.clone());
            command.environment = environment;
            let executor = ExecutorInfo {
                executor_id: executor_id(task_id),
                name: format!("{} executor", spec.name),
                command,
                resources: e.resources(),
            };
            (None, Some(executor), e.data.clone().into_bytes())
        }
    };
    TaskInfo {
        task_id: task_id.clone(),
        name: spec.name.clone(),
        agent_id: offer.agent_id.clone(),
        resources,
        command,
        executor,
        data,
        mesos: None,
        image: spec.image.clone(),
        artifacts: spec.task_artifacts(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bramble_proto::PortRange;

    fn offer() -> Offer {
        Offer {
            id: "o1".into(),
            framework_id: "fw".into(),
            agent_id: "a1".into(),
            hostname: "pi-1".into(),
            resources: Resources::new(4.0, 1024).with_ports([PortRange::new(31000, 31009)]),
            attributes: BTreeMap::new(),
            executor_ids: vec![],
        }
    }

    const BASE: &str =
        "name = \"web\"\ninstances = 2\ncpus = 0.5\nmem = 64\nports = 2\n[env]\nA = \"b\"\n";

    #[test]
    fn a_command_instance_runs_cmd_with_env_and_ports() {
        let spec = Spec::parse("web.toml", &format!("cmd = \"exec sleep 9\"\n{BASE}")).unwrap();
        let taken = spec
            .footprint()
            .with_ports([PortRange::new(31000, 31000), PortRange::new(31001, 31001)]);
        let t = task_info(
            &spec,
            &offer(),
            &"web.1".into(),
            taken.clone(),
            &[31000, 31001],
        );
        assert_eq!(
            t.resources, taken,
            "a command task takes exactly its footprint"
        );
        assert!(t.executor.is_none());
        let c = t.command.expect("a command task");
        assert_eq!(c.value, "exec sleep 9");
        assert_eq!(c.environment["PORT0"], "31000");
        assert_eq!(c.environment["PORT1"], "31001");
        assert_eq!(c.environment["PORT"], "31000");
        assert_eq!(c.environment["A"], "b");
    }

    #[test]
    fn an_executor_instance_is_a_task_of_its_own_executor_with_env_ports_and_data() {
        let text = format!(
            "{BASE}[executor]\ncmd = \"exec ./serve\"\ncpus = 0.25\nmem = 16\ndata = \"docs\"\n"
        );
        let spec = Spec::parse("web.toml", &text).unwrap();
        let footprint = spec.footprint();
        assert_eq!(
            footprint,
            Resources::new(0.75, 80),
            "task and executor together"
        );
        let taken = footprint.with_ports([PortRange::new(31004, 31005)]);
        let t = task_info(&spec, &offer(), &"web.2".into(), taken, &[31004, 31005]);
        assert!(t.command.is_none(), "exactly one of command or executor");
        assert_eq!(t.data, b"docs");
        assert_eq!(
            t.resources,
            Resources::new(0.5, 64).with_ports([PortRange::new(31004, 31005)]),
            "the task: its own cpus/mem and the ports"
        );
        let e = t.executor.expect("an executor task");
        assert_eq!(e.executor_id, executor_id(&"web.2".into()));
        assert_eq!(e.resources, Resources::new(0.25, 16));
        assert_eq!(e.command.value, "exec ./serve");
        assert!(e.command.shell);
        assert_eq!(e.command.environment["PORT0"], "31004");
        assert_eq!(e.command.environment["PORT1"], "31005");
        assert_eq!(e.command.environment["A"], "b");
        assert!(t.image.is_none());
        // The agent and the master take it as a valid id.
        bramble_proto::check_id("executor", e.executor_id.as_str()).expect("a valid executor id");
    }

    #[test]
    fn both_kinds_of_instance_carry_the_spec_artifacts() {
        let artifacts = "[[artifacts]]\nuri = \"master:site.tgz\"\n";
        for kind in [
            "cmd = \"exec ./run\"\n",
            "[executor]\ncmd = \"exec ./serve\"\n",
        ] {
            let text = if kind.starts_with('[') {
                format!("{BASE}{artifacts}{kind}")
            } else {
                format!("{kind}{BASE}{artifacts}")
            };
            let spec = Spec::parse("web.toml", &text).unwrap();
            let taken = spec.footprint().with_ports([PortRange::new(31000, 31001)]);
            let t = task_info(&spec, &offer(), &"web.1".into(), taken, &[31000, 31001]);
            assert_eq!(t.artifacts.len(), 1, "{kind}");
            assert_eq!(t.artifacts[0].uri, "master:site.tgz");
            assert!(t.artifacts[0].extract, "an archive is unpacked by default");
        }
    }
}

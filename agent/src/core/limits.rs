//! What each container is limited to. A command task's container gets its task's resources.
//! A custom executor's gets its own declared share (`ExecutorInfo.resources`, which the
//! master counts against the offer when it launches the executor) plus its live tasks', and
//! is resized as tasks come and go ([`Effect::Resize`]): cpu follows the sum, memory only
//! grows, since lowering a hard limit under the container's usage would make the kernel
//! OOM-kill it (Mesos's memory isolator only raises it too). A container asking for no cpu
//! gets [`MIN_CPUS`], so none runs without a cpu limit; tasks without memory are refused
//! (`tasks.rs`, and the master before).

use super::{Agent, ContainerKey, Effect, Kind};
use crate::containerizer::Limits;
use bramble_proto::Resources;

/// The cpu limit of a container that asks for none (Mesos's default executor cpus).
pub(super) const MIN_CPUS: f64 = 0.1;

/// The limits of a container for `resources`.
pub(super) fn limits_of(resources: &Resources) -> Limits {
    let cpus = resources.cpus();
    Limits {
        cpus: if cpus > 0.0 { cpus } else { MIN_CPUS },
        mem_mib: resources.mem_mib,
    }
}

impl Agent {
    /// Brings a running custom executor's limits to its share plus its live tasks' (see the
    /// module header); nothing for command tasks, containers being launched or ended.
    pub(super) fn resize_executor(&mut self, key: &ContainerKey) {
        let Some(run) = self.runs.get_mut(key) else {
            return;
        };
        let Kind::Custom { info, .. } = &run.kind else {
            return;
        };
        if run.container.is_none() || run.exited {
            return;
        }
        let mut total = info.resources.clone();
        for task in run.tasks.values().filter(|t| !t.state.is_terminal()) {
            total.add(&task.info.resources);
        }
        for task in &run.queued {
            total.add(&task.resources);
        }
        let wanted = limits_of(&total);
        let mem_mib = wanted.mem_mib.max(run.memory_limit_mib);
        let same_cpus = (wanted.cpus - run.cpus).abs() < 1e-6;
        if same_cpus && mem_mib == run.memory_limit_mib {
            return;
        }
        run.cpus = wanted.cpus;
        // Not rewritten into the run file: an executor running thousands of tasks must not
        // cost a file write per new peak; a restarted agent names the launch-time limit.
        run.memory_limit_mib = mem_mib;
        self.effects.push(Effect::Resize {
            container: key.clone(),
            limits: Limits {
                cpus: wanted.cpus,
                mem_mib,
            },
        });
    }
}

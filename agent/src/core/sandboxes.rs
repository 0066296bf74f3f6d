//! Operators' sandbox reads and listings, relayed by the master: the core says which sandbox
//! (if any) a task has and whether the task has ended; the runtime does the file I/O off the
//! state task and answers the master.

use super::{Agent, Effect, SandboxRequest};
use bramble_proto::{FrameworkId, TaskId};
use std::path::PathBuf;

impl Agent {
    /// Answers a sandbox request while the master is connected (the answer has nowhere to go
    /// otherwise).
    pub(super) fn serve_sandbox(
        &mut self,
        framework_id: FrameworkId,
        task_id: TaskId,
        request: SandboxRequest,
    ) {
        if !self.master_connected {
            return;
        }
        let sandbox = self.sandbox_of(&framework_id, &task_id);
        self.effects.push(Effect::ServeSandbox {
            framework_id,
            task_id,
            sandbox,
            request,
        });
    }

    /// A task's sandbox directory, and whether the task has ended.
    fn sandbox_of(&self, fw: &FrameworkId, task_id: &TaskId) -> Option<(PathBuf, bool)> {
        let live = self
            .find_task(fw, task_id)
            .and_then(|k| self.runs.get(&k))
            .map(|r| {
                let ended = r.tasks.get(task_id).is_none_or(|t| t.state.is_terminal());
                (r.sandbox.clone(), ended)
            });
        live.or_else(|| {
            self.finished_sandboxes
                .get(&(fw.clone(), task_id.clone()))
                .map(|p| (p.clone(), true))
        })
    }
}

//! Executor ⇄ agent (Unix socket in the executor's run directory)

use super::*;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ExecutorToAgent {
    /// First message: the ids and the one-time token come from the environment the agent
    /// gave the executor (`BRAMBLE_FRAMEWORK_ID`, `BRAMBLE_EXECUTOR_ID`,
    /// `BRAMBLE_EXECUTOR_TOKEN`); the token stops one task's process from posing as another
    /// executor on the agent's socket.
    Register {
        framework_id: FrameworkId,
        executor_id: ExecutorId,
        token: String,
    },
    /// The agent checkpoints it, answers `UpdateAck` with the update's uuid (set by the
    /// executor), and relays it to the framework.
    Update(TaskStatus),
    Message(Vec<u8>),
    /// First message on a *reconnection* (the agent restarted): `Register`'s fields plus the
    /// tasks this executor was handed and has not seen the end of acknowledged. A task the
    /// agent recovered as handed over (STAGING, no update recorded) that is not listed never
    /// reached the executor (its LaunchTask died with the agent): it is reported LOST rather
    /// than left STAGING forever, as Mesos does on executor re-registration. Last in the enum
    /// so that an older executor's `Register` still decodes.
    Reregister {
        framework_id: FrameworkId,
        executor_id: ExecutorId,
        token: String,
        known_tasks: Vec<TaskId>,
    },
}

// `LaunchTask` carries a whole `TaskInfo`; messages are encoded as soon as they are made and
// never held in bulk, so boxing it would only cost an allocation per launch.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum AgentToExecutor {
    Registered {
        agent_id: AgentId,
        framework_id: FrameworkId,
        executor: ExecutorInfo,
    },
    LaunchTask(TaskInfo),
    KillTask(TaskId),
    UpdateAck(Uuid),
    Message(Vec<u8>),
    Shutdown,
}

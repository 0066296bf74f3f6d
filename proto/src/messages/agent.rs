//! Agent ⇄ master

use super::*;

/// A task an agent reports as alive when it (re-)registers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunningTask {
    pub framework_id: FrameworkId,
    pub task: TaskInfo,
    pub state: TaskState,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum AgentToMaster {
    /// First message after the hello. `agent_id` is set when the agent has registered before
    /// and wants its old identity (and its running tasks) back.
    Register {
        agent_id: Option<AgentId>,
        hostname: String,
        resources: Resources,
        attributes: BTreeMap<String, String>,
        tasks: Vec<RunningTask>,
    },
    Heartbeat,
    /// A checkpointed update; the agent resends it until the master relays an ack.
    StatusUpdate(TaskStatus),
    /// A custom executor ended; the resources charged for it are free again.
    ExecutorExited {
        framework_id: FrameworkId,
        executor_id: ExecutorId,
        /// The executor process's wait status (exit code, or 128 + signal), when known.
        status: Option<i32>,
    },
    /// Answer to `MasterToAgent::ReadSandbox`.
    SandboxData {
        request: u64,
        result: Result<SandboxChunk, String>,
    },
    /// Opaque bytes from an executor to its scheduler (best effort).
    ExecutorMessage {
        framework_id: FrameworkId,
        executor_id: ExecutorId,
        data: Vec<u8>,
    },
    /// Answer to `MasterToAgent::ListSandbox`.
    SandboxListing {
        request: u64,
        result: Result<SandboxListing, String>,
    },
    /// Answer to `MasterToAgent::Image`: the piece was taken (or why not).
    ImageReply {
        request: u64,
        result: Result<ImageAck, String>,
    },
    /// Read a file of the master's artifacts directory from `offset` (an artifact
    /// `master:NAME` a task fetches, `bramble_proto::artifact`); answered with
    /// `MasterToAgent::ArtifactData`, the next request only after the answer.
    ArtifactRead {
        request: u64,
        name: String,
        offset: u64,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum MasterToAgent {
    Registered {
        agent_id: AgentId,
        heartbeat_interval_ms: u64,
    },
    HeartbeatAck,
    RunTasks {
        framework_id: FrameworkId,
        framework_name: String,
        tasks: Vec<TaskInfo>,
    },
    KillTask {
        framework_id: FrameworkId,
        task_id: TaskId,
    },
    /// The framework acknowledged this update: the agent may forget it.
    Acknowledge {
        framework_id: FrameworkId,
        task_id: TaskId,
        uuid: Uuid,
    },
    FrameworkMessage {
        framework_id: FrameworkId,
        executor_id: ExecutorId,
        data: Vec<u8>,
    },
    /// Stop one executor (a scheduler's SHUTDOWN call): it is told to shut down and killed
    /// after its grace period.
    ShutdownExecutor {
        framework_id: FrameworkId,
        executor_id: ExecutorId,
    },
    /// The framework is gone: kill its tasks and executors.
    ShutdownFramework {
        framework_id: FrameworkId,
    },
    /// Read part of a sandbox file for an operator; answered with `SandboxData`.
    ReadSandbox {
        request: u64,
        read: SandboxRead,
    },
    /// List a directory of a task's sandbox for an operator; answered with `SandboxListing`.
    ListSandbox {
        request: u64,
        list: SandboxList,
    },
    /// A piece of an image the master streams to the agent (`bramble images import|load`);
    /// answered with `ImageReply`, the next chunk only after the answer (flow control).
    Image {
        request: u64,
        piece: ImagePiece,
    },
    /// Answer to `AgentToMaster::ArtifactRead`.
    ArtifactData {
        request: u64,
        result: Result<ArtifactChunk, String>,
    },
}

/// A piece of a file of the master's artifacts directory.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ArtifactChunk {
    /// The whole file's size when this piece was read (a file that changes size while it is
    /// fetched fails the fetch).
    pub size: u64,
    /// At most [`crate::image_transfer::CHUNK_BYTES`] from the requested offset; empty at the
    /// end of the file.
    pub data: Vec<u8>,
}

//! [`OperatorClient`]: one QUIC connection to the master with the operator certificate, and
//! request/response calls on its control stream (the master answers each call before the
//! next is read, so no call ids are needed).

use crate::error::ClientError;
use bramble_proto::framework_state::{StateEntry, StateWrite};
use bramble_proto::handshake::{say_hello, HandshakeError};
use bramble_proto::identity::{Credentials, Role};
use bramble_proto::image_transfer::{file_digest, CHUNK_BYTES};
use bramble_proto::masters::MAX_REDIRECTS;
use bramble_proto::messages::{
    ClusterState, ImageFormat, ImagePushResult, ImageSpec, ImageUpload, MastersView, OperatorCall,
    OperatorReply, PeerKind, SandboxChunk, SandboxRead, StateCursor, StatePage, MAX_SANDBOX_READ,
};
use bramble_proto::transport::{
    client_endpoint, connect, unspecified_for, ControlStream, TransportError,
};
use bramble_proto::{AgentId, FrameworkId, TaskId};
use std::io::Write;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;
use tracing::info;

/// How long a dial waits for the master's handshake: QUIC's idle timeout, so a master that is
/// there but slow is not cut short, and a wrong address is said in about ten seconds.
pub const CONNECT_TIMEOUT: Duration = bramble_proto::transport::IDLE_TIMEOUT;

/// How long each dial waits when there are several masters to try: a dead one should not
/// hold up the next, which may be the leader.
pub const SEVERAL_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// How often a followed sandbox file is read again once its end is reached.
const FOLLOW_POLL: Duration = Duration::from_millis(500);

/// Items per page when [`OperatorClient::state`] fetches the whole state.
pub const STATE_PAGE: u32 = 1000;

/// Dials `master` and says hello as `kind`, following a standby's redirect to the leader (at
/// most [`MAX_REDIRECTS`] in a row); the leader's connection and control stream once it has
/// welcomed us.
pub(crate) async fn hello_following(
    creds: &Credentials,
    kind: PeerKind,
    master: SocketAddr,
    timeout: Duration,
) -> Result<(quinn::Endpoint, quinn::Connection, ControlStream), ClientError> {
    let mut master = master;
    let mut redirects = 0;
    loop {
        let (endpoint, conn) = dial(creds, master, timeout).await?;
        match say_hello(&conn, kind).await {
            Ok((ctl, _)) => return Ok((endpoint, conn, ctl)),
            Err(HandshakeError::Refused(reason)) => return Err(ClientError::Refused(reason)),
            Err(HandshakeError::NotLeader(Some(leader))) if redirects < MAX_REDIRECTS => {
                conn.close(quinn::VarInt::from_u32(0), b"following the leader");
                redirects += 1;
                info!(
                    "master {master} is a standby; following leader {} at {}",
                    leader.id, leader.address
                );
                master = resolve_leader(&leader.address, master).await?;
            }
            Err(HandshakeError::NotLeader(leader)) => {
                conn.close(quinn::VarInt::from_u32(0), b"no leader");
                return Err(ClientError::NotLeader {
                    addr: master,
                    leader: leader.map(|l| format!("master {} at {}", l.id, l.address)),
                });
            }
            Err(other) => return Err(ClientError::Hello(other)),
        }
    }
}

/// Dials `master` with `creds` on an endpoint of its address family.
async fn dial(
    creds: &Credentials,
    master: SocketAddr,
    timeout: Duration,
) -> Result<(quinn::Endpoint, quinn::Connection), ClientError> {
    let endpoint =
        client_endpoint(creds, unspecified_for(master)).map_err(ClientError::Endpoint)?;
    let no_answer = ClientError::NoAnswer {
        addr: master,
        waited: timeout,
    };
    match tokio::time::timeout(timeout, connect(&endpoint, master)).await {
        Err(_) => Err(no_answer),
        Ok(Err(TransportError::Connection {
            source: quinn::ConnectionError::TimedOut,
            ..
        })) => Err(no_answer),
        Ok(Err(source)) => Err(ClientError::Connect {
            addr: master,
            source,
        }),
        Ok(Ok(conn)) => Ok((endpoint, conn)),
    }
}

/// The leader's address as a standby named it (`HOST:PORT`), resolved now; of the same
/// address family as `from` when it has one.
pub(crate) async fn resolve_leader(
    hostport: &str,
    from: SocketAddr,
) -> Result<SocketAddr, ClientError> {
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host(hostport)
        .await
        .map_err(|source| ClientError::Resolve {
            hostport: hostport.to_owned(),
            source,
        })?
        .collect();
    addrs
        .iter()
        .find(|a| a.is_ipv4() == from.is_ipv4())
        .or(addrs.first())
        .copied()
        .ok_or_else(|| ClientError::NoAddress(hostport.to_owned()))
}

/// What the master's front panel shows.
#[derive(Debug, Clone)]
pub struct Panel {
    /// The frame on the glass, as a PNG.
    pub png: Vec<u8>,
    /// The panel state behind it (JSON), for offline rendering.
    pub state_json: String,
}

pub struct OperatorClient {
    conn: quinn::Connection,
    ctl: ControlStream,
    // Kept alive with the connection.
    _endpoint: quinn::Endpoint,
}

impl OperatorClient {
    /// Dials the master at `master` with the operator certificate in `cluster` and says hello.
    pub async fn connect(cluster: &Path, master: SocketAddr) -> Result<Self, ClientError> {
        Self::connect_as(cluster, None, master).await
    }

    /// [`OperatorClient::connect`] as operator principal `principal` (its certificate from
    /// `bramble cluster add-principal`); `None` is the shared operator certificate.
    pub async fn connect_as(
        cluster: &Path,
        principal: Option<&str>,
        master: SocketAddr,
    ) -> Result<Self, ClientError> {
        Self::connect_within(cluster, principal, master, CONNECT_TIMEOUT).await
    }

    /// [`OperatorClient::connect_as`], giving up with [`ClientError::NoAnswer`] when the
    /// handshake has not completed within `timeout`. A standby master's redirect to the
    /// leader is followed (at most [`MAX_REDIRECTS`] in a row).
    async fn connect_within(
        cluster: &Path,
        principal: Option<&str>,
        master: SocketAddr,
        timeout: Duration,
    ) -> Result<Self, ClientError> {
        let creds = Credentials::load_as(cluster, principal, Role::Operator).map_err(|source| {
            ClientError::Credentials {
                dir: cluster.to_path_buf(),
                source,
            }
        })?;
        let (endpoint, conn, ctl) =
            hello_following(&creds, PeerKind::Operator, master, timeout).await?;
        Ok(Self {
            conn,
            ctl,
            _endpoint: endpoint,
        })
    }

    /// The master this client is connected to (the leader, after any redirect).
    pub fn master(&self) -> SocketAddr {
        self.conn.remote_address()
    }

    /// One call, its reply as the master sent it.
    pub async fn call(&mut self, call: OperatorCall) -> Result<OperatorReply, ClientError> {
        self.ctl.send(&call).await?;
        Ok(self.ctl.recv().await?)
    }

    /// The cluster as the master sees it, fetched [`STATE_PAGE`] items at a time (one reply
    /// would not fit a frame on a big cluster; see [`crate::paging`]).
    pub async fn state(&mut self) -> Result<ClusterState, ClientError> {
        self.state_in_pages(STATE_PAGE).await
    }

    /// [`OperatorClient::state`], `limit` items a page.
    pub async fn state_in_pages(&mut self, limit: u32) -> Result<ClusterState, ClientError> {
        crate::paging::whole_state(self, limit).await
    }

    /// One page of the cluster's state: up to `limit` items after `after` (`None`: the
    /// first page, with the rest of the state and the counts).
    pub async fn state_page(
        &mut self,
        after: Option<StateCursor>,
        limit: u32,
    ) -> Result<StatePage, ClientError> {
        match self
            .call(OperatorCall::GetStatePage { after, limit })
            .await?
        {
            OperatorReply::StatePage(page) => Ok(*page),
            other => Err(not_the_answer(other)),
        }
    }

    /// Up to [`MAX_SANDBOX_READ`] bytes of `path` in the task's sandbox from `offset`.
    pub async fn read_sandbox(
        &mut self,
        framework_id: &FrameworkId,
        task_id: &TaskId,
        path: &str,
        offset: u64,
    ) -> Result<SandboxChunk, ClientError> {
        let read = SandboxRead {
            framework_id: framework_id.clone(),
            task_id: task_id.clone(),
            path: path.to_string(),
            offset,
            max_bytes: MAX_SANDBOX_READ,
        };
        match self.call(OperatorCall::ReadSandbox(read)).await? {
            OperatorReply::Sandbox(chunk) => Ok(chunk),
            other => Err(not_the_answer(other)),
        }
    }

    /// Copies a sandbox file (`stdout`, `stderr`, ...) to `out` from its start; with `follow`,
    /// keeps copying what the task writes until it ends.
    pub async fn copy_sandbox_file(
        &mut self,
        framework: &FrameworkId,
        task: &TaskId,
        file: &str,
        follow: bool,
        out: &mut impl Write,
    ) -> Result<(), ClientError> {
        let mut offset = 0;
        loop {
            let chunk = self
                .read_sandbox(framework, task, file, offset)
                .await
                .map_err(|e| ClientError::ReadSandbox {
                    file: file.to_owned(),
                    task: task.clone(),
                    source: Box::new(e),
                })?;
            out.write_all(&chunk.data)
                .and_then(|()| out.flush())
                .map_err(|source| ClientError::WriteOut {
                    file: file.to_owned(),
                    task: task.clone(),
                    source,
                })?;
            offset += chunk.data.len() as u64;
            let more_now = offset < chunk.size;
            if more_now {
                continue;
            }
            if !follow || chunk.task_ended {
                return Ok(());
            }
            tokio::time::sleep(FOLLOW_POLL).await;
        }
    }

    /// Ends framework `framework_id` now: the master kills its tasks and removes it for good.
    pub async fn teardown(&mut self, framework_id: FrameworkId) -> Result<(), ClientError> {
        match self
            .call(OperatorCall::TeardownFramework { framework_id })
            .await?
        {
            OperatorReply::Done => Ok(()),
            other => Err(not_the_answer(other)),
        }
    }

    /// Drains agent `agent_id` (`drain`: no more offers from it, durably, and frameworks are
    /// told to move what runs there) or undrains it (offered again).
    pub async fn drain_agent(&mut self, agent_id: AgentId, drain: bool) -> Result<(), ClientError> {
        match self
            .call(OperatorCall::DrainAgent { agent_id, drain })
            .await?
        {
            OperatorReply::Done => Ok(()),
            other => Err(not_the_answer(other)),
        }
    }

    /// The replicated group's masters as the leader sees them (a single master answers with
    /// an error saying it is not replicated).
    pub async fn masters(&mut self) -> Result<MastersView, ClientError> {
        match self.call(OperatorCall::GetMasters).await? {
            OperatorReply::Masters(view) => Ok(view),
            other => Err(not_the_answer(other)),
        }
    }

    /// Adds master `id` at replication address `address` (`HOST:PORT`): the leader answers
    /// once it has caught up and votes (which may take a while: a snapshot to send).
    pub async fn add_master(
        &mut self,
        id: u64,
        address: String,
    ) -> Result<MastersView, ClientError> {
        match self.call(OperatorCall::AddMaster { id, address }).await? {
            OperatorReply::Masters(view) => Ok(view),
            other => Err(not_the_answer(other)),
        }
    }

    /// Removes master `id` from the group.
    pub async fn remove_master(&mut self, id: u64) -> Result<MastersView, ClientError> {
        match self.call(OperatorCall::RemoveMaster { id }).await? {
            OperatorReply::Masters(view) => Ok(view),
            other => Err(not_the_answer(other)),
        }
    }

    /// Kills a task of `framework_id`; its terminal update goes to the framework as usual.
    pub async fn kill(
        &mut self,
        framework_id: FrameworkId,
        task_id: TaskId,
    ) -> Result<(), ClientError> {
        match self
            .call(OperatorCall::KillTask {
                framework_id,
                task_id,
            })
            .await?
        {
            OperatorReply::Done => Ok(()),
            other => Err(not_the_answer(other)),
        }
    }

    /// What the master's front panel shows now.
    pub async fn panel(&mut self) -> Result<Panel, ClientError> {
        match self.call(OperatorCall::GetPanel).await? {
            OperatorReply::Panel { png, state_json } => Ok(Panel { png, state_json }),
            other => Err(not_the_answer(other)),
        }
    }

    /// Framework `framework_id`'s key/value state, the keys starting with `prefix`.
    pub async fn read_framework_state(
        &mut self,
        framework_id: &FrameworkId,
        prefix: &str,
    ) -> Result<Vec<StateEntry>, ClientError> {
        let call = OperatorCall::ReadFrameworkState {
            framework_id: framework_id.clone(),
            prefix: prefix.to_string(),
        };
        match self.call(call).await? {
            OperatorReply::FrameworkState(entries) => Ok(entries),
            other => Err(not_the_answer(other)),
        }
    }

    /// Changes framework `framework_id`'s key/value state on its behalf: the entry as written
    /// (`None` once deleted), or the master's refusal (a version mismatch, a limit) as
    /// [`ClientError::Master`].
    pub async fn write_framework_state(
        &mut self,
        framework_id: &FrameworkId,
        write: StateWrite,
    ) -> Result<Option<StateEntry>, ClientError> {
        let call = OperatorCall::WriteFrameworkState {
            framework_id: framework_id.clone(),
            write,
        };
        match self.call(call).await? {
            OperatorReply::StateWritten(entry) => Ok(entry),
            other => Err(not_the_answer(other)),
        }
    }

    /// Uploads the image file at `path` (described by `spec` but for its size and digest,
    /// filled in here) to the master in acknowledged chunks; the master streams it to its
    /// agents (only `agent`, when given) and answers how each fared.
    pub async fn upload_image(
        &mut self,
        path: &Path,
        format: ImageFormat,
        name: Option<String>,
        architecture: Option<String>,
        agent: Option<AgentId>,
    ) -> Result<Vec<ImagePushResult>, ClientError> {
        use tokio::io::AsyncReadExt;
        let read_err = |source| ClientError::ReadImage {
            path: path.to_path_buf(),
            source,
        };
        let owned = path.to_path_buf();
        let (sha256, size) = tokio::task::spawn_blocking(move || file_digest(&owned))
            .await
            .map_err(|e| read_err(std::io::Error::other(e)))?
            .map_err(read_err)?;
        let spec = ImageSpec {
            format,
            name,
            architecture,
            size,
            sha256,
        };
        let mut file = tokio::fs::File::open(path).await.map_err(read_err)?;
        self.upload_piece(ImageUpload::Begin { spec, agent })
            .await?;
        let mut offset = 0u64;
        let mut buf = vec![0u8; CHUNK_BYTES];
        while offset < size {
            let want = CHUNK_BYTES.min((size - offset) as usize);
            file.read_exact(&mut buf[..want]).await.map_err(read_err)?;
            let data = buf[..want].to_vec();
            self.upload_piece(ImageUpload::Chunk { offset, data })
                .await?;
            offset += want as u64;
        }
        match self
            .call(OperatorCall::ImageUpload(ImageUpload::End))
            .await?
        {
            OperatorReply::ImagePushed(results) => Ok(results),
            other => Err(not_the_answer(other)),
        }
    }

    async fn upload_piece(&mut self, piece: ImageUpload) -> Result<u64, ClientError> {
        match self.call(OperatorCall::ImageUpload(piece)).await? {
            OperatorReply::ImageReceived { offset } => Ok(offset),
            other => Err(not_the_answer(other)),
        }
    }

    pub fn close(self) {
        self.conn.close(quinn::VarInt::from_u32(0), b"done");
    }
}

/// A reply that is not the one the call asked for: the master's error, or a surprise.
fn not_the_answer(reply: OperatorReply) -> ClientError {
    match reply {
        OperatorReply::Error { message } => ClientError::Master(message),
        other => ClientError::Unexpected(format!("{other:?}")),
    }
}

/// The framework that owns `task`: `framework` when given, else the one task of that id the
/// master knows (a finished task may be forgotten, hence the hint to name its framework).
pub fn owner_of(
    state: &ClusterState,
    task: &TaskId,
    framework: Option<&FrameworkId>,
) -> Result<FrameworkId, ClientError> {
    if let Some(f) = framework {
        return Ok(f.clone());
    }
    let mut owners: Vec<&FrameworkId> = state
        .tasks
        .iter()
        .filter(|t| &t.id == task)
        .map(|t| &t.framework_id)
        .collect();
    if owners.is_empty() {
        // A finished task the master still remembers: its latest run (ids may be reused).
        owners.extend(
            state
                .completed_tasks
                .iter()
                .rev()
                .find(|t| &t.id == task)
                .map(|t| &t.framework_id),
        );
    }
    match owners.as_slice() {
        [one] => Ok((*one).clone()),
        [] => Err(ClientError::UnknownTask(task.clone())),
        _ => Err(ClientError::AmbiguousTask(task.clone())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bramble_proto::messages::TaskSummary;
    use bramble_proto::{Resources, TaskState};

    fn task(id: &str, framework: &str) -> TaskSummary {
        TaskSummary {
            id: id.into(),
            name: id.into(),
            framework_id: framework.into(),
            agent_id: "a".into(),
            state: TaskState::Running,
            message: String::new(),
            resources: Resources::default(),
            reason: None,
            launched_at: 0.0,
            started_at: None,
            ended_at: None,
        }
    }

    fn state(tasks: Vec<TaskSummary>) -> ClusterState {
        ClusterState {
            cluster_id: "c".into(),
            agents: Vec::new(),
            frameworks: Vec::new(),
            tasks,
            jobs: Vec::new(),
            offers_outstanding: 0,
            completed_tasks: Vec::new(),
            offers: Vec::new(),
        }
    }

    #[tokio::test]
    async fn a_silent_address_says_nothing_answered_over_quic_and_what_to_try() {
        let dir = tempfile::tempdir().expect("tempdir");
        bramble_proto::identity::init_cluster(dir.path(), "t").expect("init");
        // A UDP socket that is bound but never answers, like a port no master listens on
        // behind a firewall that drops.
        let silent = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
        let addr = silent.local_addr().expect("addr");
        let waited = Duration::from_millis(300);
        let err = match OperatorClient::connect_within(dir.path(), None, addr, waited).await {
            Err(e) => e,
            Ok(_) => panic!("nothing listens there"),
        };
        let msg = err.to_string();
        assert!(
            msg.starts_with(&format!("nothing answered at {addr} over QUIC")),
            "{msg}"
        );
        assert!(
            msg.contains("5051") && msg.contains("BRAMBLE_MASTER"),
            "{msg}"
        );
        assert!(msg.contains("mDNS"), "{msg}");
    }

    #[test]
    fn a_task_s_owner_is_found_named_or_refused_when_ambiguous() {
        let s = state(vec![
            task("t1", "fw-a"),
            task("t2", "fw-a"),
            task("t2", "fw-b"),
        ]);
        assert_eq!(
            owner_of(&s, &"t1".into(), None).expect("one owner"),
            FrameworkId::from("fw-a")
        );
        assert!(matches!(
            owner_of(&s, &"t2".into(), None),
            Err(ClientError::AmbiguousTask(_))
        ));
        assert!(matches!(
            owner_of(&s, &"gone".into(), None),
            Err(ClientError::UnknownTask(_))
        ));
        let named = FrameworkId::from("fw-b");
        assert_eq!(
            owner_of(&s, &"t2".into(), Some(&named)).expect("named"),
            named
        );
    }

    #[test]
    fn a_finished_task_s_owner_is_found_among_the_completed() {
        let mut s = state(vec![task("live", "fw-a")]);
        s.completed_tasks = vec![task("done", "fw-old"), task("done", "fw-new")];
        assert_eq!(
            owner_of(&s, &"done".into(), None).expect("finished task found"),
            FrameworkId::from("fw-new"),
            "the latest run of a reused id"
        );
        assert!(matches!(
            owner_of(&s, &"never".into(), None),
            Err(ClientError::UnknownTask(_))
        ));
    }

    #[test]
    fn a_reply_that_is_not_the_answer_says_what_came() {
        let err = not_the_answer(OperatorReply::Error {
            message: "no such task".into(),
        });
        assert_eq!(err.to_string(), "no such task");
        let err = not_the_answer(OperatorReply::Done);
        assert!(
            err.to_string()
                .starts_with("unexpected answer from the master"),
            "{err}"
        );
    }
}

//! The operator's connection to the master: one QUIC connection with the operator
//! certificate, request/response calls on its control stream.

use anyhow::{bail, Context};
use bramble_proto::identity::{Credentials, Role};
use bramble_proto::messages::{
    ClusterState, Hello, HelloReply, OperatorCall, OperatorReply, PeerKind, SandboxChunk,
    SandboxRead,
};
use bramble_proto::transport::{client_endpoint, connect, unspecified_for, ControlStream};
use bramble_proto::{FrameworkId, TaskId, PROTOCOL_VERSION, SOFTWARE_VERSION};
use std::net::SocketAddr;
use std::path::Path;

pub struct OperatorClient {
    conn: quinn::Connection,
    ctl: ControlStream,
    // Kept alive with the connection.
    _endpoint: quinn::Endpoint,
}

impl OperatorClient {
    pub async fn connect(cluster: &Path, master: SocketAddr) -> anyhow::Result<Self> {
        let creds = Credentials::load(cluster, Role::Operator).with_context(|| {
            format!(
                "loading the operator certificate from {} (operator commands need operator.pem/operator.key)",
                cluster.display()
            )
        })?;
        let endpoint = client_endpoint(&creds, unspecified_for(master))?;
        let conn = connect(&endpoint, master)
            .await
            .with_context(|| format!("connecting to the master at {master}"))?;
        let mut ctl = ControlStream::open(&conn).await?;
        ctl.send(&Hello {
            protocol_version: PROTOCOL_VERSION,
            software_version: SOFTWARE_VERSION.to_string(),
            kind: PeerKind::Operator,
        })
        .await?;
        match ctl.recv::<HelloReply>().await? {
            HelloReply::Welcome { .. } => Ok(Self {
                conn,
                ctl,
                _endpoint: endpoint,
            }),
            HelloReply::Refused { reason } => bail!("the master refused this operator: {reason}"),
        }
    }

    pub async fn call(&mut self, call: OperatorCall) -> anyhow::Result<OperatorReply> {
        self.ctl.send(&call).await?;
        Ok(self.ctl.recv().await?)
    }

    pub async fn state(&mut self) -> anyhow::Result<ClusterState> {
        match self.call(OperatorCall::GetState).await? {
            OperatorReply::State(s) => Ok(s),
            OperatorReply::Error { message } => bail!("{message}"),
            other => bail!("unexpected answer from the master: {other:?}"),
        }
    }

    pub async fn read_sandbox(
        &mut self,
        framework_id: &FrameworkId,
        task_id: &TaskId,
        path: &str,
        offset: u64,
    ) -> anyhow::Result<SandboxChunk> {
        let read = SandboxRead {
            framework_id: framework_id.clone(),
            task_id: task_id.clone(),
            path: path.to_string(),
            offset,
            max_bytes: bramble_proto::messages::MAX_SANDBOX_READ,
        };
        match self.call(OperatorCall::ReadSandbox(read)).await? {
            OperatorReply::Sandbox(chunk) => Ok(chunk),
            OperatorReply::Error { message } => bail!("{message}"),
            other => bail!("unexpected answer from the master: {other:?}"),
        }
    }

    pub async fn kill(&mut self, framework_id: FrameworkId, task_id: TaskId) -> anyhow::Result<()> {
        match self
            .call(OperatorCall::KillTask {
                framework_id,
                task_id,
            })
            .await?
        {
            OperatorReply::Done => Ok(()),
            OperatorReply::Error { message } => bail!("{message}"),
            other => bail!("unexpected answer from the master: {other:?}"),
        }
    }

    pub fn close(self) {
        self.conn.close(quinn::VarInt::from_u32(0), b"done");
    }
}

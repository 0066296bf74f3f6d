//! The agent's Unix socket, where custom executors connect back after launch.
//!
//! One socket serves every executor; each connection proves which executor it is with the
//! one-time token the agent put in that executor's environment. Executor traffic stays on the
//! machine (no network, no TLS needed) and uses the same framed codec as QUIC streams.

use crate::core;
use crate::runtime::{ExecutorTx, Input};
use bramble_proto::codec::{FrameReader, FrameWriter, MAX_BATCH};
use bramble_proto::messages::{AgentToExecutor, ExecutorToAgent};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{mpsc, oneshot, watch};
use tracing::{debug, warn};

const REGISTER_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest socket path Linux accepts (sun_path is 108 bytes including the NUL).
const MAX_SOCKET_PATH: usize = 107;

#[derive(Debug, thiserror::Error)]
pub enum SocketError {
    #[error("executor socket path {path} is {len} bytes; Unix sockets allow at most {MAX_SOCKET_PATH}: use a shorter work dir")]
    PathTooLong { path: String, len: usize },
    #[error("binding executor socket {path}: {source}")]
    Bind {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

/// Binds the socket, replacing a stale one left by a previous agent.
pub fn bind(path: &Path) -> Result<UnixListener, SocketError> {
    let shown = path.display().to_string();
    let len = path.as_os_str().len();
    if len > MAX_SOCKET_PATH {
        return Err(SocketError::PathTooLong { path: shown, len });
    }
    if path.exists() {
        let _ = std::fs::remove_file(path);
    }
    UnixListener::bind(path).map_err(|source| SocketError::Bind {
        path: shown,
        source,
    })
}

pub async fn serve(
    listener: UnixListener,
    inputs: mpsc::Sender<Input>,
    mut shutdown: watch::Receiver<bool>,
) {
    let serial = Arc::new(AtomicU64::new(1));
    loop {
        let stream = tokio::select! {
            _ = shutdown.changed() => return,
            accepted = listener.accept() => match accepted {
                Ok((s, _)) => s,
                Err(e) => {
                    warn!("executor socket accept failed: {e}");
                    continue;
                }
            },
        };
        let inputs = inputs.clone();
        let serial = serial.fetch_add(1, Ordering::Relaxed);
        tokio::spawn(async move { serve_executor(stream, serial, inputs).await });
    }
}

async fn serve_executor(stream: UnixStream, serial: u64, inputs: mpsc::Sender<Input>) {
    let (read, write) = stream.into_split();
    let mut reader = FrameReader::new(read);
    let mut writer = FrameWriter::new(write);
    let first = tokio::time::timeout(REGISTER_TIMEOUT, reader.recv::<ExecutorToAgent>()).await;
    let (framework_id, executor_id, token, known_tasks) = match first {
        Ok(Ok(ExecutorToAgent::Register {
            framework_id,
            executor_id,
            token,
        })) => (framework_id, executor_id, token, None),
        Ok(Ok(ExecutorToAgent::Reregister {
            framework_id,
            executor_id,
            token,
            known_tasks,
        })) => (framework_id, executor_id, token, Some(known_tasks)),
        Ok(Ok(_)) => {
            warn!("executor connection spoke before registering; closing it");
            return;
        }
        Ok(Err(e)) => {
            warn!("executor connection closed before registering: {e}");
            return;
        }
        Err(_) => {
            warn!("executor connection did not register within {REGISTER_TIMEOUT:?}; closing it");
            return;
        }
    };
    let (tx, mut rx) = mpsc::channel::<AgentToExecutor>(1024);
    let (reply, answer) = oneshot::channel();
    let connected = Input::ExecutorConnected {
        serial,
        framework_id: framework_id.clone(),
        executor_id: executor_id.clone(),
        auth: core::ExecutorAuth::Token { token, known_tasks },
        tx: ExecutorTx::Socket(tx),
        reply,
    };
    if inputs.send(connected).await.is_err() {
        return;
    }
    let container = match answer.await {
        Ok(Ok(admission)) => admission.container,
        Ok(Err(reason)) => {
            warn!(framework = %framework_id, executor = %executor_id, "refusing executor registration: {reason}");
            return;
        }
        Err(_) => return,
    };
    let writer_task = tokio::spawn(async move {
        // A burst's launches leave in one write (see `codec`).
        let mut batch = Vec::with_capacity(MAX_BATCH);
        while rx.recv_many(&mut batch, MAX_BATCH).await > 0 {
            let sent = writer.send_batch(&batch).await;
            batch.clear();
            if let Err(e) = sent {
                debug!("writing to executor failed: {e}");
                return;
            }
        }
    });
    loop {
        match reader.recv::<ExecutorToAgent>().await {
            Ok(msg) => {
                let input = Input::Core(core::Input::FromExecutor {
                    container: container.clone(),
                    msg,
                });
                if inputs.send(input).await.is_err() {
                    break;
                }
            }
            Err(e) => {
                debug!(container = %container, "executor connection ended: {e}");
                break;
            }
        }
    }
    writer_task.abort();
    let _ = inputs
        .send(Input::Core(core::Input::ExecutorDisconnected {
            container,
            serial,
        }))
        .await;
}

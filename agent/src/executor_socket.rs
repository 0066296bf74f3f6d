//! The agent's Unix socket, where custom executors connect back after launch.
//!
//! One socket serves every executor; each connection proves which executor it is with the
//! one-time token the agent put in that executor's environment. Executor traffic stays on the
//! machine (no network, no TLS needed) and uses the same framed codec as QUIC streams.
//!
//! Any process that can reach the socket can connect, and the agent runs as root outside
//! every cgroup, so what a connection may cost is bounded before it says who it is: a small
//! frame limit until it registers, a registration deadline, and at most
//! [`MAX_UNREGISTERED`] connections waiting to register (a newcomer beyond that pushes out
//! the oldest; a real executor registers within milliseconds of connecting, so only silent
//! connections are pushed out). After registration its messages are held to the input limit
//! (`codec::MAX_INPUT_BYTES`): an update or message the agent could not relay to the master
//! in one frame is refused here, closing that executor's connection, never the master link.

use crate::core;
use crate::runtime::{ExecutorTx, Input};
use bramble_proto::codec::{CodecError, FrameReader, FrameWriter, MAX_BATCH, MAX_INPUT_BYTES};
use bramble_proto::messages::{AgentToExecutor, ExecutorToAgent};
use bramble_proto::queue;
use std::collections::VecDeque;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{mpsc, oneshot, watch};
use tracing::{debug, warn};

/// How long a new connection has to send its `Register`.
const REGISTER_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest frame before registration: a `Register` is a hundred bytes; a `Reregister` lists
/// the tasks the executor still has, thousands of ids.
const REGISTRATION_MAX_BYTES: usize = 64 * 1024;
/// Connections waiting to register at once.
pub const MAX_UNREGISTERED: usize = 32;
/// Messages and bytes queued towards one executor (launches, kills, framework messages).
const EXECUTOR_QUEUE: usize = 1024;
const EXECUTOR_QUEUE_BYTES: usize = 8 << 20;
/// Most bytes one write to an executor carries.
const MAX_BATCH_BYTES: usize = 2 << 20;
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
    let unregistered = Unregistered::default();
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
        let waiting = unregistered.enter(serial);
        tokio::spawn(async move { serve_executor(stream, serial, waiting, inputs).await });
    }
}

/// Connections that have not registered yet, oldest first, each with the sender that pushes
/// it out.
#[derive(Clone, Default)]
struct Unregistered {
    queue: Arc<Mutex<VecDeque<PushOut>>>,
}

/// A waiting connection's serial and the sender that pushes it out.
type PushOut = (u64, oneshot::Sender<()>);

impl Unregistered {
    /// Counts a new connection in, pushing out the oldest beyond [`MAX_UNREGISTERED`].
    fn enter(&self, serial: u64) -> Waiting {
        let (push_out, pushed_out) = oneshot::channel();
        let mut queue = self.lock();
        queue.push_back((serial, push_out));
        while queue.len() > MAX_UNREGISTERED {
            if let Some((_, oldest)) = queue.pop_front() {
                let _ = oldest.send(());
            }
        }
        Waiting {
            list: self.clone(),
            serial,
            pushed_out,
        }
    }

    fn lock(&self) -> MutexGuard<'_, VecDeque<PushOut>> {
        // A plain queue; a panic elsewhere cannot leave it half-updated.
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// One connection's place among the unregistered, left when dropped.
struct Waiting {
    list: Unregistered,
    serial: u64,
    pushed_out: oneshot::Receiver<()>,
}

impl Drop for Waiting {
    fn drop(&mut self) {
        self.list.lock().retain(|(s, _)| *s != self.serial);
    }
}

async fn serve_executor(
    stream: UnixStream,
    serial: u64,
    mut waiting: Waiting,
    inputs: mpsc::Sender<Input>,
) {
    let (read, write) = stream.into_split();
    let mut reader = FrameReader::with_limit(read, REGISTRATION_MAX_BYTES);
    let mut writer = FrameWriter::new(write);
    let first = tokio::select! {
        first = tokio::time::timeout(REGISTER_TIMEOUT, reader.recv::<ExecutorToAgent>()) => first,
        _ = &mut waiting.pushed_out => {
            warn!("executor connection pushed out: {MAX_UNREGISTERED} newer connections arrived before it registered");
            return;
        }
    };
    drop(waiting);
    reader.set_limit(MAX_INPUT_BYTES);
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
    let (tx, mut rx) = queue::channel::<AgentToExecutor>(EXECUTOR_QUEUE, EXECUTOR_QUEUE_BYTES);
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
        while rx.recv_many(&mut batch, MAX_BATCH, MAX_BATCH_BYTES).await > 0 {
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
            // An oversized or undecodable frame: this executor is dropped (it may reconnect);
            // nothing of it reaches the master link.
            Err(e @ (CodecError::FrameTooLarge { .. } | CodecError::Decode { .. })) => {
                warn!(container = %container, "closing executor connection: {e}");
                break;
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

#[cfg(test)]
mod tests {
    use super::*;
    use bramble_proto::codec::{encode_frame, MAX_FRAME_BYTES};
    use std::io::Write;
    use tokio::io::AsyncWriteExt;

    /// This process's resident set, in bytes.
    fn rss_bytes() -> usize {
        let status = std::fs::read_to_string("/proc/self/status").expect("read /proc/self/status");
        let kib: usize = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .expect("VmRSS in /proc/self/status");
        kib * 1024
    }

    const HALF_OPEN: usize = 1000;
    /// "A few MiB": what 1,000 stalled connections may move the agent's RSS by.
    const RSS_BUDGET: usize = 8 << 20;

    /// One stalled connection of four kinds: silent, half a length prefix, a prefix for a
    /// frame under the registration limit with ten bytes of it, a prefix for a frame just
    /// under the full frame limit with ten bytes of it.
    fn stall(path: &Path, kind: usize) -> std::os::unix::net::UnixStream {
        let mut s = std::os::unix::net::UnixStream::connect(path).expect("connect");
        let claim = |len: usize| {
            let mut bytes = (len as u32).to_be_bytes().to_vec();
            bytes.extend_from_slice(&[0xab; 10]);
            bytes
        };
        let bytes = match kind % 4 {
            0 => Vec::new(),
            1 => vec![0, 0],
            2 => claim(60_000),
            _ => claim(MAX_FRAME_BYTES - 1),
        };
        // The peer may already have pushed this connection out; that is the point.
        let _ = s.write_all(&bytes);
        s
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_thousand_half_open_connections_cost_little_and_a_real_executor_still_registers() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("executor.sock");
        let listener = bind(&path).expect("bind");
        let (inputs, mut inputs_rx) = mpsc::channel(16);
        let (_shutdown, shutdown_rx) = watch::channel(false);
        let server = tokio::spawn(serve(listener, inputs, shutdown_rx));
        // Warm up the runtime and the allocator so the baseline is not the first connection.
        let warm = path.clone();
        tokio::task::spawn_blocking(move || (0..8).for_each(|k| drop(stall(&warm, k))))
            .await
            .expect("warm up");
        let before = rss_bytes();
        let stalled_path = path.clone();
        let stalled = tokio::task::spawn_blocking(move || {
            (0..HALF_OPEN)
                .map(|k| stall(&stalled_path, k))
                .collect::<Vec<_>>()
        })
        .await
        .expect("open half-open connections");

        // A real executor, after all of them, still gets to the agent's core.
        let mut real = UnixStream::connect(&path).await.expect("connect");
        let register = ExecutorToAgent::Register {
            framework_id: "fw".into(),
            executor_id: "exec".into(),
            token: "token".into(),
        };
        real.write_all(&encode_frame(&register, MAX_FRAME_BYTES).expect("encode"))
            .await
            .expect("send register");
        let connected = tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                match inputs_rx.recv().await {
                    Some(Input::ExecutorConnected { executor_id, .. }) => return executor_id,
                    Some(_) => continue,
                    None => panic!("the socket server stopped"),
                }
            }
        })
        .await
        .expect("the real executor's registration reached the agent");
        assert_eq!(connected.as_str(), "exec");

        let grew = rss_bytes().saturating_sub(before);
        assert!(
            grew < RSS_BUDGET,
            "{HALF_OPEN} half-open executor connections grew the RSS by {} KiB",
            grew / 1024
        );
        drop(stalled);
        server.abort();
    }
}

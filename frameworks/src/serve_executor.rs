//! `bramble executor serve`: a long-running custom executor, the smallest real one a service
//! can name in its `[executor]` — each task it is handed is a web server listing (and
//! serving) a directory, up until the task is killed.
//!
//! A task serves on the first port of its resources (the ports the scheduler took from the
//! offer, `PORT0`), else on `$PORT0` of the executor's environment; the directory is the task's
//! data (UTF-8, relative to the sandbox, which is the executor's working directory), `.` when
//! empty. RUNNING is reported once the port is bound, so a health check may probe at once; a
//! kill stops the server (requests in flight finish) and reports KILLED; a server that fails
//! reports FAILED with why. One executor may hold any number of tasks, each on its own port.

use crate::dir_server::serve_dir_on;
use bramble_sdk::{
    async_trait, status, Executor, ExecutorDriver, TaskId, TaskInfo, TaskReason, TaskState,
    TaskStatusExt,
};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use tokio::net::TcpListener;
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;
use tracing::{info, warn};

/// The executor: per running task, how to stop its server and the task reporting its end.
#[derive(Default)]
pub struct ServeExecutor {
    running: HashMap<TaskId, (oneshot::Sender<()>, JoinHandle<()>)>,
    /// Where tasks listen: all interfaces (tests use loopback).
    bind_loopback: bool,
}

impl ServeExecutor {
    /// Servers bound to 127.0.0.1 only (for tests on a shared host).
    pub fn on_loopback() -> Self {
        Self {
            bind_loopback: true,
            ..Self::default()
        }
    }
}

/// The port `task` serves on: its first port, else `$PORT0`.
fn port_of(task: &TaskInfo) -> Option<u16> {
    task.resources
        .ports
        .iter()
        .find(|r| !r.is_empty())
        .map(|r| r.begin)
        .or_else(|| std::env::var("PORT0").ok()?.trim().parse().ok())
}

fn send(driver: &ExecutorDriver, update: bramble_sdk::TaskStatus) {
    if let Err(e) = driver.send_status_update(update) {
        warn!("reporting a task's state: {e}");
    }
}

#[async_trait]
impl Executor for ServeExecutor {
    async fn launch_task(&mut self, driver: &ExecutorDriver, task: TaskInfo) {
        self.running.retain(|_, (_, end)| !end.is_finished());
        let invalid = |why: String| {
            status(&task, TaskState::Failed)
                .reason(TaskReason::InvalidTask)
                .message(why)
        };
        let Ok(dir) = String::from_utf8(task.data.clone()) else {
            return send(
                driver,
                invalid("the task's data (the directory) is not UTF-8".into()),
            );
        };
        let dir = PathBuf::from(if dir.trim().is_empty() {
            "."
        } else {
            dir.trim()
        });
        if !dir.is_dir() {
            let why = format!("{} is not a directory (the task's data)", dir.display());
            return send(driver, invalid(why));
        }
        let Some(port) = port_of(&task) else {
            return send(
                driver,
                invalid("no port: the task has none and PORT0 is unset".into()),
            );
        };
        let ip = if self.bind_loopback {
            [127, 0, 0, 1]
        } else {
            [0, 0, 0, 0]
        };
        let addr = SocketAddr::from((ip, port));
        let listener = match TcpListener::bind(addr).await {
            Ok(l) => l,
            Err(e) => {
                let failed =
                    status(&task, TaskState::Failed).message(format!("binding {addr}: {e}"));
                return send(driver, failed);
            }
        };
        info!(task = %task.task_id, %addr, dir = %dir.display(), "serving");
        send(
            driver,
            status(&task, TaskState::Running).message(format!("serving on {addr}")),
        );
        let (stop, stopped) = oneshot::channel::<()>();
        let (killed_tx, killed_rx) = watch::channel(false);
        let driver = driver.clone();
        let id = task.task_id.clone();
        let end = tokio::spawn(async move {
            // The server's shutdown: the kill (which is also how we know it was one).
            let shutdown = async move {
                if stopped.await.is_ok() {
                    let _ = killed_tx.send(true);
                }
            };
            // A graceful shutdown waits for every open connection, and a client that sends
            // half a request (or reads a large file slowly) would hold the kill forever: after
            // the grace, the server is dropped (its listener with it) and KILLED reported.
            let mut killed = killed_rx.clone();
            let grace_over = async move {
                if killed.wait_for(|k| *k).await.is_ok() {
                    tokio::time::sleep(KILL_GRACE).await;
                } else {
                    std::future::pending::<()>().await;
                }
            };
            let served = tokio::select! {
                served = serve_dir_on(listener, dir, shutdown) => served,
                () = grace_over => {
                    warn!(task = %task.task_id, "connections still open {KILL_GRACE:?} after the kill: closing the server");
                    Ok(())
                }
            };
            let was_killed = *killed_rx.borrow();
            let update = match (served, was_killed) {
                (_, true) => status(&task, TaskState::Killed).reason(TaskReason::KilledByRequest),
                (Ok(()), false) => status(&task, TaskState::Finished),
                (Err(e), false) => status(&task, TaskState::Failed).message(format!("{e:#}")),
            };
            send(&driver, update);
        });
        self.running.insert(id, (stop, end));
    }

    async fn kill_task(&mut self, driver: &ExecutorDriver, task_id: &TaskId) {
        match self.running.remove(task_id) {
            Some((stop, _)) => {
                let _ = stop.send(());
            }
            // Already ended (its terminal update is on its way) or never ours: say KILLED for
            // the unknown, so a scheduler never waits on it.
            None => send(
                driver,
                status(task_id, TaskState::Killed).message("no such task here"),
            ),
        }
    }

    async fn shutdown(&mut self, _driver: &ExecutorDriver) {
        for (_, (stop, end)) in self.running.drain() {
            let _ = stop.send(());
            let _ = end.await;
        }
    }
}

/// How long a killed task's open connections may take to finish before the server is closed
/// under them.
const KILL_GRACE: std::time::Duration = std::time::Duration::from_secs(2);

#[cfg(test)]
mod tests {
    use super::*;
    use bramble_sdk::proto::PortRange;
    use bramble_sdk::testing::{task, ExecutorTest};
    use bramble_sdk::Resources;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn get(port: u16, path: &str) -> String {
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .expect("connect");
        s.write_all(format!("GET {path} HTTP/1.0\r\n\r\n").as_bytes())
            .await
            .expect("send");
        let mut answer = String::new();
        s.read_to_string(&mut answer).await.expect("read");
        answer
    }

    fn free_port() -> u16 {
        std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("a free port")
    }

    #[tokio::test]
    async fn a_task_serves_its_directory_on_its_port_until_killed() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("ok"), "fine\n").expect("file");
        let port = free_port();
        let mut t = ExecutorTest::new(ServeExecutor::on_loopback());
        let mut info = task("web.1", Vec::new());
        info.resources = Resources::new(0.1, 32).with_ports([PortRange::new(port, port)]);
        info.data = dir.path().display().to_string().into_bytes();
        t.launch(info).await;
        let running = t.next_update().await;
        assert_eq!(running.state, TaskState::Running, "{running:?}");
        let answer = get(port, "/ok").await;
        assert!(answer.starts_with("HTTP/1.0 200"), "{answer}");
        assert!(answer.ends_with("fine\n"), "{answer}");
        assert!(get(port, "/missing").await.starts_with("HTTP/1.0 404"));

        t.kill("web.1").await;
        let killed = t.next_update().await;
        assert_eq!(killed.state, TaskState::Killed, "{killed:?}");
        assert_eq!(killed.reason, Some(TaskReason::KilledByRequest));
        assert!(
            tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_err(),
            "the port is free again once KILLED is reported"
        );
    }

    /// A client downloading a large file that reads none of it holds its connection open
    /// (the server blocks writing): the kill still ends the task, after the grace, and frees
    /// the port.
    #[tokio::test]
    async fn a_kill_is_not_held_up_by_a_client_that_never_reads_its_download() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("big"), vec![b'x'; 32 << 20]).expect("big file");
        let port = free_port();
        let mut t = ExecutorTest::new(ServeExecutor::on_loopback());
        let mut info = task("web.5", Vec::new());
        info.resources = Resources::new(0.1, 32).with_ports([PortRange::new(port, port)]);
        info.data = dir.path().display().to_string().into_bytes();
        t.launch(info).await;
        assert_eq!(t.next_update().await.state, TaskState::Running);
        let mut slow = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .expect("connect");
        slow.write_all(b"GET /big HTTP/1.0\r\n\r\n")
            .await
            .expect("request");
        // The server has started answering (so the connection is busy, not idle).
        let mut first = [0u8; 12];
        slow.read_exact(&mut first)
            .await
            .expect("the answer starts");

        t.kill("web.5").await;
        let killed = tokio::time::timeout(KILL_GRACE * 5, t.next_update())
            .await
            .expect("KILLED is reported despite the open connection");
        assert_eq!(killed.state, TaskState::Killed, "{killed:?}");
        assert!(
            tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_err(),
            "the port is free again once KILLED is reported"
        );
        drop(slow);
    }

    #[tokio::test]
    async fn a_task_without_a_usable_port_or_directory_fails_saying_why() {
        let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = taken.local_addr().expect("addr").port();
        let mut t = ExecutorTest::new(ServeExecutor::on_loopback());
        let mut info = task("web.2", Vec::new());
        info.resources = Resources::new(0.1, 32).with_ports([PortRange::new(port, port)]);
        t.launch(info).await;
        let failed = t.next_update().await;
        assert_eq!(failed.state, TaskState::Failed);
        assert!(failed.message.contains("binding"), "{}", failed.message);

        t.launch(task("web.3", vec![0xff, 0xfe])).await;
        let failed = t.next_update().await;
        assert_eq!(failed.reason, Some(TaskReason::InvalidTask));
        assert!(failed.message.contains("UTF-8"), "{}", failed.message);
        t.launch(task("web.4", b"/no/such/dir".to_vec())).await;
        let failed = t.next_update().await;
        assert_eq!(failed.reason, Some(TaskReason::InvalidTask));
        assert!(
            failed.message.contains("not a directory"),
            "{}",
            failed.message
        );

        // The kill of a task it does not have is answered, not left hanging.
        t.kill("web.9").await;
        assert_eq!(t.next_update().await.state, TaskState::Killed);
    }
}

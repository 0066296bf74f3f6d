//! Framework failover on an in-process cluster: a scheduler that goes away keeps its tasks for
//! its failover timeout; a new driver subscribing with the same framework id resumes it
//! (offers, status updates — including those that happened meanwhile — and messages from its
//! executors); past the timeout its tasks are killed and the framework is removed.
//!
//! A scheduler process that dies sends nothing: no Teardown, no QUIC close. To get exactly
//! that in one process, the framework under test talks to the master through a UDP relay that
//! the test can cut; from then on the master hears silence, as it would from a SIGKILLed
//! process or a pulled cable. The clean `stop(failover = true)` path is tested alongside.

use bramble_proto::identity::Role;
use bramble_proto::messages::{ClusterState, FrameworkInfo, Offer};
use bramble_proto::task::TaskInfo;
use bramble_proto::{FrameworkId, Resources, TaskReason, TaskState};
use bramble_sdk::{framework_info, SchedulerConfig};
use bramble_tests::framework::{pid_of, shell_task, Event, TestExecutor, TestFramework};
use bramble_tests::processes::alive;
use bramble_tests::*;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::UdpSocket;

/// A UDP relay between one client and the master that can be cut.
struct Relay {
    addr: SocketAddr,
    cut: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl Relay {
    async fn start(master: SocketAddr) -> Relay {
        let front = UdpSocket::bind("127.0.0.1:0").await.expect("relay front");
        let back = UdpSocket::bind("127.0.0.1:0").await.expect("relay back");
        back.connect(master).await.expect("relay to master");
        let addr = front.local_addr().expect("relay addr");
        let cut = Arc::new(AtomicBool::new(false));
        let is_cut = cut.clone();
        let task = tokio::spawn(async move {
            let mut client = None;
            let mut up = vec![0u8; 65536];
            let mut down = vec![0u8; 65536];
            loop {
                tokio::select! {
                    r = front.recv_from(&mut up) => {
                        let Ok((n, from)) = r else { continue };
                        client = Some(from);
                        if !is_cut.load(Ordering::SeqCst) {
                            let _ = back.send(&up[..n]).await;
                        }
                    }
                    r = back.recv(&mut down) => {
                        let Ok(n) = r else { continue };
                        if let (Some(to), false) = (client, is_cut.load(Ordering::SeqCst)) {
                            let _ = front.send_to(&down[..n], to).await;
                        }
                    }
                }
            }
        });
        Relay { addr, cut, task }
    }

    /// From now on nothing passes either way.
    fn cut(&self) {
        self.cut.store(true, Ordering::SeqCst);
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn info(name: &str, failover_timeout_secs: f64) -> FrameworkInfo {
    let mut info = framework_info(name);
    info.failover_timeout_secs = failover_timeout_secs;
    info
}

async fn start_framework(
    c: &InProcessCluster,
    via: SocketAddr,
    info: FrameworkInfo,
) -> TestFramework {
    TestFramework::start_with(SchedulerConfig::new(
        via,
        c.cluster.credentials(Role::Framework),
        info,
    ))
    .await
}

/// A framework `name` that talks to the master through a relay of its own, so that
/// [`vanish`] can silence it.
async fn behind_relay(
    c: &InProcessCluster,
    name: &str,
    failover_timeout_secs: f64,
) -> (Relay, TestFramework) {
    let relay = Relay::start(c.master.addr).await;
    let fw = start_framework(c, relay.addr, info(name, failover_timeout_secs)).await;
    (relay, fw)
}

/// A new scheduler for the framework `id`, subscribing directly; the master must keep the id.
async fn resume(
    c: &InProcessCluster,
    name: &str,
    failover_timeout_secs: f64,
    id: &FrameworkId,
) -> TestFramework {
    let mut again = info(name, failover_timeout_secs);
    again.framework_id = Some(id.clone());
    let fw = start_framework(c, c.master.addr, again).await;
    assert_eq!(&fw.id, id, "the master kept the id");
    fw
}

/// One agent `agent` on a master whose offers live long, so an offer can only come back by the
/// failover itself.
async fn long_offers_cluster(agent: &str) -> InProcessCluster {
    InProcessCluster::start(
        |m| m.offer_timeout_secs = 300.0,
        &[agent],
        Resources::new(2.0, 1024),
        false,
    )
    .await
}

/// Kills the framework the way a SIGKILL would: the relay goes silent first, so the driver's
/// goodbye (and anything else) never reaches the master.
async fn vanish(fw: TestFramework, relay: &Relay) {
    relay.cut();
    fw.stop(true).await;
}

/// The test executor: `sleep` runs until killed, and it echoes framework messages back.
const EXECUTOR: TestExecutor = TestExecutor(env!("CARGO_BIN_EXE_test-executor"));

/// A shell line that runs until `gate` exists, then exits 0.
fn until_exists(gate: &Path) -> String {
    format!("while [ ! -e '{}' ]; do sleep 0.02; done", gate.display())
}

/// The gate file that ends the task `waits`.
fn gate(c: &InProcessCluster) -> PathBuf {
    c.cluster.path("gate")
}

/// Launches `waits` (a shell task that runs until its [`gate`] exists) and `sleeps` (which runs
/// until killed) on `offer`; waits until both run and every update so far is acknowledged.
/// Returns the pid `sleeps` runs as.
async fn launch_waits_and_sleeps(
    c: &InProcessCluster,
    fw: &mut TestFramework,
    offer: &Offer,
    sleeps: TaskInfo,
) -> i32 {
    assert_eq!(sleeps.task_id.as_str(), "sleeps");
    let waits = shell_task(offer, "waits", 0.2, 32, &until_exists(&gate(c)));
    fw.launch(offer, vec![waits, sleeps]);
    fw.state("waits", TaskState::Running).await;
    let pid = pid_of(&fw.state("sleeps", TaskState::Running).await);
    all_acknowledged(c).await;
    pid
}

/// Opens the [`gate`] while the framework is away and waits (up to `deadline`) until the
/// master records `waits` FINISHED.
async fn finish_waits_while_away(c: &InProcessCluster, what: &str, deadline: Duration) {
    std::fs::write(gate(c), b"").expect("open the gate");
    eventually(what, deadline, || async {
        let s = state(c).await;
        s.tasks
            .iter()
            .any(|t| t.id.as_str() == "waits" && t.state == TaskState::Finished)
            .then_some(())
    })
    .await;
}

/// Waits until the agents hold no unacknowledged update: the framework acknowledged every
/// update so far. An agent sends a task's updates one at a time, so a RUNNING left
/// unacknowledged would hold back the task's later updates until someone acknowledges it.
async fn all_acknowledged(c: &InProcessCluster) {
    eventually(
        "every update so far acknowledged",
        Duration::from_secs(20),
        || async {
            for a in &c.agents {
                if a.view().await?.pending_updates != 0 {
                    return None;
                }
            }
            Some(())
        },
    )
    .await;
}

async fn state(c: &InProcessCluster) -> ClusterState {
    c.master.state().await.expect("master state")
}

fn framework<'a>(
    s: &'a ClusterState,
    id: &FrameworkId,
) -> Option<&'a bramble_proto::messages::FrameworkSummary> {
    s.frameworks.iter().find(|f| &f.id == id)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scheduler_killed_mid_job_is_resumed_by_a_new_one_with_its_framework_id() {
    let c = long_offers_cluster("fo-a").await;
    let (relay, mut a) = behind_relay(&c, "phoenix", 30.0).await;
    let id = a.id.clone();
    let offer = a.offer_from("fo-a").await;
    let sleeps = EXECUTOR.task(&offer, "sleeps", "sleep");
    let executor_pid = launch_waits_and_sleeps(&c, &mut a, &offer, sleeps).await;
    vanish(a, &relay).await;

    // While nobody listens, one task finishes: the agent keeps its update until it is acked.
    finish_waits_while_away(
        &c,
        "the master records waits FINISHED, not yet acknowledged",
        Duration::from_secs(20),
    )
    .await;
    assert!(c.agents[0].view().await.expect("view").pending_updates >= 1);
    let s = state(&c).await;
    assert!(
        framework(&s, &id).is_some(),
        "the framework is kept: {:?}",
        s.frameworks
    );
    assert!(alive(executor_pid), "its executor keeps running");

    // A new scheduler with the same framework id takes over.
    let mut b = resume(&c, "phoenix", 30.0, &id).await;
    assert!(
        b.other.iter().all(|e| !matches!(e, Event::Error(_))),
        "{:?}",
        b.other
    );
    // The update that happened while it was away arrives, from the agent (it carries a uuid,
    // so it gets acknowledged), and the acknowledgement goes all the way back.
    let finished = b.state("waits", TaskState::Finished).await;
    assert!(finished.uuid.is_some(), "{finished:?}");
    eventually(
        "the agent holds no unacknowledged update and the master forgot waits",
        Duration::from_secs(20),
        || async {
            let view = c.agents[0].view().await?;
            let s = state(&c).await;
            (view.pending_updates == 0 && s.tasks.iter().all(|t| t.id.as_str() != "waits"))
                .then_some(())
        },
    )
    .await;
    // The running task is still the framework's and still running.
    b.driver.reconcile_tasks(vec![]).expect("reconcile");
    b.update_where("sleeps", "reconciled as RUNNING", |u| {
        u.state == TaskState::Running && u.reason == Some(TaskReason::Reconciliation)
    })
    .await;
    // Messages from its executor reach the new scheduler.
    let echo = b
        .round_trip(&offer.agent_id, "test-executor", b"ping")
        .await;
    assert_eq!(echo.1, b"echo:ping", "from {}", echo.0);
    // It can act on its inherited task.
    b.driver.kill_task("sleeps".into()).expect("kill");
    assert_eq!(b.terminal("sleeps").await.state, TaskState::Killed);
    b.stop(false).await;
    c.shutdown().await;
}

/// Long enough to come back on a loaded machine, short enough to watch it pass.
const CLEAN_TIMEOUT: f64 = 4.0;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_with_failover_keeps_the_tasks_and_a_new_driver_picks_them_up() {
    let c = InProcessCluster::start(|_| {}, &["fo-b"], Resources::new(2.0, 1024), false).await;
    let mut a = start_framework(&c, c.master.addr, info("clean", CLEAN_TIMEOUT)).await;
    let id = a.id.clone();
    let offer = a.offer_from("fo-b").await;
    let sleeps = shell_task(&offer, "sleeps", 0.2, 32, "exec sleep 600");
    let sleeper = launch_waits_and_sleeps(&c, &mut a, &offer, sleeps).await;
    a.stop(true).await;
    let stopped = Instant::now();
    eventually(
        "the master sees the framework disconnected",
        Duration::from_secs(10),
        || async {
            let s = state(&c).await;
            framework(&s, &id).filter(|f| !f.connected).map(|_| ())
        },
    )
    .await;
    finish_waits_while_away(
        &c,
        "waits finishes while the framework is away",
        Duration::from_secs(10),
    )
    .await;
    assert!(
        stopped.elapsed() < Duration::from_secs_f64(CLEAN_TIMEOUT),
        "the test is too slow to come back within the failover timeout"
    );
    let mut b = resume(&c, "clean", CLEAN_TIMEOUT, &id).await;
    assert!(b.state("waits", TaskState::Finished).await.uuid.is_some());
    b.offer_from("fo-b").await;
    // Back in time, so the timeout no longer runs: watch past the moment it would have
    // expired (plus the master's 100 ms timer) that nothing of the framework is taken away.
    let expiry = stopped + Duration::from_secs_f64(CLEAN_TIMEOUT) + Duration::from_millis(600);
    while Instant::now() < expiry {
        let s = state(&c).await;
        assert!(
            framework(&s, &id).is_some_and(|f| f.connected),
            "removed although it came back: {:?}",
            s.frameworks
        );
        assert!(alive(sleeper), "its task was killed although it came back");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    b.driver.kill_task("sleeps".into()).expect("kill");
    assert_eq!(b.terminal("sleeps").await.state, TaskState::Killed);
    b.stop(false).await;
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_the_failover_timeout_the_tasks_are_killed_and_the_framework_removed() {
    const TIMEOUT: f64 = 1.0;
    let c = InProcessCluster::start(|_| {}, &["fo-c"], Resources::new(2.0, 1024), false).await;
    // One framework dies silently, one stops cleanly with failover; both stay away.
    let (relay, mut silent) = behind_relay(&c, "silent", TIMEOUT).await;
    let mut clean = start_framework(&c, c.master.addr, info("clean", TIMEOUT)).await;
    let mut pids = Vec::new();
    for fw in [&mut silent, &mut clean] {
        let offer = fw.offer_from("fo-c").await;
        let running = fw
            .launch_one(
                &offer,
                shell_task(&offer, "sleeper", 0.5, 32, "exec sleep 600"),
            )
            .await;
        pids.push(pid_of(&running));
    }
    let ids = [silent.id.clone(), clean.id.clone()];
    vanish(silent, &relay).await;
    let stopped = Instant::now();
    clean.stop(true).await;

    // The clean one is gone after its timeout; its task is killed.
    eventually(
        "the cleanly stopped framework is removed",
        Duration::from_secs(10),
        || async { framework(&state(&c).await, &ids[1]).is_none().then_some(()) },
    )
    .await;
    assert!(
        stopped.elapsed() >= Duration::from_secs_f64(TIMEOUT),
        "removed after {:?}, before its failover timeout",
        stopped.elapsed()
    );
    eventually("its task is killed", Duration::from_secs(10), || async {
        (!alive(pids[1])).then_some(())
    })
    .await;
    // The silent one: the master first has to notice the silence (QUIC idle timeout), and
    // keeps the task running meanwhile; then the failover timeout runs.
    eventually(
        "the master notices the silent framework is gone",
        Duration::from_secs(30),
        || async {
            let s = state(&c).await;
            framework(&s, &ids[0]).filter(|f| !f.connected).map(|_| ())
        },
    )
    .await;
    assert!(alive(pids[0]), "killed before its failover timeout");
    eventually(
        "the silent framework is removed",
        Duration::from_secs(10),
        || async { framework(&state(&c).await, &ids[0]).is_none().then_some(()) },
    )
    .await;
    eventually("its task is killed", Duration::from_secs(10), || async {
        (!alive(pids[0])).then_some(())
    })
    .await;
    let s = state(&c).await;
    assert!(
        s.tasks.iter().all(|t| t.id.as_str() != "sleeper"),
        "no task of a removed framework remains: {:?}",
        s.tasks
    );
    c.shutdown().await;
}

/// Offers made to the dead connection before the master noticed anything were never seen by
/// the new scheduler; they must come back to it on failover, not only after the offer timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offers_come_back_to_the_scheduler_that_replaced_a_silently_dead_one() {
    let c = long_offers_cluster("fo-d").await;
    let (relay, mut a) = behind_relay(&c, "offered", 30.0).await;
    let id = a.id.clone();
    // The scheduler holds an offer, unanswered, when it dies.
    let held = a.offer_from("fo-d").await;
    vanish(a, &relay).await;
    let mut b = resume(&c, "offered", 30.0, &id).await;
    let offer = b.offer_from("fo-d").await;
    assert_ne!(offer.id, held.id, "a new offer");
    assert_eq!(
        offer.resources, held.resources,
        "the same resources, all of them"
    );
    b.stop(false).await;
    c.shutdown().await;
}

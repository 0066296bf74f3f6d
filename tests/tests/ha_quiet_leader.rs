//! An agent notices a SIGKILLed leader by asking the other masters, not by waiting out its
//! heartbeat timeout (`agent/src/master_link/leader_probe.rs`). Three real `bramble-master`
//! processes with `[ha]` on loopback, at the shipped heartbeat interval of 1 s: the heartbeat
//! timeout alone (4 missed intervals) keeps an agent on a dead leader for 4–5 s, while the
//! standbys elect a new one in well under a second. Asked who leads once a heartbeat goes
//! unanswered for half an interval, the agents are back with the new leader within about
//! 1.5 s of the kill on an idle machine.
//!
//! The second test has a dead master in the agents' lists: the masters are asked all at once
//! (before dialling, and when the leader goes quiet), so a dead one costs nothing, where
//! dialling the masters in turn spends a whole connect timeout (3 s) on it.
//!
//! Agents take ports from 34400–34449, and 34450–34499 (no other test uses them).

use bramble_tests::ha::{median_max, HaCluster};
use bramble_tests::processes::*;
use std::net::SocketAddr;
use std::time::Duration;

/// The shipped default (`master/src/config.rs`): what a real cluster runs.
const HEARTBEAT_MS: u64 = 1000;
/// Kill → every agent registered with the new leader. Waiting out the heartbeat timeout takes
/// at least 4 s (4 × 1 s after the last acknowledgement), so this fails without the probe;
/// with it, 1–2 s here, and the rest is room for a loaded CI machine.
const AGENTS_BACK_MS: f64 = 3_500.0;
const KILLS: usize = 2;
const WAIT: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agents_leave_a_killed_leader_before_their_heartbeat_timeout() {
    bramble_tests::init_logs();
    let cmd = MasterCmd::default()
        .heartbeat_interval_ms(HEARTBEAT_MS)
        .agent_timeout_secs(10.0);
    let agent = |i: usize| AgentCmd::new(&format!("agent{i}")).port_block(34400, i);
    let mut c = HaCluster::start(3, cmd, 2, agent, WAIT).await;
    let mut leader = c.leader().await;
    let mut times = Vec::new();
    for k in 1..=KILLS {
        let f = c.kill_leader(leader).await;
        eprintln!(
            "kill {k}/{KILLS}: master {} → {}: hello {:.0} ms, agents {:.0} ms",
            f.killed, f.new_leader, f.hello_ms, f.agents_ms
        );
        times.push(f.agents_ms);
        leader = f.new_leader;
    }
    let (median, max) = median_max(&times);
    eprintln!("kill → agents back with the new leader: median {median:.0} ms, max {max:.0} ms");
    for (k, ms) in times.iter().enumerate() {
        assert!(
            *ms < AGENTS_BACK_MS,
            "kill {}: the agents took {ms:.0} ms to register with the new leader (bound {AGENTS_BACK_MS} ms): they waited out their heartbeat timeout",
            k + 1
        );
    }
}

/// A new agent whose list starts with a dead master registers without waiting out a connect
/// timeout on it; then the leader is killed and the agents are back as quickly as without
/// the dead master. Five masters: one down for good and the leader killed leave three, a
/// majority.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_master_in_the_list_costs_the_agents_nothing() {
    bramble_tests::init_logs();
    let cmd = MasterCmd::default()
        .heartbeat_interval_ms(HEARTBEAT_MS)
        .agent_timeout_secs(10.0);
    let agent = |_: usize| AgentCmd::new("agent0").port_block(34450, 0);
    let mut c = HaCluster::start(5, cmd, 1, agent, WAIT).await;
    let leader = c.leader().await;
    let dead = (1..=5).find(|&id| id != leader).expect("a follower");
    c.kill_for_good(dead);
    // The dead master first, then the others (the leader last: found by asking, not by luck).
    let mut order: Vec<SocketAddr> = vec![c.group.quic(dead)];
    order.extend(
        (1..=5)
            .filter(|&id| id != dead && id != leader)
            .map(|id| c.group.quic(id)),
    );
    order.push(c.group.quic(leader));
    let took = c
        .add_agent(
            "agent1",
            AgentCmd::new("agent1").port_block(34450, 1),
            &order,
        )
        .await;
    eprintln!(
        "an agent with dead master {dead} first in its list registered in {:.0} ms",
        took.as_secs_f64() * 1000.0
    );
    // Dialling the dead master first costs its 3 s connect timeout.
    assert!(
        took < Duration::from_millis(2_000),
        "the agent took {took:?} to register: it dialled the dead master in turn"
    );
    let f = c.kill_leader(leader).await;
    eprintln!(
        "master {} killed → {}: hello {:.0} ms, agents {:.0} ms",
        f.killed, f.new_leader, f.hello_ms, f.agents_ms
    );
    assert!(
        f.agents_ms < AGENTS_BACK_MS,
        "the agents took {:.0} ms to register with the new leader (bound {AGENTS_BACK_MS} ms)",
        f.agents_ms
    );
}

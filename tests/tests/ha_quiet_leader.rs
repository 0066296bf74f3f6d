//! An agent notices a SIGKILLed leader by asking the other masters, not by waiting out its
//! heartbeat timeout (`agent/src/master_link/leader_probe.rs`). Three real `bramble-master`
//! processes with `[ha]` on loopback, at the shipped heartbeat interval of 1 s: the heartbeat
//! timeout alone (4 missed intervals) keeps an agent on a dead leader for 4–5 s, while the
//! standbys elect a new one in well under a second. Asked who leads once a heartbeat goes
//! unanswered for half an interval, the agents are back with the new leader within about
//! 1.5 s of the kill on an idle machine.
//!
//! Agents take ports from 34400–34449 (no other test uses them).

use bramble_tests::ha::{median_max, HaCluster};
use bramble_tests::processes::*;
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
    let agent = |i: usize| {
        let base = 34400 + 25 * i;
        AgentCmd::new(&format!("agent{i}")).config(&format!("ports = \"{base}-{}\"\n", base + 24))
    };
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

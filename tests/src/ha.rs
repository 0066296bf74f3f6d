//! A replicated group of real `bramble-master` processes with real agents given every
//! master, and the leader SIGKILLed on demand with each failover timed: what
//! `tests/tests/ha_pi.rs` (a pi job through ≥ 5 leader kills) and the `bench-ha` benchmark
//! (`bench/ha.sh`, ≥ 20 kills) share.
//!
//! Two times are taken per kill, both from the moment the SIGKILLed leader has exited:
//! - **hello**: until a surviving master welcomes an operator's hello (it serves clients);
//! - **agents**: until every agent (given every master, never restarted) has registered
//!   again, read from the agent's own log (`registered with master`), so it is the agent
//!   saying it is back, not a master's stale view.
//!
//! The killed master is restarted (same state dir, same `[ha]`) and waited for until it is a
//! standby naming the leader before the next kill, so a majority is always there.

use crate::eventually;
use crate::processes::{AgentCmd, HaGroup, LoopbackCluster, MasterCmd, Proc};
use bramble_proto::handshake::say_hello;
use bramble_proto::identity::{Credentials, Role};
use bramble_proto::messages::PeerKind;
use bramble_proto::transport::{client_endpoint, connect, unspecified_for};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// One hello attempt: a port nobody serves does not answer at all.
const HELLO_ATTEMPT: Duration = Duration::from_millis(300);
/// How often the agents' logs are read while waiting for them to register again.
const LOG_POLL: Duration = Duration::from_millis(10);
/// What an agent logs each time a master registers it (`agent/src/master_link.rs`).
const REGISTERED: &str = "registered with master";

/// Whether `addr` welcomes an operator's hello now (a standby answers `NotLeader`, a dead or
/// busy port nothing within [`HELLO_ATTEMPT`]).
pub async fn welcomes(creds: &Credentials, addr: SocketAddr) -> bool {
    let Ok(endpoint) = client_endpoint(creds, unspecified_for(addr)) else {
        return false;
    };
    let attempt = async {
        let conn = connect(&endpoint, addr).await.ok()?;
        let answer = say_hello(&conn, PeerKind::Operator).await;
        conn.close(quinn::VarInt::from_u32(0), b"");
        Some(answer.is_ok())
    };
    let welcomed = matches!(
        tokio::time::timeout(HELLO_ATTEMPT, attempt).await,
        Ok(Some(true))
    );
    endpoint.close(quinn::VarInt::from_u32(0), b"");
    welcomed
}

/// `/api/v1/state` of the master at `http` (a standby answers it itself), as JSON.
pub async fn state_json(http: SocketAddr) -> Option<serde_json::Value> {
    let (status, body) = tokio::time::timeout(
        Duration::from_secs(5),
        crate::processes::http_get(http, "/api/v1/state"),
    )
    .await
    .ok()?
    .ok()?;
    if status != 200 {
        return None;
    }
    serde_json::from_str(&body).ok()
}

/// The times of one leader kill (see the module header).
#[derive(Debug, Clone, serde::Serialize)]
pub struct Failover {
    /// The master killed and the one serving after it.
    pub killed: usize,
    pub new_leader: usize,
    /// SIGKILL → a surviving master welcomes a hello.
    pub hello_ms: f64,
    /// SIGKILL → every agent has registered again (with the new leader).
    pub agents_ms: f64,
}

/// A 3- (or 5-) master group and its agents, all real processes on loopback.
pub struct HaCluster {
    pub net: LoopbackCluster,
    pub group: HaGroup,
    cmd: MasterCmd,
    masters: Vec<Option<Proc>>,
    agent_cmds: Vec<AgentCmd>,
    pub agents: Vec<Proc>,
    starts: usize,
    deadline: Duration,
    operator: Arc<Credentials>,
}

impl HaCluster {
    /// Starts `masters` masters with `cmd` and `agents` agents (`agent(i)` each, given every
    /// master); waits until one leads and every agent is registered with it. `deadline`
    /// bounds every wait.
    pub async fn start(
        masters: usize,
        cmd: MasterCmd,
        agents: usize,
        agent: impl Fn(usize) -> AgentCmd,
        deadline: Duration,
    ) -> HaCluster {
        let net = LoopbackCluster::new();
        let group = HaGroup::new(masters);
        let operator = Arc::new(net.test.credentials(Role::Operator));
        let mut c = HaCluster {
            net,
            group,
            cmd,
            masters: Vec::new(),
            agent_cmds: Vec::new(),
            agents: Vec::new(),
            starts: 0,
            deadline,
            operator,
        };
        for id in 1..=masters {
            let p = c.spawn_master(id);
            c.masters.push(Some(p));
        }
        let all = c.quic_addrs();
        c.leader().await;
        for i in 0..agents {
            let cmd = agent(i).masters(&all);
            let p = c.net.start_agent(&format!("agent{i}"), &cmd);
            c.agent_cmds.push(cmd);
            c.agents.push(p);
        }
        eventually(
            "every agent registers with the leader",
            deadline,
            || async { c.agents.iter().all(|a| registrations(a) > 0).then_some(()) },
        )
        .await;
        c
    }

    fn spawn_master(&mut self, id: usize) -> Proc {
        self.starts += 1;
        let name = format!("master{id}-{}", self.starts);
        self.net.start_ha_master(&name, &self.cmd, &self.group, id)
    }

    /// Every master's QUIC address: what agents and frameworks are given.
    pub fn quic_addrs(&self) -> Vec<SocketAddr> {
        (1..=self.group.len())
            .map(|id| self.group.quic(id))
            .collect()
    }

    /// `--master a,b,c` for the CLI.
    pub fn master_list(&self) -> String {
        self.quic_addrs()
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(",")
    }

    fn alive(&self) -> Vec<usize> {
        (1..=self.group.len())
            .filter(|&id| self.masters[id - 1].is_some())
            .collect()
    }

    /// Waits until exactly one running master serves as leader and every other running one
    /// names it as a standby; returns its id.
    pub async fn leader(&self) -> usize {
        let alive = self.alive();
        let group = &self.group;
        eventually(
            "exactly one master leads, the others name it",
            self.deadline,
            || {
                let alive = alive.clone();
                async move {
                    let mut leaders = Vec::new();
                    let mut named = Vec::new();
                    for &id in &alive {
                        let s = state_json(group.http(id)).await?;
                        named.push(s.get("leader")?.as_u64()? as usize);
                        if s.get("standby").is_none() {
                            leaders.push(id);
                        }
                    }
                    (leaders.len() == 1 && named.iter().all(|&n| n == leaders[0]))
                        .then(|| leaders[0])
                }
            },
        )
        .await
    }

    /// How many times each agent has logged a registration so far.
    fn registrations(&self) -> Registrations {
        Registrations {
            before: self.agents.iter().map(registrations).collect(),
        }
    }

    /// SIGKILLs the serving leader `leader`, times the failover (see [`Failover`]), then
    /// restarts the killed master and waits until it stands by naming the new leader.
    pub async fn kill_leader(&mut self, leader: usize) -> Failover {
        let survivors: Vec<usize> = self.alive().into_iter().filter(|&i| i != leader).collect();
        let regs = self.registrations();
        let mut proc = self.masters[leader - 1]
            .take()
            .expect("the leader is running");
        proc.kill_hard(); // SIGKILL and reaped: the port is dead from here
        let killed = Instant::now();

        // Hellos to the survivors in turn, in a task of their own so that the agents' logs
        // are read meanwhile at their own pace.
        let probe = {
            let group = self.group.clone();
            let creds = Arc::clone(&self.operator);
            let survivors = survivors.clone();
            let deadline = self.deadline;
            tokio::spawn(async move {
                let until = killed + deadline;
                let mut next = 0;
                loop {
                    let id = survivors[next % survivors.len()];
                    next += 1;
                    if welcomes(&creds, group.quic(id)).await {
                        return Some((id, killed.elapsed()));
                    }
                    if Instant::now() >= until {
                        return None;
                    }
                }
            })
        };
        let until = killed + self.deadline;
        let agents_back = loop {
            if regs.await_ready(&self.agents) {
                break killed.elapsed();
            }
            assert!(
                Instant::now() < until,
                "the agents did not all register again within {:?} of killing master {leader}",
                self.deadline
            );
            tokio::time::sleep(LOG_POLL).await;
        };
        let (new_leader, hello) = probe.await.expect("the hello probe").unwrap_or_else(|| {
            panic!(
                "no surviving master welcomed a hello within {:?} of killing master {leader}",
                self.deadline
            )
        });
        // The killed master comes back and catches up as a standby.
        let p = self.spawn_master(leader);
        self.masters[leader - 1] = Some(p);
        drop(proc);
        let now = self.leader().await;
        assert_eq!(
            now, new_leader,
            "the master that welcomed the hello is the one serving"
        );
        Failover {
            killed: leader,
            new_leader,
            hello_ms: hello.as_secs_f64() * 1000.0,
            agents_ms: agents_back.as_secs_f64() * 1000.0,
        }
    }

    /// SIGKILLs follower `id` and leaves it down: its address stays in every agent's list, a
    /// dead master that finding the leader must get past.
    pub fn kill_for_good(&mut self, id: usize) {
        self.masters[id - 1]
            .take()
            .expect("the master is running")
            .kill_hard();
    }

    /// Starts one more agent (`name`), given `masters` in that order; returns once it has
    /// registered, with the time from its start.
    pub async fn add_agent(
        &mut self,
        name: &str,
        cmd: AgentCmd,
        masters: &[SocketAddr],
    ) -> Duration {
        let cmd = cmd.masters(masters);
        let started = Instant::now();
        let p = self.net.start_agent(name, &cmd);
        let until = started + self.deadline;
        while registrations(&p) == 0 {
            assert!(
                Instant::now() < until,
                "agent {name} did not register within {:?}",
                self.deadline
            );
            tokio::time::sleep(LOG_POLL).await;
        }
        self.agent_cmds.push(cmd);
        self.agents.push(p);
        started.elapsed()
    }

    /// Every process of the cluster (for "nothing else left running" checks).
    pub fn pids(&self) -> Vec<i32> {
        self.masters
            .iter()
            .flatten()
            .chain(self.agents.iter())
            .map(Proc::pid)
            .collect()
    }

    /// Agent `i`'s work dir.
    pub fn agent_dir(&self, i: usize) -> std::path::PathBuf {
        self.net.work_dir(&self.agent_cmds[i])
    }
}

/// Each agent's registration count at some moment.
struct Registrations {
    before: Vec<usize>,
}

impl Registrations {
    /// Whether every agent has registered again since.
    fn await_ready(&self, agents: &[Proc]) -> bool {
        agents
            .iter()
            .zip(&self.before)
            .all(|(a, &n)| registrations(a) > n)
    }
}

fn registrations(agent: &Proc) -> usize {
    agent.log_text().matches(REGISTERED).count()
}

/// Median and maximum of `v` (milliseconds); `(NaN, NaN)` for none.
pub fn median_max(v: &[f64]) -> (f64, f64) {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    let median = if v.is_empty() {
        f64::NAN
    } else if v.len() % 2 == 1 {
        v[v.len() / 2]
    } else {
        (v[v.len() / 2 - 1] + v[v.len() / 2]) / 2.0
    };
    (median, v.last().copied().unwrap_or(f64::NAN))
}

//! Replicated masters (issue 18, the master side): three real `bramble-master` processes with
//! `[ha]` on loopback. Exactly one leads and serves; the others answer hellos with `NotLeader`
//! naming it and redirect HTTP to it. SIGKILLing the leader makes another one serve within a
//! deadline, from the replicated records: the framework and agent are there (as recovered), the
//! agent re-registers when pointed at the new leader, and its task is still RUNNING.
//!
//! Failover time (kill → a surviving master welcomes a hello) is measured over several kills
//! and printed.

use bramble_proto::handshake::say_hello;
use bramble_proto::handshake::HandshakeError;
use bramble_proto::identity::Role;
use bramble_proto::messages::{LeaderHint, PeerKind};
use bramble_proto::transport::{client_endpoint, connect, unspecified_for};
use bramble_proto::{AgentId, TaskState};
use bramble_tests::framework::{pid_of, shell_task};
use bramble_tests::processes::*;
use bramble_tests::*;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

const WAIT: Duration = Duration::from_secs(30);
/// A killed leader is replaced and the new one serves within this (the target is 2 s;
/// this bounds a loaded CI machine, the measured times are printed).
const FAILOVER_DEADLINE: Duration = Duration::from_secs(15);
/// One hello attempt: a port nobody serves yet does not answer at all.
const HELLO_ATTEMPT: Duration = Duration::from_millis(300);

/// What a master answered a hello.
#[derive(Debug)]
enum Answer {
    Welcome,
    NotLeader(Option<LeaderHint>),
    /// Why (shown through `Debug` when a test fails).
    Nothing(#[allow(dead_code)] String),
}

async fn hello(net: &LoopbackCluster, addr: SocketAddr) -> Answer {
    let creds = net.test.credentials(Role::Operator);
    let endpoint = match client_endpoint(&creds, unspecified_for(addr)) {
        Ok(e) => e,
        Err(e) => return Answer::Nothing(e.to_string()),
    };
    let attempt = async {
        let conn = connect(&endpoint, addr).await.map_err(|e| e.to_string())?;
        let answer = match say_hello(&conn, PeerKind::Operator).await {
            Ok(_) => Answer::Welcome,
            Err(HandshakeError::NotLeader(hint)) => Answer::NotLeader(hint),
            Err(e) => Answer::Nothing(e.to_string()),
        };
        conn.close(quinn::VarInt::from_u32(0), b"");
        Ok::<_, String>(answer)
    };
    let answer = match tokio::time::timeout(HELLO_ATTEMPT, attempt).await {
        Ok(Ok(a)) => a,
        Ok(Err(e)) => Answer::Nothing(e),
        Err(_) => Answer::Nothing("no answer".into()),
    };
    endpoint.close(quinn::VarInt::from_u32(0), b"");
    answer
}

/// A raw HTTP/1.0 GET: the status and the whole answer (headers included).
async fn get(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.ok()?;
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").as_bytes())
        .await
        .ok()?;
    let mut answer = String::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_string(&mut answer))
        .await
        .ok()?
        .ok()?;
    let status = answer.split_whitespace().nth(1)?.parse().ok()?;
    Some((status, answer))
}

fn header<'a>(answer: &'a str, name: &str) -> Option<&'a str> {
    answer.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

async fn state_json(addr: SocketAddr) -> Option<serde_json::Value> {
    let (status, answer) = get(addr, "/api/v1/state").await?;
    if status != 200 {
        return None;
    }
    serde_json::from_str(answer.split_once("\r\n\r\n")?.1).ok()
}

/// Waits until exactly one of `alive` serves as leader and every other one of them names it;
/// returns its id.
async fn one_leader(group: &HaGroup, alive: &[usize]) -> usize {
    eventually(
        "exactly one master leads, the others name it",
        WAIT,
        || async {
            let mut leaders = Vec::new();
            let mut named = Vec::new();
            for &id in alive {
                let s = state_json(group.http(id)).await?;
                let leader = s.get("leader")?.as_u64()? as usize;
                named.push(leader);
                if s.get("standby").is_none() {
                    // The serving leader: its own picture lists the group with it as leader.
                    let masters = s.get("masters")?.as_array()?;
                    let me = masters
                        .iter()
                        .find(|m| m["id"].as_u64() == Some(id as u64))?;
                    (me["role"] == "leader" && masters.len() == group.len()).then_some(())?;
                    leaders.push(id);
                } else {
                    // A standby: it knows the leader's client addresses.
                    s.get("leader_address")?.as_str()?;
                }
            }
            (leaders.len() == 1 && named.iter().all(|&n| n == leaders[0])).then(|| leaders[0])
        },
    )
    .await
}

/// Kills master `leader` and measures until one of `alive` welcomes a hello; returns that
/// one and the time.
async fn kill_and_time(
    net: &LoopbackCluster,
    group: &HaGroup,
    proc: &mut Proc,
    alive: &[usize],
) -> (usize, Duration) {
    proc.kill_hard();
    let killed = Instant::now();
    let mut next = 0;
    let new_leader = eventually(
        "a surviving master serves hellos",
        FAILOVER_DEADLINE,
        || {
            let id = alive[next % alive.len()];
            next += 1;
            async move { matches!(hello(net, group.quic(id)).await, Answer::Welcome).then_some(id) }
        },
    )
    .await;
    (new_leader, killed.elapsed())
}

/// Waits until the master at `addr` has agent `agent_id` connected and the task `task`
/// RUNNING (after a failover: the agent is back with the new leader, its task kept).
async fn agent_back_with_task_running(
    net: &LoopbackCluster,
    addr: SocketAddr,
    agent_id: &AgentId,
    task: &str,
    what: &str,
) {
    eventually(what, WAIT, || async {
        let s = operator_state(&net.test, addr).await.ok()?;
        let back = s.agents.iter().any(|a| &a.id == agent_id && a.connected);
        let running = s
            .tasks
            .iter()
            .any(|t| t.id.as_str() == task && t.state == TaskState::Running);
        (back && running).then_some(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_master_leads_standbys_redirect_and_a_killed_leader_is_replaced_from_the_replicated_records(
) {
    let net = LoopbackCluster::new();
    let group = HaGroup::new(3);
    let cmd = MasterCmd::default().agent_timeout_secs(5.0);
    let mut masters: Vec<Option<Proc>> = (1..=3)
        .map(|id| Some(net.start_ha_master(&format!("master-{id}"), &cmd, &group, id)))
        .collect();
    let leader = one_leader(&group, &[1, 2, 3]).await;
    let follower = (1..=3).find(|&i| i != leader).expect("a follower");

    // A standby's hello answer names the leader by its client addresses.
    match hello(&net, group.quic(follower)).await {
        Answer::NotLeader(Some(hint)) => {
            assert_eq!(hint.id, leader as u64, "{hint:?}");
            assert_eq!(hint.address, group.quic(leader).to_string(), "{hint:?}");
            assert_eq!(
                hint.http.as_deref(),
                Some(group.http(leader).to_string().as_str()),
                "{hint:?}"
            );
        }
        other => panic!("master {follower} (standby) answered a hello with {other:?}"),
    }
    assert!(
        matches!(hello(&net, group.quic(leader)).await, Answer::Welcome),
        "the leader welcomes"
    );
    // A standby's HTTP: API calls go to the leader; Mesos's redirect names it.
    let (status, answer) = get(group.http(follower), "/api/v1/agents?limit=5")
        .await
        .expect("standby HTTP");
    assert_eq!(status, 307, "{answer}");
    assert_eq!(
        header(&answer, "location"),
        Some(format!("http://{}/api/v1/agents?limit=5", group.http(leader)).as_str()),
        "{answer}"
    );
    let (status, answer) = get(group.http(follower), "/master/redirect")
        .await
        .expect("standby HTTP");
    assert_eq!(status, 307, "{answer}");
    assert_eq!(
        header(&answer, "location"),
        Some(format!("http://{}", group.http(leader)).as_str()),
        "{answer}"
    );

    // A framework and an agent with the leader, dialled directly; a task RUNNING.
    let _agent = net.start_agent("agent", &AgentCmd::new("agent1").master(group.quic(leader)));
    let agent_id = eventually("the agent registers with the leader", WAIT, || async {
        let s = operator_state(&net.test, group.quic(leader)).await.ok()?;
        s.agents.iter().find(|a| a.connected).map(|a| a.id.clone())
    })
    .await;
    let mut agent = _agent;
    let mut fw = bramble_tests::framework::TestFramework::start(
        group.quic(leader),
        net.test.credentials(Role::Framework),
        "ha-steady",
    )
    .await;
    let offer = fw.first_offer().await;
    let pid = pid_of(
        &fw.launch_one(
            &offer,
            shell_task(&offer, "sleeper", 0.5, 32, "exec sleep 600"),
        )
        .await,
    );
    let fw_id = fw.id.clone();

    // SIGKILL the leader: another serves, from the replicated records.
    let survivors: Vec<usize> = (1..=3).filter(|&i| i != leader).collect();
    let mut killed = masters[leader - 1].take().expect("leader process");
    let (new_leader, took) = kill_and_time(&net, &group, &mut killed, &survivors).await;
    let mut failovers = vec![took];
    assert_eq!(one_leader(&group, &survivors).await, new_leader);
    let recovered = operator_state(&net.test, group.quic(new_leader))
        .await
        .expect("the new leader's state");
    assert!(
        recovered.frameworks.iter().any(|f| f.id == fw_id),
        "the framework is recovered: {:?}",
        recovered.frameworks
    );
    assert!(
        recovered.agents.iter().any(|a| a.id == agent_id),
        "the agent is recovered: {:?}",
        recovered.agents
    );
    // Known, and not ended (the master waits for its agent to re-register).
    assert!(
        recovered
            .tasks
            .iter()
            .any(|t| t.id.as_str() == "sleeper" && !t.state.is_terminal()),
        "the task is recovered: {:?}",
        recovered.tasks
    );

    // The agent, pointed at the new leader, re-registers; its task was never killed.
    agent.kill_hard();
    let _agent = net.start_agent(
        "agent-again",
        &AgentCmd::new("agent1").master(group.quic(new_leader)),
    );
    agent_back_with_task_running(
        &net,
        group.quic(new_leader),
        &agent_id,
        "sleeper",
        "the agent re-registers with the new leader, its task RUNNING",
    )
    .await;
    assert!(alive(pid), "the task's process {pid} was killed");

    // More kills, for the failover time: the killed master comes back as a standby each time.
    let mut leader = new_leader;
    let mut down = killed;
    let mut down_id = (1..=3)
        .find(|i| !survivors.contains(i))
        .expect("the killed one");
    for _ in 0..2 {
        masters[down_id - 1] =
            Some(net.start_ha_master(&format!("master-{down_id}-again"), &cmd, &group, down_id));
        drop(down);
        assert_eq!(one_leader(&group, &[1, 2, 3]).await, leader);
        let survivors: Vec<usize> = (1..=3).filter(|&i| i != leader).collect();
        let mut proc = masters[leader - 1].take().expect("leader process");
        let (next, took) = kill_and_time(&net, &group, &mut proc, &survivors).await;
        failovers.push(took);
        down = proc;
        down_id = leader;
        leader = one_leader(&group, &survivors).await;
        assert_eq!(leader, next);
    }
    eprintln!(
        "leader failover (SIGKILL → a surviving master welcomes a hello), {} kills: {:?} (loadavg {})",
        failovers.len(),
        failovers,
        std::fs::read_to_string("/proc/loadavg").unwrap_or_default().trim()
    );
    // The last leader still has the task RUNNING.
    let s = operator_state(&net.test, group.quic(leader))
        .await
        .expect("state");
    assert!(
        s.tasks
            .iter()
            .any(|t| t.id.as_str() == "sleeper" && t.state == TaskState::Running),
        "{:?}",
        s.tasks
    );
    assert!(alive(pid), "the task's process {pid} was killed");
    kill_group(pid);
    drop(fw);
}

/// Agents given every master follow the leader by themselves: after each SIGKILL of the
/// leader the same agent process (never restarted) re-registers with the new leader, its task
/// still RUNNING and its process never killed. Kill → agent back with the new leader is
/// printed per kill.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_given_every_master_follows_each_new_leader_by_itself() {
    let net = LoopbackCluster::new();
    let group = HaGroup::new(3);
    let cmd = MasterCmd::default().agent_timeout_secs(5.0);
    let mut masters: Vec<Option<Proc>> = (1..=3)
        .map(|id| Some(net.start_ha_master(&format!("m{id}"), &cmd, &group, id)))
        .collect();
    let mut leader = one_leader(&group, &[1, 2, 3]).await;
    let all: Vec<SocketAddr> = (1..=3).map(|id| group.quic(id)).collect();
    let _agent = net.start_agent("agent", &AgentCmd::new("agent1").masters(&all));
    let agent_id = eventually("the agent finds the leader among three", WAIT, || async {
        let s = operator_state(&net.test, group.quic(leader)).await.ok()?;
        s.agents.iter().find(|a| a.connected).map(|a| a.id.clone())
    })
    .await;
    let mut fw = bramble_tests::framework::TestFramework::start(
        group.quic(leader),
        net.test.credentials(Role::Framework),
        "ha-follow",
    )
    .await;
    let offer = fw.first_offer().await;
    let pid = pid_of(
        &fw.launch_one(
            &offer,
            shell_task(&offer, "sleeper", 0.5, 32, "exec sleep 600"),
        )
        .await,
    );

    let mut agent_back = Vec::new();
    for round in 0..2 {
        let survivors: Vec<usize> = (1..=3).filter(|&i| i != leader).collect();
        let mut proc = masters[leader - 1].take().expect("leader process");
        let killed = Instant::now();
        let (next, _) = kill_and_time(&net, &group, &mut proc, &survivors).await;
        agent_back_with_task_running(
            &net,
            group.quic(next),
            &agent_id,
            "sleeper",
            "the agent re-registers with the new leader by itself, its task RUNNING",
        )
        .await;
        agent_back.push(killed.elapsed());
        assert!(alive(pid), "the task's process {pid} was killed");
        // The killed master comes back, as a standby.
        masters[leader - 1] =
            Some(net.start_ha_master(&format!("m{leader}-again{round}"), &cmd, &group, leader));
        drop(proc);
        leader = next;
        assert_eq!(one_leader(&group, &[1, 2, 3]).await, leader);
    }
    eprintln!(
        "leader SIGKILL → the same agent registered with the new leader: {agent_back:?} (loadavg {})",
        std::fs::read_to_string("/proc/loadavg").unwrap_or_default().trim()
    );
    kill_group(pid);
    drop(fw);
}

/// An elected master that cannot serve (another program holds its QUIC port) hands the
/// leadership on (`Replica::abdicate`) instead of holding it unserved, with every standby
/// naming it and no master serving. Master 3 is the one blocked: same-term elections go to
/// the higher id, so killing the serving leaders soon gets it elected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_elected_master_that_cannot_serve_hands_the_leadership_on() {
    let net = LoopbackCluster::new();
    let group = HaGroup::new(3);
    let blocked = 3;
    let squatter = std::net::UdpSocket::bind(group.quic(blocked)).expect("taking master 3's port");
    let cmd = MasterCmd::default();
    let all = [1, 2, 3];
    let mut masters: Vec<Proc> = all
        .iter()
        .map(|&id| net.start_ha_master(&format!("master-{id}"), &cmd, &group, id))
        .collect();
    const HANDED: &str = "handing the leadership to another master";
    let mut rounds = 0;
    let leader = loop {
        let leader = one_leader(&group, &all).await;
        assert_ne!(leader, blocked, "master {blocked} serves without its port");
        if masters[blocked - 1].log_text().contains(HANDED) {
            break leader;
        }
        rounds += 1;
        assert!(
            rounds <= 12,
            "master {blocked} was never elected in {rounds} kills"
        );
        // Restarted only once a survivor serves: a master restarted at once may resume the
        // leadership of its term before anyone else stands.
        masters[leader - 1].kill_hard();
        let survivors: Vec<usize> = all.iter().copied().filter(|&i| i != leader).collect();
        one_leader(&group, &survivors).await;
        masters[leader - 1] = net.start_ha_master(
            &format!("master-{leader}-again{rounds}"),
            &cmd,
            &group,
            leader,
        );
    };
    eprintln!("master {blocked} was elected, could not serve and handed over; {leader} serves");
    drop(squatter);
}

//! `[ha] peers = "mdns"` on real mDNS packets (root only: network namespaces on a bridge):
//! three master processes on three hosts, no addresses configured, find each other, form
//! exactly one group (one leader), and an agent on a fourth host with no master address finds
//! the leader by itself. Two masters are given ids, the third derives its own from the
//! machine id (`ha/mdns.rs`).

use bramble_tests::netns::{self, copy_node_certs, Host, Net};
use bramble_tests::processes::Proc;
use bramble_tests::{eventually, operator_state, TestCluster};
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const DEADLINE: Duration = Duration::from_secs(60);
/// This test's agent ports (no other test uses them).
const AGENT_PORTS: &str = "32700-32724";

/// `GET /api/v1/state` on `addr`: the body of a 200 answer.
async fn state_json(addr: SocketAddr) -> Option<serde_json::Value> {
    let mut s = tokio::time::timeout(Duration::from_secs(2), tokio::net::TcpStream::connect(addr))
        .await
        .ok()?
        .ok()?;
    let req = format!("GET /api/v1/state HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.ok()?;
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut answer))
        .await
        .ok()?
        .ok()?;
    let answer = String::from_utf8_lossy(&answer);
    if !answer.starts_with("HTTP/1.1 200") {
        return None;
    }
    let (_, body) = answer.split_once("\r\n\r\n")?;
    // Chunked or not: the JSON object is the outermost braces.
    let start = body.find('{')?;
    let end = body.rfind('}')?;
    serde_json::from_str(&body[start..=end]).ok()
}

fn start_master(net: &Net, cluster: &TestCluster, host: &Host, id: Option<u64>) -> Proc {
    let dir = cluster.path(&host.name);
    let certs = copy_node_certs(&cluster.cluster_dir(), &dir.join("cluster"));
    let config = dir.join("master.toml");
    let id = id.map(|id| format!("id = {id}\n")).unwrap_or_default();
    std::fs::write(
        &config,
        format!(
            "heartbeat_interval_ms = 200\nagent_timeout_secs = 5\n\n\
             [discovery]\ninterfaces = [\"eth0\"]\n\n[ha]\npeers = \"mdns\"\n{id}"
        ),
    )
    .expect("master config");
    let args: Vec<String> = vec![
        "--config".into(),
        config.display().to_string(),
        "--cluster".into(),
        certs.display().to_string(),
        "--listen".into(),
        "0.0.0.0:5051".into(),
        "--http".into(),
        "0.0.0.0:5050".into(),
        "--state-dir".into(),
        dir.join("state").display().to_string(),
    ];
    net.spawn(
        host,
        &format!("master-{}", host.name),
        "bramble-master",
        &args,
        &cluster.path("logs"),
    )
}

fn start_agent(net: &Net, cluster: &TestCluster, host: &Host) -> Proc {
    let dir = cluster.path(&host.name);
    let certs = copy_node_certs(&cluster.cluster_dir(), &dir.join("cluster"));
    let config = dir.join("agent.toml");
    std::fs::write(
        &config,
        format!(
            "heartbeat_interval_ms = 200\nports = \"{AGENT_PORTS}\"\n\n[discovery]\ninterfaces = [\"eth0\"]\n\n[attributes]\nhost = \"{}\"\n",
            host.name
        ),
    )
    .expect("agent config");
    let args: Vec<String> = vec![
        "--config".into(),
        config.display().to_string(),
        "--cluster".into(),
        certs.display().to_string(),
        "--work-dir".into(),
        dir.join("work").display().to_string(),
        "--cpus".into(),
        "1".into(),
        "--mem".into(),
        "256".into(),
        "--no-cgroups".into(),
    ];
    net.spawn(
        host,
        &format!("agent-{}", host.name),
        "bramble-agent",
        &args,
        &cluster.path("logs"),
    )
}

fn dump_logs(cluster: &TestCluster) {
    let Ok(entries) = std::fs::read_dir(cluster.path("logs")) else {
        return;
    };
    for e in entries.flatten() {
        let text = std::fs::read_to_string(e.path()).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        let tail = &lines[lines.len().saturating_sub(40)..];
        eprintln!("----- {}\n{}", e.path().display(), tail.join("\n"));
    }
}

struct DumpOnPanic<'a>(&'a TestCluster);

impl Drop for DumpOnPanic<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            dump_logs(self.0);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_masters_on_mdns_form_one_group_and_an_agent_finds_the_leader() {
    if netns::skip("three_masters_on_mdns_form_one_group_and_an_agent_finds_the_leader") {
        return;
    }
    bramble_tests::init_logs();
    let mut net = Net::new();
    let cluster = TestCluster::new();
    std::fs::create_dir_all(cluster.path("logs")).expect("logs dir");
    let _dump = DumpOnPanic(&cluster);
    let hosts: Vec<Host> = (1..=3).map(|i| net.add_host(&format!("m{i}"))).collect();
    let agent_host = net.add_host("a1");
    // The binaries are built on first use: not inside the time measured.
    let _ = bramble_tests::processes::bin_dir();
    let started = Instant::now();
    let mut masters: Vec<Proc> = hosts
        .iter()
        .zip([Some(1), Some(2), None])
        .map(|(h, id)| start_master(&net, &cluster, h, id))
        .collect();

    // One leader, named by every master; the group holds exactly the three.
    let https: Vec<SocketAddr> = hosts
        .iter()
        .map(|h| SocketAddr::from((h.ipv4, 5050)))
        .collect();
    let (leader_index, leader_id) = eventually(
        "the three masters form one group with one leader every master names",
        DEADLINE,
        || {
            let https = https.clone();
            async move {
                let mut states = Vec::new();
                for a in &https {
                    states.push(state_json(*a).await?);
                }
                let leaders: Vec<usize> = states
                    .iter()
                    .enumerate()
                    .filter(|(_, s)| s.get("standby").and_then(|v| v.as_bool()) != Some(true))
                    .map(|(i, _)| i)
                    .collect();
                let [leader] = leaders[..] else { return None };
                let id = states[leader].get("leader")?.as_u64()?;
                let masters = states[leader].get("masters")?.as_array()?;
                if masters.len() != 3 {
                    return None;
                }
                let named = states
                    .iter()
                    .all(|s| s.get("leader").and_then(|v| v.as_u64()) == Some(id));
                named.then_some((leader, id))
            }
        },
    )
    .await;
    eprintln!(
        "group formed on mDNS: master {leader_id} on {} leads, {:?} after start",
        hosts[leader_index].name,
        started.elapsed()
    );
    for (i, m) in masters.iter().enumerate() {
        let log = m.log_text();
        let formed = log.matches("formed the masters' group").count();
        assert!(
            formed <= 1 && (formed == 0 || log.contains("this master forms the group")),
            "master on {} formed {formed} groups",
            hosts[i].name
        );
    }
    let formers = masters
        .iter()
        .filter(|m| m.log_text().contains("formed the masters' group"))
        .count();
    assert_eq!(formers, 1, "exactly one master formed the group");
    let derived = masters[2].log_text();
    assert!(
        derived.contains("derived this card's master id"),
        "the third master derived its id from the machine id"
    );

    // An agent given no master address finds the leader by itself.
    let _agent = start_agent(&net, &cluster, &agent_host);
    let leader_quic = SocketAddr::from((hosts[leader_index].ipv4, 5051));
    eventually("the agent registered with the leader", DEADLINE, || async {
        let state = operator_state(&cluster, leader_quic).await.ok()?;
        state.agents.iter().any(|a| a.connected).then_some(())
    })
    .await;
    for m in &mut masters {
        m.kill_hard();
    }
}

//! Finding a service on the LAN (issue 21): the master advertises each serving instance of the
//! service framework's services on mDNS, and a phone on another host (its own network
//! namespace on the same bridge, browsing with the mdns-sd client) resolves them to the
//! instance's agent's address and port, and hears the goodbye when one dies. Root only (SKIP
//! otherwise): real `bramble-master` and `bramble-agent` processes on namespaced hosts, the
//! service scheduler and the CLI in the root namespace, reaching them over the uplink.

use bramble_tests::netns::{self, HostCluster};
use bramble_tests::processes::{bin_dir, Proc};
use bramble_tests::{eventually, init_logs};
use std::collections::BTreeMap;
use std::process::Command;
use std::time::{Duration, Instant};

const DEADLINE: Duration = Duration::from_secs(30);

/// `bramble service ARGS` against `hc`'s master, from the root namespace: its stdout.
fn service(hc: &HostCluster, args: &[&str]) -> String {
    let out = Command::new(bin_dir().join("bramble"))
        .arg("--master")
        .arg(hc.master_addr().to_string())
        .arg("--cluster")
        .arg(hc.cluster.cluster_dir())
        .arg("service")
        .args(args)
        .output()
        .expect("running bramble service");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "bramble service {args:?} failed: {}{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// What the phone resolved and has not heard withdrawn since: full name → (address, task).
fn heard(phone: &Proc) -> BTreeMap<String, (String, String)> {
    let mut now = BTreeMap::new();
    for line in phone.log_text().lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["resolved", name, _host, addr, task] => {
                let task = task.trim_start_matches("task=").to_string();
                now.insert(name.to_string(), (addr.to_string(), task));
            }
            ["removed", name] => {
                now.remove(*name);
            }
            _ => {}
        }
    }
    now
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serving_instances_resolve_over_mdns_from_another_host_and_a_dead_one_is_withdrawn() {
    if netns::skip("serving_instances_resolve_over_mdns_from_another_host") {
        return;
    }
    if Command::new("python3").arg("--version").output().is_err() {
        eprintln!("SKIP serving_instances_resolve_over_mdns: no python3 for the instances");
        return;
    }
    init_logs();
    // Built first (a no-op in CI), so the time printed is the test's own.
    let _ = bin_dir();
    let started = Instant::now();
    let mut hc = HostCluster::new(2).await;
    hc.start_agents();
    hc.ready().await;
    let phone_host = hc.net.add_host("phone");
    let logs = hc.logs();
    let phone = hc.net.spawn(
        &phone_host,
        "phone",
        "mdns-browse",
        &["_http._tcp.local.".into(), "120".into()],
        &logs,
    );
    let s = |p: &std::path::Path| p.display().to_string();
    let scheduler = Proc::spawn(
        "scheduler",
        "bramble",
        &[
            "--master".into(),
            hc.master_addr().to_string(),
            "--cluster".into(),
            s(&hc.cluster.cluster_dir()),
            "service".into(),
            "scheduler".into(),
            "--state-dir".into(),
            s(&hc.cluster.path("services-state")),
        ],
        &logs,
    );
    scheduler.logged("service specs loaded", DEADLINE).await;

    // Two instances, one per host. No health checks: the scheduler probes an instance at its
    // agent's hostname, and these hosts share this machine's (namespaces share the UTS
    // name), so RUNNING is serving here; checks' effect on health is `services_health.rs`'s.
    let pids = hc.cluster.path("pids");
    std::fs::create_dir_all(&pids).expect("pids dir");
    let spec = hc.cluster.path("web.toml");
    std::fs::write(
        &spec,
        format!(
            r#"name = "web"
instances = 2
cmd = 'echo $$ > "$PIDS/$BRAMBLE_TASK_ID"; exec python3 -m http.server "$PORT0" --bind 0.0.0.0'
cpus = 0.1
mem = 32
ports = 1
[env]
PIDS = "{}"
[constraints]
unique_hostname = false
max_per_agent = 1
[restart]
backoff_secs = 0.2
"#,
            pids.display()
        ),
    )
    .expect("spec file");
    service(&hc, &["apply", &s(&spec)]);

    // The phone resolves web and web-2 at the agents' addresses and the instances' ports.
    let agents = [hc.agent_hosts[0].ipv4, hc.agent_hosts[1].ipv4];
    let both = eventually("the phone resolves web and web-2", DEADLINE, || async {
        let now = heard(&phone);
        (now.len() == 2).then_some(now)
    })
    .await;
    let endpoints = service(&hc, &["endpoints", "web"]);
    for (name, (addr, task)) in &both {
        assert!(
            name == "web._http._tcp.local." || name == "web-2._http._tcp.local.",
            "{both:?}"
        );
        let (ip, port) = addr.split_once(':').expect("ip:port");
        assert!(
            agents.iter().any(|a| a.to_string() == ip),
            "{name} at {ip}, agents at {agents:?}"
        );
        assert!(
            endpoints.contains(&format!(":{port}")),
            "{endpoints} vs {addr}"
        );
        assert!(task.starts_with("web."), "{task}");
    }

    // One dies: the phone hears its goodbye, then its replacement under the freed name.
    let (victim_name, (_, victim)) = both
        .iter()
        .next()
        .map(|(n, v)| (n.clone(), v.clone()))
        .expect("an instance");
    let pid: i32 = std::fs::read_to_string(pids.join(&victim))
        .expect("the victim's pid file")
        .trim()
        .parse()
        .expect("a pid");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .expect("kill the instance");
    eventually(
        "the phone hears the dead instance's goodbye",
        DEADLINE,
        || async {
            let log = phone.log_text();
            log.contains(&format!("removed {victim_name}"))
                .then_some(())
        },
    )
    .await;
    let after = eventually("the replacement is resolved", DEADLINE, || async {
        let now = heard(&phone);
        (now.len() == 2 && now.values().all(|(_, t)| *t != victim)).then_some(now)
    })
    .await;
    assert!(
        after.contains_key(&victim_name),
        "the freed name is reused: {after:?}"
    );
    eprintln!(
        "resolved, withdrawn and replaced over mDNS in {:?}",
        started.elapsed()
    );
}

//! Artifacts fetched into sandboxes end to end, on real `bramble-master`, `bramble-agent`
//! and `bramble service scheduler` processes on loopback: a service whose instances serve a
//! site unpacked from a `.tgz` downloaded from a loopback HTTP server of the test's own, with
//! a start script from the master's artifacts directory; `bramble run --fetch`; and a fetch
//! that fails, ending the task TASK_FAILED with the uri and the cause.

use bramble_tests::file_server::serve_files;
use bramble_tests::processes::*;
use bramble_tests::services::*;
use std::collections::HashMap;
use std::process::Command;

/// `site.tgz` holding `site/ok` and `site/index.html`, made by the system's tar.
fn site_archive(dir: &std::path::Path) -> Vec<u8> {
    let site = dir.join("site");
    std::fs::create_dir_all(&site).expect("site dir");
    std::fs::write(site.join("ok"), "ok\n").expect("ok");
    std::fs::write(site.join("index.html"), "<h1>fetched</h1>\n").expect("index");
    let out = dir.join("site.tgz");
    let made = Command::new("tar")
        .arg("czf")
        .arg(&out)
        .arg("-C")
        .arg(dir)
        .arg("site")
        .status()
        .expect("tar");
    assert!(made.success());
    std::fs::read(out).expect("read site.tgz")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_runs_a_script_from_the_master_serving_a_site_from_a_url() {
    if python3_missing() {
        eprintln!("SKIP: no python3 for the instances' HTTP servers");
        return;
    }
    let net = LoopbackCluster::new();
    // The master's artifacts directory: `<state_dir>/artifacts` by default.
    let artifacts = net.test.path("master-state/artifacts/tools");
    std::fs::create_dir_all(&artifacts).expect("artifacts dir");
    std::fs::write(
        artifacts.join("serve.sh"),
        "#!/bin/sh\ncd site && exec python3 -m http.server \"$PORT0\"\n",
    )
    .expect("serve.sh");
    let archive = site_archive(&net.test.path("build"));
    std::fs::write(net.test.path("site.tgz"), &archive).expect("site.tgz");
    let (sha, _) =
        bramble_proto::image_transfer::file_digest(&net.test.path("site.tgz")).expect("digest");
    let base = serve_files(HashMap::from([("/site.tgz".to_string(), archive)]));

    let _master = net.start_master("master", &MasterCmd::default());
    let agent = net.start_agent(
        "agent",
        &AgentCmd::new("agent1")
            .cpus("2")
            .mem_mib(1024)
            .config("ports = \"32600-32649\"\n"),
    );
    net.connected_agent(DEADLINE).await;

    // `bramble run --fetch`: the master's file is in the sandbox before the command runs.
    let out = bramble(
        &net,
        &[
            "run",
            "--fetch",
            "master:tools/serve.sh",
            "--",
            "cat",
            "serve.sh",
        ],
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("http.server"),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // A fetch that fails ends the task FAILED, saying which uri and why.
    let missing = format!("{base}/missing.tgz");
    let out = bramble(&net, &["run", "--fetch", &missing, "--", "true"]);
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{said}");
    assert!(
        said.contains("TASK_FAILED") && said.contains(&format!("fetching {missing}: HTTP 404")),
        "{said}"
    );
    let escape = bramble(
        &net,
        &["run", "--fetch", "master:../master.redb", "--", "true"],
    );
    assert!(!escape.status.success());
    agent
        .logged(&format!("fetching {missing}: HTTP 404"), DEADLINE)
        .await;

    // The service: both artifacts, health-checked on what the archive held.
    let scheduler = start_scheduler(&net, "scheduler");
    scheduler.logged("service specs loaded", DEADLINE).await;
    let spec = format!(
        r#"name = "site"
instances = 2
cmd = "exec ./serve.sh"
cpus = 0.1
mem = 64
ports = 1
[env]
PYTHONUNBUFFERED = "1"
[[artifacts]]
uri = "{base}/site.tgz"
sha256 = "{sha}"
cache = true
[[artifacts]]
uri = "master:tools/serve.sh"
executable = true
[[health]]
protocol = "http"
path = "/ok"
status = 200
grace_secs = 5.0
interval_secs = 0.3
timeout_secs = 2.0
max_failures = 2
"#
    );
    let file = net.test.path("site.toml");
    std::fs::write(&file, spec).expect("spec file");
    service(&net, &["apply", &file.display().to_string()]);
    let up = endpoints(&net, &scheduler, "site", 2).await;
    for e in &up {
        assert_eq!(get(e, "/ok").await, 200, "{e}");
        assert_eq!(get(e, "/index.html").await, 200, "{e}");
    }
    // One more instance: its archive comes from the agent's cache (the first two may both
    // have downloaded it, at once).
    service(&net, &["scale", "site", "3"]);
    endpoints(&net, &scheduler, "site", 3).await;
    let log = agent.log_text();
    assert!(
        log.lines().any(|l| l.contains("artifact fetched")
            && l.contains("site.tgz")
            && l.contains("cached=true")),
        "agent log:\n{log}"
    );
}

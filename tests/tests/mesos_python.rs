//! Mesos frameworks written in Python against pymesos 0.3.15 (a public Mesos client library,
//! from PyPI) run unmodified on a bramble: a real `bramble-master` and two real
//! `bramble-agent`s on loopback, the frameworks pointed at the master's HTTP `host:port` as
//! they would be at a Mesos master's :5050.
//!
//! The frameworks live in `tests/mesos/` and check the Mesos contract themselves (each prints
//! JSON lines and a final `{"event":"result","ok":..}`); these tests start the cluster, run
//! each with a deadline and assert on what it printed. The examples in
//! `examples/mesos-python/` (the tutorials' factorial and pi frameworks ported to pymesos) run
//! here too, with small inputs, and so does a Mesos framework sharing the cluster with a
//! native `bramble pi` job.
//!
//! The Python side comes from `tests/mesos/setup-venv.sh` (`.ci/run` runs it). Without that
//! venv these tests print why they skip, except under CI (`CI=true`), where they fail.

use bramble_tests::init_logs;
use bramble_tests::processes::{AgentCmd, LoopbackCluster, MasterCmd, Proc};
use serde_json::Value;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

// ---------------------------------------------------------------------------------------------
// The Python side

/// The venv `tests/mesos/setup-venv.sh` makes: its interpreter and the directory holding
/// http-parser's pure-Python parser, which goes on PYTHONPATH.
#[derive(Clone)]
struct Venv {
    python: PathBuf,
    pythonpath: PathBuf,
}

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

/// The venv, or `None` (after saying why) when it is missing outside CI.
fn venv() -> Option<Venv> {
    let dir = std::env::var_os("BRAMBLE_MESOS_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("tests/mesos/.venv"));
    let venv = Venv {
        python: dir.join("bin/python"),
        pythonpath: dir.join("pure"),
    };
    if venv.python.exists() && venv.pythonpath.join("http_parser").is_dir() {
        return Some(venv);
    }
    let why = format!(
        "no pymesos venv at {} (make it with tests/mesos/setup-venv.sh)",
        dir.display()
    );
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("{why}: .ci/run must make it before the tests");
    }
    eprintln!("SKIP: {why}");
    None
}

/// What a Python framework printed, and how it ended.
struct PyRun {
    code: Option<i32>,
    lines: Vec<Value>,
    stdout: String,
    stderr: String,
}

impl PyRun {
    /// The final `{"event": "result"}` line.
    fn result(&self) -> &Value {
        self.lines
            .iter()
            .rev()
            .find(|l| l["event"] == "result")
            .unwrap_or(&Value::Null)
    }

    fn ok(&self) -> bool {
        self.code == Some(0) && self.result()["ok"] == Value::Bool(true)
    }

    fn explain(&self) -> String {
        format!(
            "exit {:?}\n--- stdout\n{}\n--- stderr (tail)\n{}",
            self.code,
            self.stdout,
            tail(&self.stderr, 60)
        )
    }
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Runs `script` (relative to the repo root) with the venv's Python, killing it after
/// `deadline` (each script also has a deadline of its own, shorter than this one).
async fn run_python(venv: &Venv, script: &str, args: &[String], deadline: Duration) -> PyRun {
    let child = tokio::process::Command::new(&venv.python)
        .arg(repo_root().join(script))
        .args(args)
        .env("PYTHONPATH", &venv.pythonpath)
        .env("PYTHONUNBUFFERED", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("starting {script}: {e}"));
    let out = tokio::time::timeout(deadline, child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("{script} still running after {deadline:?}"))
        .unwrap_or_else(|e| panic!("waiting for {script}: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    PyRun {
        code: out.status.code(),
        lines: stdout
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect(),
        stdout,
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

// ---------------------------------------------------------------------------------------------
// The cluster

/// A master and two agents as real processes; the master serves the Mesos scheduler API on
/// a free TCP port, each agent the Mesos executor API on an ephemeral one.
struct MesosCluster {
    net: LoopbackCluster,
    master: Proc,
    agents: Vec<Proc>,
}

/// Principals and secrets of the master's credentials file, when a test wants one.
const PRINCIPALS: [(&str, &str); 2] = [("alice", "alice-secret"), ("bob", "bob-secret")];

impl MesosCluster {
    /// Starts the cluster with agents offering `cpus` each; `credentials` writes the
    /// principals above into a credentials file the master is configured with.
    async fn start(cpus: &str, credentials: bool) -> MesosCluster {
        init_logs();
        let net = LoopbackCluster::new();
        let mut master_cmd = MasterCmd::default();
        if credentials {
            let path = net.test.path("mesos-credentials");
            let lines: String = PRINCIPALS
                .iter()
                .map(|(p, s)| format!("{p} {s}\n"))
                .collect();
            std::fs::write(&path, lines).expect("credentials file");
            master_cmd =
                master_cmd.config(&format!("[mesos]\ncredentials = \"{}\"\n", path.display()));
        }
        let master = net.start_master("master", &master_cmd);
        let agents = (1..=2)
            .map(|i| {
                let cmd = mesos_agent(&format!("agent{i}"), cpus);
                net.start_agent(&format!("agent{i}"), &cmd)
            })
            .collect();
        let c = MesosCluster {
            net,
            master,
            agents,
        };
        c.until("two agents registered", Duration::from_secs(20), || async {
            let s = c.net.state().await?;
            (s.agents.iter().filter(|a| a.connected).count() == 2).then_some(())
        })
        .await;
        let http = c.http();
        c.until(
            "the master's HTTP API answers /version",
            Duration::from_secs(10),
            || async move { (http_get(http, "/version")?.0 == 200).then_some(()) },
        )
        .await;
        c
    }

    /// Polls `check` every 50 ms until it returns `Some`; after `deadline` panics saying what
    /// was awaited, with the processes' logs.
    async fn until<T, F, Fut>(&self, what: &str, deadline: Duration, mut check: F) -> T
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Option<T>>,
    {
        let end = tokio::time::Instant::now() + deadline;
        loop {
            if let Some(v) = check().await {
                return v;
            }
            if tokio::time::Instant::now() >= end {
                panic!(
                    "timed out after {deadline:?} waiting for: {what}\n{}",
                    self.logs()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The master's `host:port` as a Mesos framework takes it.
    fn http(&self) -> SocketAddr {
        self.net.http_addr()
    }

    fn master_arg(&self) -> String {
        self.http().to_string()
    }

    /// The processes' logs, for a failure message.
    fn logs(&self) -> String {
        let mut out = format!(
            "--- master log (tail)\n{}\n",
            tail(&self.master.log_text(), 40)
        );
        for a in &self.agents {
            out += &format!("--- {} log (tail)\n{}\n", a.name, tail(&a.log_text(), 40));
        }
        out
    }

    /// Panics with everything known when `run` did not pass.
    fn assert_ok(&self, what: &str, run: &PyRun) {
        assert!(
            run.ok(),
            "{what} failed:\n{}\n{}",
            run.explain(),
            self.logs()
        );
    }
}

/// An agent of `cpus` cpus and 512 MiB. Its Mesos executor API listens on a port of its own:
/// `AgentCmd` gives every agent `mesos.listen = "127.0.0.1:0"` (two agents share this host).
fn mesos_agent(work: &str, cpus: &str) -> AgentCmd {
    AgentCmd::new(work).cpus(cpus).mem_mib(512)
}

/// A blocking `GET path` over HTTP/1.0: the status and body, `None` when nothing answers.
fn http_get(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").ok()?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).ok()?;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let status = text.split_whitespace().nth(1)?.parse().ok()?;
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_string())?;
    Some((status, body))
}

fn args(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

// ---------------------------------------------------------------------------------------------
// The frameworks of tests/mesos/

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pymesos_command_tasks_go_starting_running_finished_and_teardown_removes_the_framework() {
    let Some(venv) = venv() else { return };
    let c = MesosCluster::start("1", false).await;
    let mut a = vec![c.master_arg()];
    a.extend(args(&["--tasks", "4", "--fail-one", "--deadline", "60"]));
    let run = run_python(
        &venv,
        "tests/mesos/command_tasks.py",
        &a,
        Duration::from_secs(90),
    )
    .await;
    c.assert_ok("command_tasks.py", &run);
    let r = run.result();
    assert_eq!(r["tasks"], 5, "{}", run.explain());
    // STARTING, RUNNING and a terminal update per task, each acknowledged by the framework.
    assert!(r["acked"].as_u64().unwrap_or(0) >= 15, "{}", run.explain());
    // The master forgot the framework (TEARDOWN) and its tasks; the native view agrees.
    let fid = r["framework_id"]
        .as_str()
        .expect("framework id")
        .to_string();
    c.until(
        "the torn-down framework leaves the master's state",
        Duration::from_secs(10),
        || async {
            let s = c.net.state().await?;
            (!s.frameworks.iter().any(|f| f.id.as_str() == fid)).then_some(())
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pymesos_custom_executor_exchanges_framework_messages_both_ways_on_both_agents() {
    let Some(venv) = venv() else { return };
    let c = MesosCluster::start("1", false).await;
    let mut a = vec![c.master_arg()];
    // 0.4 cpu per task on 1-cpu agents (the executor takes 0.1): two tasks per agent, so
    // both agents run an executor.
    a.extend(args(&[
        "--tasks",
        "4",
        "--task-cpus",
        "0.4",
        "--deadline",
        "90",
    ]));
    let run = run_python(
        &venv,
        "tests/mesos/custom_executor.py",
        &a,
        Duration::from_secs(120),
    )
    .await;
    c.assert_ok("custom_executor.py", &run);
    let r = run.result();
    assert_eq!(
        r["results"],
        serde_json::json!({"echo-1": 1, "echo-2": 4, "echo-3": 9, "echo-4": 16}),
        "{}",
        run.explain()
    );
    assert_eq!(r["pongs"], serde_json::json!([1, 2, 3, 4]));
    assert_eq!(
        r["agents"].as_array().map(Vec::len),
        Some(2),
        "{}",
        run.explain()
    );
    assert_eq!(r["executors_lost"], r["agents"], "{}", run.explain());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pymesos_framework_fails_over_to_a_second_process_by_framework_id() {
    let Some(venv) = venv() else { return };
    let c = MesosCluster::start("1", false).await;
    let mut a = vec![c.master_arg()];
    a.extend(args(&["--failover-timeout", "60", "--deadline", "90"]));
    let run = run_python(
        &venv,
        "tests/mesos/failover.py",
        &a,
        Duration::from_secs(120),
    )
    .await;
    c.assert_ok("failover.py", &run);
    let r = run.result();
    assert_eq!(r["resubscribed_as"], r["framework_id"], "{}", run.explain());
    assert_eq!(
        r["reconciled"],
        serde_json::json!([["explicit", "TASK_RUNNING"], ["implicit", "TASK_RUNNING"]]),
        "{}",
        run.explain()
    );
    assert_eq!(r["while_away"]["listed"], true, "{}", run.explain());
    // The master noticed the first process's closed stream and started its failover timer.
    assert_eq!(r["while_away"]["connected"], false, "{}", run.explain());
    assert_eq!(r["killed"], true, "{}", run.explain());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pymesos_credentials_right_work_wrong_are_refused_and_bind_the_framework() {
    let Some(venv) = venv() else { return };
    let c = MesosCluster::start("1", true).await;
    let [(p1, s1), (p2, s2)] = PRINCIPALS;
    let mut a = vec![c.master_arg()];
    a.extend(args(&[
        "--principal",
        p1,
        "--secret",
        s1,
        "--other-principal",
        p2,
        "--other-secret",
        s2,
        "--deadline",
        "90",
    ]));
    let run = run_python(
        &venv,
        "tests/mesos/credentials.py",
        &a,
        Duration::from_secs(120),
    )
    .await;
    c.assert_ok("credentials.py", &run);
    let o = &run.result()["outcomes"];
    assert_eq!(o["wrong_secret"]["outcome"], "refused", "{}", run.explain());
    assert_eq!(o["no_credentials"]["outcome"], "refused");
    assert_eq!(o["other_principal_own_framework"]["outcome"], "registered");
    assert_eq!(o["other_principal_takeover"]["outcome"], "refused");
    // The wrong secret is refused at the HTTP level: 401, which pymesos raises on.
    let wrong = o["wrong_secret"]["detail"].as_str().unwrap_or("");
    assert!(wrong.contains("401"), "wrong secret: {wrong}");
    // /version stays open (pymesos reads it without credentials).
    assert_eq!(http_get(c.http(), "/version").map(|r| r.0), Some(200));
}

// ---------------------------------------------------------------------------------------------
// Sharing the cluster with a native framework

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mesos_framework_and_a_native_pi_job_share_the_cluster_and_both_finish() {
    let Some(venv) = venv() else { return };
    let c = MesosCluster::start("2", false).await;
    let mut a = vec![c.master_arg()];
    a.extend(args(&[
        "--name",
        "py-mixed",
        "--tasks",
        "8",
        "--command",
        "sleep 3",
        "--deadline",
        "90",
    ]));
    let python = {
        let venv = venv.clone();
        tokio::spawn(async move {
            run_python(
                &venv,
                "tests/mesos/command_tasks.py",
                &a,
                Duration::from_secs(120),
            )
            .await
        })
    };
    let holds = |name: &'static str| {
        let net = &c.net;
        move || async move {
            let s = net.state().await?;
            s.frameworks
                .iter()
                .any(|f| f.name == name && f.allocated.cpus() > 0.0)
                .then_some(())
        }
    };
    c.until(
        "the Mesos framework runs its tasks",
        Duration::from_secs(30),
        holds("py-mixed"),
    )
    .await;
    let pi_args: Vec<String> = vec![
        "--master".into(),
        c.net.master_addr().to_string(),
        "--cluster".into(),
        c.net.test.cluster_dir().display().to_string(),
        "pi".into(),
        "--terms".into(),
        "1e8".into(),
        "--tasks".into(),
        "16".into(),
        "--json".into(),
        "--journal".into(),
        c.net.test.path("pi.journal").display().to_string(),
    ];
    let mut pi = Proc::spawn_capturing("pi", "bramble", &pi_args, &c.net.logs);
    // Both hold resources from the one allocator at the same time.
    c.until(
        "the native pi job gets resources while the Mesos framework holds its own",
        Duration::from_secs(30),
        || async {
            holds("py-mixed")().await?;
            // The pi framework is named after its job (`pi 1e8`).
            holds("pi 1e8")().await
        },
    )
    .await;
    let run = python.await.expect("python framework task");
    c.assert_ok("command_tasks.py beside bramble pi", &run);
    let status = pi.exited("bramble pi", Duration::from_secs(120)).await;
    let out = std::fs::read_to_string(pi.stdout_path()).unwrap_or_default();
    assert!(
        status.success(),
        "bramble pi failed: {status}\n{out}\n{}",
        pi.log_text()
    );
    let report: Value = serde_json::from_str(out.trim()).expect("bramble pi --json");
    let estimate = report["pi"].as_f64().expect("pi in the report");
    assert!(
        (estimate - std::f64::consts::PI).abs() < 1e-6,
        "pi {estimate}"
    );
}

// ---------------------------------------------------------------------------------------------
// examples/mesos-python/

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn example_factorial_framework_runs_unmodified_on_a_bramble() {
    let Some(venv) = venv() else { return };
    let c = MesosCluster::start("2", false).await;
    let a = vec![c.master_arg(), "5".into(), "7".into(), "10".into()];
    let run = run_python(
        &venv,
        "examples/mesos-python/factorial.py",
        &a,
        Duration::from_secs(90),
    )
    .await;
    assert_eq!(run.code, Some(0), "{}\n{}", run.explain(), c.logs());
    for line in [
        "The factorial for 5 is 120",
        "The factorial for 7 is 5040",
        "The factorial for 10 is 3628800",
        "All tasks done",
    ] {
        assert!(
            run.stdout.contains(line),
            "missing {line:?}\n{}",
            run.explain()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn example_pi_framework_sums_its_executors_messages_on_a_bramble() {
    let Some(venv) = venv() else { return };
    let c = MesosCluster::start("2", false).await;
    let a = vec![c.master_arg(), "--tasks".into(), "20".into()];
    let run = run_python(
        &venv,
        "examples/mesos-python/pi.py",
        &a,
        Duration::from_secs(120),
    )
    .await;
    assert_eq!(run.code, Some(0), "{}\n{}", run.explain(), c.logs());
    // 4 - 4/3 + 4/5 - ... over 21 terms (4 plus 20 messages) is 3.18918...
    let last = run
        .stdout
        .lines()
        .rev()
        .find_map(|l| l.strip_prefix("Pi ~ "))
        .unwrap_or_else(|| panic!("no `Pi ~` line\n{}", run.explain()));
    let estimate: f64 = last.trim().parse().expect("a number after `Pi ~`");
    let want: f64 = (0..=20)
        .map(|k| 4.0 * if k % 2 == 0 { 1.0 } else { -1.0 } / (2 * k + 1) as f64)
        .sum();
    assert!(
        (estimate - want).abs() < 1e-9,
        "pi {estimate}, wanted {want}"
    );
}

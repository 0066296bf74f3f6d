//! Level 3: the built binaries as real processes on loopback. Builds them once (with the same
//! cargo and profile as the tests), starts them with their stderr captured to files, and kills
//! them for real. Every process started here is killed when its guard drops.
//!
//! [`LoopbackCluster`] with [`MasterCmd`] and [`AgentCmd`] is the one place that knows the
//! command lines and config files of `bramble-master` and `bramble-agent` in tests, so a new
//! flag or setting is added here once rather than in every real-process test.

use crate::framework::TestFramework;
use crate::{eventually, init_logs, operator_state, TestCluster};
use bramble_proto::identity::Role;
use bramble_proto::messages::ClusterState;
use bramble_proto::AgentId;
use std::ffi::OsString;
use std::fs::File;
use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

/// The directory holding `bramble-master`, `bramble-agent` and `bramble`, built on first use.
pub fn bin_dir() -> PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .expect("workspace root")
            .to_path_buf();
        let status = Command::new(env!("CARGO"))
            // Exactly the command `.ci/run` builds with, so this is a no-op there.
            .args(["build", "--workspace", "--bins", "--locked", "--quiet"])
            // A release-built benchmark measures release binaries.
            .args((!cfg!(debug_assertions)).then_some("--release"))
            .current_dir(&root)
            .status()
            .expect("running cargo build for the binaries");
        assert!(status.success(), "building the binaries failed");
        // Tests run from target/<profile>/deps/, this crate's binaries from target/<profile>/.
        let exe = std::env::current_exe().expect("test exe path");
        let dir = exe.parent().expect("target/<profile>");
        if dir.ends_with("deps") {
            dir.parent().expect("target/<profile>").to_path_buf()
        } else {
            dir.to_path_buf()
        }
    })
    .clone()
}

/// A UDP port free right now on 127.0.0.1.
pub fn free_udp_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// A TCP port free right now on 127.0.0.1 (HTTP ports: the master's API, an agent's Mesos
/// executor API).
pub fn free_tcp_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .map(|a| a.port())
        .expect("free TCP port")
}

/// A child process that is SIGKILLed (with its process group) when dropped.
pub struct Proc {
    pub name: String,
    pub child: Child,
    pub log: PathBuf,
}

impl Proc {
    pub fn spawn(name: &str, binary: &str, args: &[String], log_dir: &Path) -> Proc {
        Self::spawn_with(name, binary, args, &[], log_dir, Stdio::null())
    }

    /// Like [`Proc::spawn`], with stdout kept in `<name>.out` (see [`Proc::stdout_path`]).
    pub fn spawn_capturing(name: &str, binary: &str, args: &[String], log_dir: &Path) -> Proc {
        let out = File::create(log_dir.join(format!("{name}.out"))).expect("stdout file");
        Self::spawn_with(name, binary, args, &[], log_dir, Stdio::from(out))
    }

    fn spawn_with(
        name: &str,
        binary: &str,
        args: &[String],
        env: &[(String, OsString)],
        log_dir: &Path,
        stdout: Stdio,
    ) -> Proc {
        let log = log_dir.join(format!("{name}.log"));
        let stderr = File::create(&log).expect("log file");
        let child = Command::new(bin_dir().join(binary))
            .args(args)
            .env("RUST_LOG", "info")
            .env_remove("RUST_BACKTRACE")
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {binary}: {e}"));
        Proc {
            name: name.to_string(),
            child,
            log,
        }
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// SIGKILL, as a power cut would.
    pub fn kill_hard(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Waits (up to `deadline`) for the process to exit on its own and returns its status.
    pub async fn exited(&mut self, what: &str, deadline: Duration) -> ExitStatus {
        eventually(what, deadline, || {
            let exited = self.child.try_wait().expect("try_wait");
            async move { exited }
        })
        .await
    }

    /// Where [`Proc::spawn_capturing`] keeps stdout.
    pub fn stdout_path(&self) -> PathBuf {
        self.log.with_extension("out")
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits (up to `deadline`) until the process's log contains `needle` (e.g. an agent's
    /// "registered with master": the new process, not the master's stale view, says it is
    /// back).
    pub async fn logged(&self, needle: &str, deadline: Duration) {
        let what = format!("{} to log {needle:?}", self.name);
        eventually(&what, deadline, || {
            let found = self.log_text().contains(needle);
            async move { found.then_some(()) }
        })
        .await
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill_hard();
    }
}

/// `bramble --master … --cluster … ARGS`: its output, whether or not it succeeded.
pub fn bramble(net: &LoopbackCluster, args: &[&str]) -> std::process::Output {
    Command::new(bin_dir().join("bramble"))
        .arg("--master")
        .arg(net.master_addr().to_string())
        .arg("--cluster")
        .arg(net.test.cluster_dir())
        .args(args)
        .output()
        .expect("running bramble")
}

/// `GET path` on `addr` (an address, or `host:port`) over a plain socket (HTTP/1.0, no client library): the status code
/// and the body.
pub async fn http_get(
    addr: impl tokio::net::ToSocketAddrs,
    path: &str,
) -> std::io::Result<(u16, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await?;
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").as_bytes())
        .await?;
    let mut answer = String::new();
    s.read_to_string(&mut answer).await?;
    let status = answer
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("no status line in {answer:?}")))?;
    let body = answer
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok((status, body))
}

pub fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// Kills a process group (a task left behind by a SIGKILLed agent).
pub fn kill_group(pgid: i32) {
    let _ = nix::sys::signal::killpg(
        nix::unistd::Pid::from_raw(pgid),
        nix::sys::signal::Signal::SIGKILL,
    );
}

pub fn alive(pid: i32) -> bool {
    // A zombie is dead for our purposes.
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            !s.rsplit(')')
                .next()
                .unwrap_or("")
                .trim_start()
                .starts_with('Z')
        })
        .unwrap_or(false)
}

/// Settings of a `bramble-master` process: heartbeats every 200 ms (unless set) and test-sized timeouts
/// (by default a 2 s agent timeout and an allocation round every 200 ms).
#[derive(Debug, Clone)]
pub struct MasterCmd {
    heartbeat_interval_ms: u64,
    agent_timeout_secs: f64,
    allocation_interval_ms: u64,
    extra: String,
}

impl Default for MasterCmd {
    fn default() -> Self {
        Self {
            heartbeat_interval_ms: 200,
            agent_timeout_secs: 2.0,
            allocation_interval_ms: 200,
            extra: String::new(),
        }
    }
}

impl MasterCmd {
    /// Heartbeats at this interval instead of the tests' 200 ms (the shipped default is
    /// 1000 ms).
    pub fn heartbeat_interval_ms(mut self, ms: u64) -> Self {
        self.heartbeat_interval_ms = ms;
        self
    }

    pub fn agent_timeout_secs(mut self, secs: f64) -> Self {
        self.agent_timeout_secs = secs;
        self
    }

    pub fn allocation_interval_ms(mut self, ms: u64) -> Self {
        self.allocation_interval_ms = ms;
        self
    }

    /// More lines for `master.toml`, after the defaults.
    pub fn config(mut self, toml: &str) -> Self {
        self.extra.push_str(toml);
        self
    }

    fn config_text(&self) -> String {
        format!(
            "heartbeat_interval_ms = {}\nagent_timeout_secs = {}\nallocation_interval_ms = {}\n{}",
            self.heartbeat_interval_ms,
            self.agent_timeout_secs,
            self.allocation_interval_ms,
            self.extra
        )
    }
}

/// The loopback ports of a replicated group of masters (`[ha]`): each one's QUIC, HTTP and
/// replication port, free when the group was made. Masters are numbered from 1.
#[derive(Debug, Clone)]
pub struct HaGroup {
    ports: Vec<(u16, u16, u16)>,
}

impl HaGroup {
    pub fn new(masters: usize) -> Self {
        let mut ports = Vec::new();
        while ports.len() < masters {
            let (q, r) = (free_udp_port(), free_udp_port());
            let h = free_tcp_port();
            let taken = ports
                .iter()
                .any(|&(a, _, c)| [a, c].contains(&q) || [a, c].contains(&r));
            if q != r && !taken {
                ports.push((q, h, r));
            }
        }
        Self { ports }
    }

    pub fn len(&self) -> usize {
        self.ports.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ports.is_empty()
    }

    /// Master `id`'s QUIC address (agents, frameworks, operators).
    pub fn quic(&self, id: usize) -> SocketAddr {
        addr(self.ports[id - 1].0)
    }

    /// Master `id`'s HTTP address.
    pub fn http(&self, id: usize) -> SocketAddr {
        addr(self.ports[id - 1].1)
    }

    /// Master `id`'s replication address.
    pub fn replication(&self, id: usize) -> SocketAddr {
        addr(self.ports[id - 1].2)
    }

    /// `[ha] peers` for master.toml, naming masters `ids`.
    fn peers_of(&self, ids: &[usize]) -> String {
        ids.iter()
            .map(|&id| format!("\"{id}={}\"", self.replication(id)))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// Settings of a `bramble-agent` process: its work dir (a directory under the cluster's temp
/// dir, with its config file `<work>.toml` beside it), the resources it offers (by default
/// 1 cpu and 256 MiB), heartbeats every 200 ms, a 1 s kill grace, no cgroups.
#[derive(Debug, Clone)]
pub struct AgentCmd {
    work: String,
    cpus: String,
    mem_mib: u64,
    disk_mib: Option<u64>,
    extra: String,
    env: Vec<(String, OsString)>,
    cluster: Option<PathBuf>,
    masters: Option<Vec<String>>,
    master: Option<SocketAddr>,
}

impl AgentCmd {
    pub fn new(work: &str) -> Self {
        Self {
            work: work.to_string(),
            cpus: "1".into(),
            mem_mib: 256,
            disk_mib: None,
            extra: String::new(),
            env: Vec::new(),
            cluster: None,
            masters: None,
            master: None,
        }
    }

    /// The masters to dial, as `masters = [...]` in the config file, instead of `--master`
    /// naming the cluster's master (the masters of a replicated group).
    pub fn masters(mut self, masters: &[SocketAddr]) -> Self {
        self.masters = Some(masters.iter().map(|m| m.to_string()).collect());
        self
    }

    /// Another master address than the cluster's own (one master of a replicated group).
    pub fn master(mut self, addr: SocketAddr) -> Self {
        self.master = Some(addr);
        self
    }

    /// Another cluster directory than the cluster's own (a card flashed for another cluster).
    pub fn cluster_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.cluster = Some(dir.into());
        self
    }

    pub fn cpus(mut self, cpus: &str) -> Self {
        self.cpus = cpus.to_string();
        self
    }

    pub fn mem_mib(mut self, mib: u64) -> Self {
        self.mem_mib = mib;
        self
    }

    pub fn disk_mib(mut self, mib: u64) -> Self {
        self.disk_mib = Some(mib);
        self
    }

    /// Offers the 25 ports of block `index` from `first` (`first + 25 × index` and the 24
    /// after it): tests with several agents give each its own block, and each test its own
    /// `first`, so no two agents anywhere offer the same port.
    pub fn port_block(self, first: usize, index: usize) -> Self {
        let base = first + 25 * index;
        self.config(&format!("ports = \"{base}-{}\"\n", base + 24))
    }

    /// More lines for the agent's config file, after the defaults (top-level keys first, then
    /// tables).
    pub fn config(mut self, toml: &str) -> Self {
        self.extra.push_str(toml);
        self
    }

    /// An environment variable for the process.
    pub fn env(mut self, key: &str, value: impl Into<OsString>) -> Self {
        self.env.push((key.to_string(), value.into()));
        self
    }

    fn config_text(&self) -> String {
        let masters = match &self.masters {
            Some(list) => format!("masters = {list:?}\n"),
            None => String::new(),
        };
        format!(
            // Several agents share this host: the Mesos executor API takes a free port each.
            "{masters}heartbeat_interval_ms = 200\nkill_grace_secs = 1\nmesos.listen = \"127.0.0.1:0\"\n{}",
            self.extra
        )
    }
}

/// A cluster of real processes on loopback: a fresh identity, the UDP port the master listens
/// on, and the directory every process's log goes to. The master's state dir and each agent's
/// work dir stay the same across starts, so a process started again after a SIGKILL recovers
/// what the killed one left.
pub struct LoopbackCluster {
    pub test: TestCluster,
    pub port: u16,
    /// The master's HTTP port (web UI, JSON API, Mesos scheduler API); the same across
    /// restarts of the master.
    pub http_port: u16,
    pub logs: PathBuf,
}

impl LoopbackCluster {
    pub fn new() -> Self {
        init_logs();
        let test = TestCluster::new();
        let logs = test.path("logs");
        std::fs::create_dir_all(&logs).expect("logs dir");
        Self {
            test,
            port: free_udp_port(),
            http_port: free_tcp_port(),
            logs,
        }
    }

    pub fn master_addr(&self) -> SocketAddr {
        addr(self.port)
    }

    /// The master's HTTP address: what a Mesos framework is pointed at.
    pub fn http_addr(&self) -> SocketAddr {
        addr(self.http_port)
    }

    /// Starts `bramble-master` with `cmd`'s settings; its log is `<name>.log`.
    pub fn start_master(&self, name: &str, cmd: &MasterCmd) -> Proc {
        let config = self.test.path("master.toml");
        std::fs::write(&config, cmd.config_text()).expect("master config");
        let args = vec![
            "--config".into(),
            config.display().to_string(),
            "--cluster".into(),
            self.test.cluster_dir().display().to_string(),
            "--listen".into(),
            self.master_addr().to_string(),
            "--http".into(),
            self.http_addr().to_string(),
            "--state-dir".into(),
            self.test.path("master-state").display().to_string(),
        ];
        Proc::spawn(name, "bramble-master", &args, &self.logs)
    }

    /// Starts master `id` (1-based) of the replicated group `group` with `cmd`'s settings and
    /// `[ha]`; its log is `<name>.log`, its state dir `master-state-<id>` (the same across
    /// restarts). Every master bootstraps the group on its first start (an empty store).
    pub fn start_ha_master(&self, name: &str, cmd: &MasterCmd, group: &HaGroup, id: usize) -> Proc {
        let all: Vec<usize> = (1..=group.len()).collect();
        self.start_ha_master_as(name, cmd, group, id, &all, true)
    }

    /// [`Self::start_ha_master`] with `[ha] peers` naming only masters `peers` of `group`,
    /// and `bootstrap` only if asked: a master started without it on an empty store waits to
    /// be added (`bramble masters add`).
    pub fn start_ha_master_as(
        &self,
        name: &str,
        cmd: &MasterCmd,
        group: &HaGroup,
        id: usize,
        peers: &[usize],
        bootstrap: bool,
    ) -> Proc {
        let config = self.test.path(&format!("master-{id}.toml"));
        let text = format!(
            "{}\n[ha]\nid = {id}\npeers = [{}]\nbootstrap = {bootstrap}\n",
            cmd.config_text(),
            group.peers_of(peers)
        );
        std::fs::write(&config, text).expect("master config");
        let args = vec![
            "--config".into(),
            config.display().to_string(),
            "--cluster".into(),
            self.test.cluster_dir().display().to_string(),
            "--listen".into(),
            group.quic(id).to_string(),
            "--http".into(),
            group.http(id).to_string(),
            "--state-dir".into(),
            self.test
                .path(&format!("master-state-{id}"))
                .display()
                .to_string(),
        ];
        Proc::spawn(name, "bramble-master", &args, &self.logs)
    }

    /// Where an agent started with `cmd` keeps its sandboxes and checkpoints.
    pub fn work_dir(&self, cmd: &AgentCmd) -> PathBuf {
        self.test.path(&cmd.work)
    }

    /// Starts `bramble-agent` with `cmd`'s settings against this cluster's master; its log is
    /// `<name>.log`.
    pub fn start_agent(&self, name: &str, cmd: &AgentCmd) -> Proc {
        let config = self.test.path(&format!("{}.toml", cmd.work));
        std::fs::write(&config, cmd.config_text()).expect("agent config");
        let mut args: Vec<String> = vec![
            "--config".into(),
            config.display().to_string(),
            "--cluster".into(),
            cmd.cluster
                .clone()
                .unwrap_or_else(|| self.test.cluster_dir())
                .display()
                .to_string(),
            "--work-dir".into(),
            self.work_dir(cmd).display().to_string(),
            "--cpus".into(),
            cmd.cpus.clone(),
            "--mem".into(),
            cmd.mem_mib.to_string(),
        ];
        if cmd.masters.is_none() {
            let master = cmd.master.unwrap_or_else(|| self.master_addr());
            args.extend(["--master".into(), master.to_string()]);
        }
        if let Some(disk) = cmd.disk_mib {
            args.extend(["--disk".into(), disk.to_string()]);
        }
        args.push("--no-cgroups".into());
        Proc::spawn_with(
            name,
            "bramble-agent",
            &args,
            &cmd.env,
            &self.logs,
            Stdio::null(),
        )
    }

    /// A framework called `name` subscribed to this cluster's master.
    pub async fn framework(&self, name: &str) -> TestFramework {
        TestFramework::start(
            self.master_addr(),
            self.test.credentials(Role::Framework),
            name,
        )
        .await
    }

    /// The master's state over a fresh operator connection; `None` while it does not answer.
    pub async fn state(&self) -> Option<ClusterState> {
        operator_state(&self.test, self.master_addr()).await.ok()
    }

    /// Waits (up to `deadline`) until the master lists a connected agent; returns its id.
    pub async fn connected_agent(&self, deadline: Duration) -> AgentId {
        eventually("the agent process registers", deadline, || async {
            let s = self.state().await?;
            s.agents.iter().find(|a| a.connected).map(|a| a.id.clone())
        })
        .await
    }
}

impl Default for LoopbackCluster {
    fn default() -> Self {
        Self::new()
    }
}

/// Tasks outlive a SIGKILLed agent on purpose (for the recovery timeout, 15 minutes by
/// default), and a test's `Proc`s are SIGKILLed when dropped: whatever still runs in the
/// cluster's directories (tasks' sandboxes are there) is ended with it, so a test's instances
/// do not hold their ports into the next run.
impl Drop for LoopbackCluster {
    fn drop(&mut self) {
        for (pid, _) in processes_under(self.test.dir.path(), &[std::process::id() as i32]) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}

/// How many unacknowledged status updates an agent holds on disk under its work dir
/// `work_dir`, read from outside (the agent may be running; nothing is written), through the
/// update log's own reader (`StatusUpdateManager::pending_on_disk`), so the tests never guess
/// the format. Acknowledgements the agent has not yet flushed (at most one burst's) are not
/// seen.
pub fn pending_updates(work_dir: &Path) -> usize {
    let dir = bramble_agent::paths::WorkDir::new(work_dir).updates_dir();
    if !dir.exists() {
        return 0; // no update ever recorded
    }
    // An unreadable log fails the test loudly rather than reading as "nothing pending".
    match bramble_agent::status_updates::StatusUpdateManager::pending_on_disk(&dir) {
        Ok(n) => n,
        Err(e) => panic!("{}: reading the status update log: {e}", dir.display()),
    }
}

/// Processes (other than `except`) whose working directory is inside `root`: the executors
/// and tasks of agents whose work dirs are there, which outlive a SIGKILLed agent on purpose.
pub fn processes_under(root: &Path, except: &[i32]) -> Vec<(i32, String)> {
    let mut found = Vec::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return found;
    };
    for entry in dir.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<i32>().ok())
        else {
            continue;
        };
        if except.contains(&pid) || !alive(pid) {
            continue;
        }
        let Ok(cwd) = std::fs::read_link(entry.path().join("cwd")) else {
            continue;
        };
        if cwd.starts_with(root) {
            let cmd = std::fs::read(entry.path().join("cmdline"))
                .map(|b| String::from_utf8_lossy(&b).replace('\0', " "))
                .unwrap_or_default();
            found.push((pid, cmd));
        }
    }
    found
}

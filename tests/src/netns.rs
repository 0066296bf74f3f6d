//! Level 4: real hosts. Network namespaces joined by a bridge, so mDNS multicast, partitions
//! and discovery are exercised for real, with the built binaries (root only).
//!
//! Layout of one [`Net`] (every name carries a per-run id, `<pid>x<n>`, so parallel tests and
//! parallel runs never collide):
//!
//! ```text
//!   root namespace (the test process)          namespace bramble-<id>-sw
//!   brm<id> 198.18.S.254/24  ── veth ──  up0 ─┐
//!                                              br0 (bridge, no physical port)
//!   namespace bramble-<id>-m   eth0 ── veth ── v-m ─┤
//!   namespace bramble-<id>-a1  eth0 ── veth ── v-a1 ┘ ...
//! ```
//!
//! The bridge lives in its own namespace, so nothing is ever attached to the machine's real
//! network card and deleting that namespace removes every veth with it. The root namespace gets
//! one port on the bridge (with an address in the test subnet) so the test process can dial
//! the master's QUIC address itself and run a framework in-process. Addresses come from
//! 198.18.0.0/15 (RFC 2544's benchmarking range, never a real LAN) plus a ULA IPv6 prefix; a
//! subnet already routed on this machine is skipped.
//!
//! Processes run as `ip netns exec NS <binary> ...`. Everything is torn down on drop — every
//! process left in the namespaces (tasks run in their own sessions and outlive their agent)
//! is SIGKILLed, then the namespaces are deleted — also when a test panics. A panicking
//! [`HostCluster`] prints the tail of every log first.

use crate::processes::{bin_dir, Proc};
use crate::{eventually, operator_state, TestCluster};
use bramble_proto::identity::{files, Role};
use std::fs::File;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;
use std::time::Duration;

/// Why namespaced tests cannot run here, if they cannot.
pub fn unavailable() -> Option<String> {
    if !crate::is_root() {
        return Some("not running as root".to_string());
    }
    match Command::new("ip")
        .args(["netns", "list"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
    {
        Ok(s) if s.success() => None,
        Ok(s) => Some(format!("`ip netns list` failed ({s})")),
        Err(e) => Some(format!("cannot run `ip`: {e}")),
    }
}

/// True (after saying why on stderr) when `test` must be skipped.
pub fn skip(test: &str) -> bool {
    match unavailable() {
        None => false,
        Some(why) => {
            eprintln!("SKIP {test}: needs root and ip netns ({why})");
            true
        }
    }
}

/// Runs `ip ARGS`, panicking with its stderr on failure.
pub fn ip(args: &[&str]) {
    let out = Command::new("ip")
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("running ip {}: {e}", args.join(" ")));
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr).trim()
    );
}

fn ip_quiet(args: &[&str]) {
    let _ = Command::new("ip")
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

static NEXT_NET: AtomicU32 = AtomicU32::new(0);
/// Held while choosing a subnet and creating the uplink, so two nets in one process never
/// pick the same one.
static SUBNETS: Mutex<()> = Mutex::new(());

/// One namespaced host on the bridge.
#[derive(Debug, Clone)]
pub struct Host {
    /// Short name, e.g. `a1`.
    pub name: String,
    /// Its network namespace.
    pub ns: String,
    pub ipv4: Ipv4Addr,
    pub ipv6: Ipv6Addr,
    /// Its port on the bridge (in the switch namespace): set down to cut the host off.
    bridge_port: String,
}

/// A bridge in its own namespace, an uplink from the root namespace, and hosts.
pub struct Net {
    pub id: String,
    switch: String,
    uplink: String,
    /// 198.18.0.0/15 split into /24s: `(second octet, third octet)`.
    subnet: (u8, u8),
    namespaces: Vec<String>,
    hosts: u8,
}

impl Net {
    /// Creates the switch namespace, its bridge and the root namespace's port on it.
    pub fn new() -> Net {
        let n = NEXT_NET.fetch_add(1, Ordering::Relaxed);
        let pid = std::process::id();
        let id = format!("{pid}x{n}");
        let switch = format!("bramble-{id}-sw");
        let uplink = format!("brm{}", short_id(pid, n));
        let _guard = SUBNETS.lock().unwrap_or_else(|e| e.into_inner());
        let subnet = free_subnet(pid.wrapping_mul(7).wrapping_add(n));
        let mut net = Net {
            id,
            switch: switch.clone(),
            uplink: uplink.clone(),
            subnet,
            namespaces: Vec::new(),
            hosts: 0,
        };
        net.add_namespace(&switch);
        ip(&["-n", &switch, "link", "add", "br0", "type", "bridge"]);
        // No IGMP snooping: with no querier on this bridge it could drop mDNS multicast.
        ip(&[
            "-n",
            &switch,
            "link",
            "set",
            "br0",
            "type",
            "bridge",
            "mcast_snooping",
            "0",
        ]);
        ip(&["-n", &switch, "link", "set", "br0", "up"]);
        ip(&[
            "link", "add", &uplink, "type", "veth", "peer", "name", "up0", "netns", &switch,
        ]);
        ip(&["-n", &switch, "link", "set", "up0", "master", "br0", "up"]);
        let gw = format!("{}/24", net.ipv4(254));
        ip(&["addr", "add", &gw, "dev", &uplink]);
        ip(&["link", "set", &uplink, "up"]);
        net
    }

    /// The root namespace's port on the bridge (address `.254`): where a test process's own
    /// mDNS daemons can speak to the hosts, and to each other.
    pub fn uplink(&self) -> &str {
        &self.uplink
    }

    /// The IPv4 address `.last` in this net's /24.
    pub fn ipv4(&self, last: u8) -> Ipv4Addr {
        Ipv4Addr::new(198, self.subnet.0, self.subnet.1, last)
    }

    /// The IPv6 (ULA) address `::last` in this net's /64.
    pub fn ipv6(&self, last: u8) -> Ipv6Addr {
        let s = ((self.subnet.0 as u16) << 8) | self.subnet.1 as u16;
        Ipv6Addr::new(0xfd42, 0xb7a3, s, 0, 0, 0, 0, last as u16)
    }

    fn add_namespace(&mut self, ns: &str) {
        ip_quiet(&["netns", "del", ns]); // a leftover from a crashed run with a reused pid
        ip(&["netns", "add", ns]);
        self.namespaces.push(ns.to_string());
        ip(&["-n", ns, "link", "set", "lo", "up"]);
    }

    /// Adds a host called `name` (short: it names a veth) with the next free addresses.
    pub fn add_host(&mut self, name: &str) -> Host {
        self.hosts += 1;
        let last = 10 + self.hosts;
        let ns = format!("bramble-{}-{name}", self.id);
        self.add_namespace(&ns);
        // Addresses usable at once: no duplicate address detection on the test link.
        for key in ["all", "default"] {
            let _ = Command::new("ip")
                .args(["netns", "exec", &ns, "sysctl", "-qw"])
                .arg(format!("net.ipv6.conf.{key}.accept_dad=0"))
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
        let bridge_port = format!("v-{name}");
        ip(&[
            "-n",
            &self.switch,
            "link",
            "add",
            &bridge_port,
            "type",
            "veth",
            "peer",
            "name",
            "eth0",
            "netns",
            &ns,
        ]);
        ip(&[
            "-n",
            &self.switch,
            "link",
            "set",
            &bridge_port,
            "master",
            "br0",
            "up",
        ]);
        let host = Host {
            name: name.to_string(),
            ns: ns.clone(),
            ipv4: self.ipv4(last),
            ipv6: self.ipv6(last),
            bridge_port,
        };
        self.address_host(&host);
        host
    }

    /// Unplugs (`false`) or replugs (`true`) the host's cable at the bridge.
    pub fn set_link(&self, host: &Host, up: bool) {
        let state = if up { "up" } else { "down" };
        ip(&["-n", &self.switch, "link", "set", &host.bridge_port, state]);
    }

    /// Moves the host to new addresses, as if another machine took its place: a new MAC
    /// (hence a new IPv6 link-local address), IPv4 `.last` and IPv6 `::last`; every old
    /// address is gone.
    pub fn move_host(&self, host: &mut Host, last: u8) {
        let mac = format!(
            "02:b7:{:02x}:{:02x}:00:{last:02x}",
            self.subnet.0, self.subnet.1
        );
        ip(&["-n", &host.ns, "link", "set", "eth0", "down"]);
        ip(&["-n", &host.ns, "addr", "flush", "dev", "eth0"]);
        ip(&["-n", &host.ns, "link", "set", "eth0", "address", &mac]);
        host.ipv4 = self.ipv4(last);
        host.ipv6 = self.ipv6(last);
        self.address_host(host);
    }

    /// Removes the host's IPv4 address: it speaks IPv6 only from now on.
    pub fn drop_ipv4(&self, host: &Host) {
        ip(&["-n", &host.ns, "-4", "addr", "flush", "dev", "eth0"]);
    }

    fn address_host(&self, host: &Host) {
        let v4 = format!("{}/24", host.ipv4);
        let v6 = format!("{}/64", host.ipv6);
        ip(&["-n", &host.ns, "addr", "add", &v4, "dev", "eth0"]);
        ip(&["-n", &host.ns, "addr", "add", &v6, "dev", "eth0", "nodad"]);
        ip(&["-n", &host.ns, "link", "set", "eth0", "up"]);
    }

    /// Starts `binary` (from [`bin_dir`], or a path) inside `host`, stderr to `log_dir/name.log`.
    pub fn spawn(
        &self,
        host: &Host,
        name: &str,
        binary: &str,
        args: &[String],
        log_dir: &Path,
    ) -> Proc {
        let program = if binary.starts_with('/') {
            PathBuf::from(binary)
        } else {
            bin_dir().join(binary)
        };
        let log = log_dir.join(format!("{name}.log"));
        let stderr = File::create(&log).expect("log file");
        let child = Command::new("ip")
            .args(["netns", "exec", &host.ns])
            .arg(program)
            .args(args)
            // BRAMBLE_TEST_LOG (e.g. "debug") overrides the processes' log filter.
            .env(
                "RUST_LOG",
                std::env::var("BRAMBLE_TEST_LOG").unwrap_or_else(|_| "info".to_string()),
            )
            .env_remove("RUST_BACKTRACE")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {binary} in {}: {e}", host.ns));
        Proc {
            name: name.to_string(),
            child,
            log,
        }
    }

    /// Starts avahi-daemon inside `host`, as Raspberry Pi OS runs it, with its own runtime
    /// directory (pid file, socket) bind-mounted over /run/avahi-daemon in a private mount
    /// namespace, no D-Bus, no privilege drop or chroot, limited to the host's eth0. `None`
    /// when avahi-daemon is not installed.
    pub fn spawn_avahi(&self, host: &Host, dir: &Path) -> Option<Proc> {
        let daemon = ["/usr/sbin/avahi-daemon", "/usr/bin/avahi-daemon"]
            .into_iter()
            .find(|p| Path::new(p).exists())?;
        let run = dir.join(format!("avahi-{}", host.name));
        std::fs::create_dir_all(&run).expect("avahi run dir");
        let conf = run.join("avahi-daemon.conf");
        // A host name of its own: the namespaces share the machine's UTS name, and avahi
        // would otherwise fight itself over `<hostname>.local` across them.
        std::fs::write(
            &conf,
            format!(
                "[server]\nhost-name=avahi-{}-{}\nuse-ipv4=yes\nuse-ipv6=yes\n\
                 allow-interfaces=eth0\nenable-dbus=no\n\
                 [publish]\npublish-hinfo=no\npublish-workstation=no\n",
                self.id, host.name
            ),
        )
        .expect("avahi config");
        let script = format!(
            "mkdir -p /run/avahi-daemon && mount --bind '{}' /run/avahi-daemon && \
             exec {daemon} -f '{}' --no-drop-root --no-chroot --no-rlimits --no-proc-title",
            run.display(),
            conf.display()
        );
        Some(self.spawn(
            host,
            &format!("avahi-{}", host.name),
            "/bin/sh",
            &["-c".to_string(), script],
            dir,
        ))
    }
}

impl Default for Net {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        for ns in self.namespaces.iter().rev() {
            kill_everything_in(ns);
            ip_quiet(&["netns", "del", ns]);
        }
        // Normally gone with its peer in the switch namespace.
        ip_quiet(&["link", "del", &self.uplink]);
    }
}

/// SIGKILLs every process in namespace `ns`.
fn kill_everything_in(ns: &str) {
    let Ok(out) = Command::new("ip").args(["netns", "pids", ns]).output() else {
        return;
    };
    for pid in String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .filter_map(|p| p.parse::<i32>().ok())
    {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
}

/// A short decimal id for interface names (at most 15 bytes with "brm").
fn short_id(pid: u32, n: u32) -> String {
    format!("{}x{}", pid % 1_000_000, n % 1000)
}

/// A /24 of 198.18.0.0/15 that no route on this machine uses, starting the search at `seed`.
fn free_subnet(seed: u32) -> (u8, u8) {
    let routes = Command::new("ip")
        .args(["-4", "route", "show", "table", "all"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    (0..512u32)
        .map(|i| (seed.wrapping_add(i)) % 512)
        .map(|i| (18 + (i / 256) as u8, (i % 256) as u8))
        .find(|(b, c)| !routes.contains(&format!("198.{b}.{c}.")))
        .expect("a free /24 in 198.18.0.0/15")
}

/// How a namespaced agent is set up.
#[derive(Debug, Clone)]
pub struct AgentSpec {
    /// Short host name (also the agent's `host` attribute).
    pub host: String,
    /// The cluster directory whose CA and node certificate this host carries.
    pub cluster_dir: PathBuf,
}

/// One master host and agent hosts on a [`Net`], each host carrying only the cluster CA and
/// its node certificate and key, agents with no master address configured.
pub struct HostCluster {
    // Fields drop in order: processes before the namespaces they run in.
    pub master: Option<Proc>,
    pub agents: Vec<Option<Proc>>,
    avahi: Vec<Proc>,
    pub master_host: Host,
    pub agent_hosts: Vec<Host>,
    /// The identity the master and the (own-cluster) agents share; the test's framework and
    /// operator use its certificates.
    pub cluster: TestCluster,
    specs: Vec<AgentSpec>,
    pub agent_timeout_secs: f64,
    pub net: Net,
}

/// The QUIC port the master listens on (each host has its own port space).
pub const QUIC_PORT: u16 = bramble_proto::DEFAULT_QUIC_PORT;

impl HostCluster {
    /// Creates the hosts (`agents` of them, named a1, a2, ...), starts avahi-daemon on every
    /// host when it is installed (required when `CI` is set), and starts the master. Agents are
    /// started with [`HostCluster::start_agent`] or [`HostCluster::start_agents`].
    pub async fn new(agents: usize) -> HostCluster {
        let mut net = Net::new();
        let cluster = TestCluster::new();
        std::fs::create_dir_all(cluster.path("logs")).expect("logs dir");
        let master_host = net.add_host("m");
        let agent_hosts: Vec<Host> = (1..=agents)
            .map(|i| net.add_host(&format!("a{i}")))
            .collect();
        let specs = agent_hosts
            .iter()
            .map(|h| AgentSpec {
                host: h.name.clone(),
                cluster_dir: cluster.cluster_dir(),
            })
            .collect();
        let mut hc = HostCluster {
            master: None,
            agents: (0..agents).map(|_| None).collect(),
            avahi: Vec::new(),
            master_host,
            agent_hosts,
            cluster,
            specs,
            agent_timeout_secs: 2.0,
            net,
        };
        let hosts: Vec<Host> = std::iter::once(hc.master_host.clone())
            .chain(hc.agent_hosts.iter().cloned())
            .collect();
        for h in &hosts {
            hc.start_avahi(h).await;
        }
        hc.start_master();
        hc
    }

    /// Whether avahi-daemon runs on the hosts.
    pub fn has_avahi(&self) -> bool {
        !self.avahi.is_empty()
    }

    pub fn logs(&self) -> PathBuf {
        self.cluster.path("logs")
    }

    /// Starts avahi-daemon on `host` and waits until it is up (a no-op without avahi, except
    /// under CI where it must be installed).
    pub async fn start_avahi(&mut self, host: &Host) {
        let Some(proc) = self.net.spawn_avahi(host, &self.logs()) else {
            assert!(
                std::env::var_os("CI").is_none(),
                "CI must install avahi-daemon: the coexistence with it is part of these tests"
            );
            eprintln!("note: avahi-daemon is not installed; testing without it");
            return;
        };
        let log = proc.log.clone();
        self.avahi.push(proc);
        eventually(
            &format!("avahi-daemon on {} starts up", host.name),
            Duration::from_secs(15),
            || {
                let text = std::fs::read_to_string(&log).unwrap_or_default();
                async move { text.contains("Server startup complete").then_some(()) }
            },
        )
        .await;
    }

    /// Adds an agent host carrying `cluster_dir`'s certificates (another cluster's, say).
    pub fn add_agent_host(&mut self, name: &str, cluster_dir: PathBuf) -> usize {
        let host = self.net.add_host(name);
        self.agent_hosts.push(host);
        self.specs.push(AgentSpec {
            host: name.to_string(),
            cluster_dir,
        });
        self.agents.push(None);
        self.agents.len() - 1
    }

    /// The master's QUIC address as the test process reaches it (through the uplink).
    pub fn master_addr(&self) -> SocketAddr {
        SocketAddr::from((self.master_host.ipv4, QUIC_PORT))
    }

    /// (Re)starts the master on its host's current address.
    pub fn start_master(&mut self) {
        let dir = self.cluster.path("m");
        let certs = copy_node_certs(&self.cluster.cluster_dir(), &dir.join("cluster"));
        let config = dir.join("master.toml");
        std::fs::write(
            &config,
            format!(
                "heartbeat_interval_ms = 200\nagent_timeout_secs = {}\n\
                 allocation_interval_ms = 200\n\n[discovery]\ninterfaces = [\"eth0\"]\n",
                self.agent_timeout_secs
            ),
        )
        .expect("master config");
        let args: Vec<String> = vec![
            "--config".into(),
            config.display().to_string(),
            "--cluster".into(),
            certs.display().to_string(),
            // Dual-stack: advertised and reachable over IPv4 and IPv6.
            "--listen".into(),
            format!("[::]:{QUIC_PORT}"),
            "--state-dir".into(),
            dir.join("state").display().to_string(),
        ];
        let n = self.restarts("master");
        self.master =
            Some(
                self.net
                    .spawn(&self.master_host, &n, "bramble-master", &args, &self.logs()),
            );
    }

    /// SIGKILLs the master, as a power cut would (no mDNS goodbye).
    pub fn kill_master(&mut self) {
        if let Some(mut m) = self.master.take() {
            m.kill_hard();
        }
    }

    /// Starts every agent that is not running.
    pub fn start_agents(&mut self) {
        for i in 0..self.agents.len() {
            if self.agents[i].is_none() {
                self.start_agent(i);
            }
        }
    }

    /// Starts agent `i` on its host: only certificates, no master address.
    pub fn start_agent(&mut self, i: usize) {
        let spec = self.specs[i].clone();
        let dir = self.cluster.path(&spec.host);
        let certs = copy_node_certs(&spec.cluster_dir, &dir.join("cluster"));
        let config = dir.join("agent.toml");
        std::fs::write(
            &config,
            format!(
                "heartbeat_interval_ms = 200\nkill_grace_secs = 1\n\n[attributes]\nhost = \"{}\"\n",
                spec.host
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
        let name = self.restarts(&format!("agent-{}", spec.host));
        self.agents[i] = Some(self.net.spawn(
            &self.agent_hosts[i],
            &name,
            "bramble-agent",
            &args,
            &self.logs(),
        ));
    }

    /// Deletes agent `i`'s work dir (its id and checkpoints): it next starts as a new agent.
    pub fn wipe_agent(&self, i: usize) {
        let _ = std::fs::remove_dir_all(self.cluster.path(&self.specs[i].host).join("work"));
    }

    /// A log name not used yet: `base`, then `base-2`, ...
    fn restarts(&self, base: &str) -> String {
        let logs = self.logs();
        (1..)
            .map(|n| {
                if n == 1 {
                    base.to_string()
                } else {
                    format!("{base}-{n}")
                }
            })
            .find(|name| !logs.join(format!("{name}.log")).exists())
            .expect("a free log name")
    }

    /// Hosts (by `host` attribute) of the agents the master lists as connected.
    pub async fn connected_hosts(&self) -> Option<Vec<String>> {
        let state = operator_state(&self.cluster, self.master_addr())
            .await
            .ok()?;
        let mut hosts: Vec<String> = state
            .agents
            .iter()
            .filter(|a| a.connected)
            .filter_map(|a| a.attributes.get("host").cloned())
            .collect();
        hosts.sort();
        Some(hosts)
    }

    /// Waits until exactly the agents on `hosts` are connected.
    pub async fn wait_for_hosts(&self, hosts: &[&str], deadline: Duration) {
        let mut want: Vec<String> = hosts.iter().map(|h| h.to_string()).collect();
        want.sort();
        eventually(
            &format!("agents on {want:?} registered with the master"),
            deadline,
            || {
                let want = want.clone();
                async move { (self.connected_hosts().await? == want).then_some(()) }
            },
        )
        .await;
    }

    /// Waits for every own-cluster agent started so far to register, then returns what a
    /// framework needs: the master's address and the number of connected agents.
    pub async fn ready(&self) -> (SocketAddr, usize) {
        let hosts: Vec<String> = self
            .specs
            .iter()
            .zip(&self.agents)
            .filter(|(s, p)| p.is_some() && s.cluster_dir == self.cluster.cluster_dir())
            .map(|(s, _)| s.host.clone())
            .collect();
        let refs: Vec<&str> = hosts.iter().map(String::as_str).collect();
        self.wait_for_hosts(&refs, Duration::from_secs(30)).await;
        (self.master_addr(), hosts.len())
    }

    /// The text of agent `i`'s current log.
    pub fn agent_log(&self, i: usize) -> String {
        self.agents[i]
            .as_ref()
            .map(|p| p.log_text())
            .unwrap_or_default()
    }

    /// Prints the last lines of every log (for a failing test).
    pub fn dump_logs(&self) {
        let Ok(entries) = std::fs::read_dir(self.logs()) else {
            return;
        };
        let mut paths: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
        paths.sort();
        for p in paths {
            let text = std::fs::read_to_string(&p).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            let tail = &lines[lines.len().saturating_sub(40)..];
            eprintln!(
                "----- {} (last {} lines)\n{}",
                p.display(),
                tail.len(),
                tail.join("\n")
            );
        }
    }
}

impl Drop for HostCluster {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.dump_logs();
        }
    }
}

/// Copies only what a node carries (CA certificate, node certificate and key) from a full
/// cluster directory to `to`; returns `to`.
pub fn copy_node_certs(from: &Path, to: &Path) -> PathBuf {
    std::fs::create_dir_all(to).expect("host cluster dir");
    for f in [
        files::CA_CERT.to_string(),
        files::cert(Role::Node),
        files::key(Role::Node),
    ] {
        std::fs::copy(from.join(&f), to.join(&f))
            .unwrap_or_else(|e| panic!("copying {f} to {}: {e}", to.display()));
    }
    to.to_path_buf()
}

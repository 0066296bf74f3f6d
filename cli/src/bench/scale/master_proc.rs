//! The real `bramble-master` process `bramble bench scale` measures: started from a config of
//! its own in the run's temp dir, SIGKILLed and restarted on the same state dir, and watched
//! from outside the way an operator would (`/proc/PID` for memory and CPU, plain HTTP for
//! `/api/v1/state` and `/metrics`).

use anyhow::{bail, Context};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Linux reports CPU time in /proc in USER_HZ ticks, which is 100 on every architecture
/// Linux supports (the kernel's HZ may differ; what it exports to userspace does not).
const TICKS_PER_SEC: f64 = 100.0;

/// Where a master keeps everything in one run.
pub struct MasterProcess {
    bin: PathBuf,
    config: PathBuf,
    log: PathBuf,
    pub quic: SocketAddr,
    pub http: SocketAddr,
    child: Option<Child>,
    env: Vec<(String, String)>,
}

impl MasterProcess {
    /// Writes the master's config under `dir` (cluster identity in `dir/cluster`) and starts it.
    pub async fn start(bin: &Path, dir: &Path, env: &[(String, String)]) -> anyhow::Result<Self> {
        let quic = free_udp()?;
        let http = free_tcp()?;
        let config = dir.join("master.toml");
        // The defaults an operator gets (heartbeat 1 s, allocation every 1 s), no panel.
        let text = format!(
            "cluster = {:?}\nlisten = \"{quic}\"\nhttp = \"{http}\"\nstate_dir = {:?}\nname = \"scale\"\n\n[display]\nenabled = \"off\"\n",
            dir.join("cluster").display().to_string(),
            dir.join("master-state").display().to_string(),
        );
        std::fs::write(&config, text).with_context(|| format!("writing {}", config.display()))?;
        let mut master = MasterProcess {
            bin: bin.to_path_buf(),
            config,
            log: dir.join("master.log"),
            quic,
            http,
            child: None,
            env: env.to_vec(),
        };
        master.spawn().await?;
        Ok(master)
    }

    /// Starts the process (again, on the same state dir) and waits until its HTTP side answers.
    pub async fn spawn(&mut self) -> anyhow::Result<()> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .with_context(|| format!("opening {}", self.log.display()))?;
        let child = Command::new(&self.bin)
            .arg("--config")
            .arg(&self.config)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {}", self.bin.display()))?;
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok((200, _)) = http_get(self.http, "/health").await {
                return Ok(());
            }
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    bail!(
                        "bramble-master exited ({status}) before answering; its log: {}",
                        self.log.display()
                    );
                }
            }
            if Instant::now() > deadline {
                bail!(
                    "bramble-master did not answer /health within 30 s; its log: {}",
                    self.log.display()
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// SIGKILL, like a power cut, and reap it.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// The master's resident memory and CPU time so far, from `/proc/PID`.
    pub fn sample(&self) -> anyhow::Result<ProcSample> {
        let pid = self.pid().context("the master is not running")?;
        proc_sample(pid)
    }

    pub fn log_path(&self) -> &Path {
        &self.log
    }
}

impl Drop for MasterProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// One reading of `/proc/PID`.
#[derive(Debug, Clone, Copy)]
pub struct ProcSample {
    pub at: Instant,
    pub rss_kib: u64,
    /// utime + stime, seconds.
    pub cpu_s: f64,
}

impl ProcSample {
    /// CPU used between `earlier` and this sample, as a percentage of one core.
    pub fn cpu_percent_since(&self, earlier: &ProcSample) -> f64 {
        let wall = self.at.duration_since(earlier.at).as_secs_f64();
        if wall <= 0.0 {
            return 0.0;
        }
        (self.cpu_s - earlier.cpu_s) / wall * 100.0
    }
}

fn proc_sample(pid: u32) -> anyhow::Result<ProcSample> {
    let at = Instant::now();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading /proc/{pid}/status"))?;
    let rss_kib = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .context("no VmRSS in /proc/PID/status")?;
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("reading /proc/{pid}/stat"))?;
    Ok(ProcSample {
        at,
        rss_kib,
        cpu_s: cpu_seconds(&stat).context("parsing /proc/PID/stat")?,
    })
}

/// utime + stime from a `/proc/PID/stat` line. The command name (field 2) may hold spaces and
/// parentheses, so fields are counted from the last `)`.
fn cpu_seconds(stat: &str) -> Option<f64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After the name: state is field 3, utime field 14, stime field 15.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) as f64 / TICKS_PER_SEC)
}

/// `GET path` over HTTP/1.0 (no chunking: the body ends with the connection). Returns the
/// status and the body.
pub async fn http_get(addr: SocketAddr, path: &str) -> anyhow::Result<(u16, Vec<u8>)> {
    let mut stream =
        tokio::time::timeout(Duration::from_secs(5), tokio::net::TcpStream::connect(addr))
            .await
            .context("connecting: timed out")??;
    let request = format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n");
    stream.write_all(request.as_bytes()).await?;
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(60), stream.read_to_end(&mut raw))
        .await
        .with_context(|| format!("GET {path}: no full answer within 60 s"))??;
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .with_context(|| format!("GET {path}: no header end in the answer"))?;
    let head = String::from_utf8_lossy(&raw[..split]);
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("GET {path}: no status in {head:?}"))?;
    Ok((status, raw[split + 4..].to_vec()))
}

fn free_udp() -> anyhow::Result<SocketAddr> {
    let s = std::net::UdpSocket::bind("127.0.0.1:0").context("finding a free UDP port")?;
    Ok(s.local_addr()?)
}

fn free_tcp() -> anyhow::Result<SocketAddr> {
    let s = std::net::TcpListener::bind("127.0.0.1:0").context("finding a free TCP port")?;
    Ok(s.local_addr()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_time_is_read_past_a_name_with_spaces_and_parentheses() {
        let stat = "42 (a (b) c) S 1 42 42 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 3 0 1 1 1";
        assert_eq!(cpu_seconds(stat), Some(3.0));
        assert_eq!(cpu_seconds("42 (x) S"), None);
    }
}

//! Level 3: the built binaries as real processes on loopback. Builds them once (with the same
//! cargo and profile as the tests), starts them with their stderr captured to files, and kills
//! them for real. Every process started here is killed when its guard drops.

use std::fs::File;
use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;

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

/// A child process that is SIGKILLed (with its process group) when dropped.
pub struct Proc {
    pub name: String,
    pub child: Child,
    pub log: PathBuf,
}

impl Proc {
    pub fn spawn(name: &str, binary: &str, args: &[String], log_dir: &Path) -> Proc {
        Self::spawn_with_stdout(name, binary, args, log_dir, Stdio::null())
    }

    /// Like [`Proc::spawn`], with stdout kept in `<name>.out` (see [`Proc::stdout_path`]).
    pub fn spawn_capturing(name: &str, binary: &str, args: &[String], log_dir: &Path) -> Proc {
        let out = File::create(log_dir.join(format!("{name}.out"))).expect("stdout file");
        Self::spawn_with_stdout(name, binary, args, log_dir, Stdio::from(out))
    }

    fn spawn_with_stdout(
        name: &str,
        binary: &str,
        args: &[String],
        log_dir: &Path,
        stdout: Stdio,
    ) -> Proc {
        let log = log_dir.join(format!("{name}.log"));
        let stderr = File::create(&log).expect("log file");
        let child = Command::new(bin_dir().join(binary))
            .args(args)
            .env("RUST_LOG", "info")
            .env_remove("RUST_BACKTRACE")
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

    /// Where [`Proc::spawn_capturing`] keeps stdout.
    pub fn stdout_path(&self) -> PathBuf {
        self.log.with_extension("out")
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill_hard();
    }
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

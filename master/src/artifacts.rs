//! The master's artifacts directory (`artifacts_dir` in master.toml, default
//! `<state_dir>/artifacts`): files tasks fetch as `master:NAME` (`bramble_proto::artifact`),
//! served here at the edge to agents over their own connections, a piece at a time
//! (`AgentToMaster::ArtifactRead` → `MasterToAgent::ArtifactData`); the state task never
//! sees a byte.
//!
//! A name is a relative path of plain components (checked again here: no `..`, not
//! absolute), walked from the directory by file descriptor with `O_NOFOLLOW` on every
//! component, so neither `..` nor a symlink reaches a file outside it; only regular files are
//! read (opened non-blocking: a FIFO cannot hang a reader). Every agent of the cluster may
//! read every file there: put nothing secret in it.
//!
//! Reads run on tokio's blocking pool, which the store's commits share, so they are bounded:
//! a name is checked before anything is spawned, one agent connection has at most
//! [`READS_PER_AGENT`] reads served at once and [`WAITING_PER_AGENT`] more waiting (cheap: no
//! thread, no buffer; an agent fetching for several tasks at once has one piece in flight per
//! fetch) — any further read is answered at once with an error — and the whole master runs
//! at most [`READS_AT_ONCE`] reads at once ([`AgentReads`]).

use bramble_proto::artifact::check_master_name;
use bramble_proto::image_transfer::CHUNK_BYTES;
use bramble_proto::messages::{ArtifactChunk, MasterToAgent};
use bramble_proto::queue::QueueTx;
use rustix::fs::{Mode, OFlags};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tracing::{debug, info, warn};

/// Reads of one agent connection served at once.
pub const READS_PER_AGENT: usize = 2;
/// Reads of one agent connection waiting for a turn; beyond these, refused at once.
pub const WAITING_PER_AGENT: usize = 32;
/// Reads served at once by the whole master (they share the blocking pool with commits).
pub const READS_AT_ONCE: usize = 4;

#[cfg(test)]
type TestReader = Arc<dyn Fn(&str, u64) -> Result<ArtifactChunk, String> + Send + Sync>;

/// Where `master:` artifacts are served from.
#[derive(Clone)]
pub struct ArtifactsDir {
    root: Arc<PathBuf>,
    /// [`READS_AT_ONCE`] permits, shared by every connection.
    at_once: Arc<Semaphore>,
    /// Tests: stands in for [`ArtifactsDir::read`] on the blocking pool.
    #[cfg(test)]
    reader: Option<TestReader>,
}

impl std::fmt::Debug for ArtifactsDir {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ArtifactsDir")
            .field("root", &self.root)
            .finish_non_exhaustive()
    }
}

impl ArtifactsDir {
    pub fn new(root: &Path) -> Self {
        Self {
            root: Arc::new(root.to_path_buf()),
            at_once: Arc::new(Semaphore::new(READS_AT_ONCE)),
            #[cfg(test)]
            reader: None,
        }
    }

    pub fn path(&self) -> &Path {
        &self.root
    }

    /// Reads up to [`CHUNK_BYTES`] of `name` from `offset` (blocking: file I/O).
    pub fn read(&self, name: &str, offset: u64) -> Result<ArtifactChunk, String> {
        check_master_name(name)?;
        let file = self.open(name)?;
        let meta = file
            .metadata()
            .map_err(|e| format!("artifact {name:?}: {e}"))?;
        if !meta.is_file() {
            return Err(format!("artifact {name:?} is not a regular file"));
        }
        let size = meta.len();
        let want = size.saturating_sub(offset).min(CHUNK_BYTES as u64) as usize;
        let mut data = vec![0u8; want];
        let mut filled = 0;
        while filled < want {
            let n = file
                .read_at(&mut data[filled..], offset + filled as u64)
                .map_err(|e| format!("artifact {name:?}: {e}"))?;
            if n == 0 {
                break;
            }
            filled += n;
        }
        data.truncate(filled);
        Ok(ArtifactChunk { size, data })
    }

    /// Opens `name` below the directory following no symlink on the way.
    fn open(&self, name: &str) -> Result<std::fs::File, String> {
        let missing = |e: rustix::io::Errno| match e {
            rustix::io::Errno::NOENT => format!("no artifact {name:?} on the master"),
            rustix::io::Errno::LOOP | rustix::io::Errno::NOTDIR => {
                format!("artifact {name:?}: symlinks are not followed in the artifacts directory")
            }
            e => format!("artifact {name:?}: {e}"),
        };
        let mut dir = rustix::fs::open(
            self.root.as_path(),
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| match e {
            rustix::io::Errno::NOENT => format!(
                "the master has no artifacts directory ({}): no artifact {name:?}",
                self.root.display()
            ),
            e => format!("the master's artifacts directory: {e}"),
        })?;
        let parts: Vec<&str> = name.split('/').collect();
        let (last, dirs) = parts.split_last().ok_or("no file named")?;
        for part in dirs {
            dir = rustix::fs::openat(
                &dir,
                *part,
                OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::empty(),
            )
            .map_err(missing)?;
        }
        let fd = rustix::fs::openat(
            &dir,
            *last,
            OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(missing)?;
        Ok(std::fs::File::from(fd))
    }

    /// The read done on the blocking pool.
    fn read_piece(&self, name: &str, offset: u64) -> Result<ArtifactChunk, String> {
        #[cfg(test)]
        if let Some(reader) = &self.reader {
            return reader(name, offset);
        }
        self.read(name, offset)
    }
}

/// One agent connection's artifact reads: answered on its queue once done, bounded per
/// connection and in the whole master (see the module doc). Dropped with the connection:
/// reads still waiting for a turn are dropped with it.
pub struct AgentReads {
    dir: ArtifactsDir,
    tx: QueueTx<MasterToAgent>,
    /// [`READS_PER_AGENT`] permits.
    mine: Arc<Semaphore>,
    /// Reads accepted and not yet answered (served or waiting).
    pending: Arc<AtomicUsize>,
    tasks: JoinSet<()>,
    /// A refusal was logged already (one line per connection, not one per read).
    complained: bool,
}

impl AgentReads {
    pub fn new(dir: ArtifactsDir, tx: QueueTx<MasterToAgent>) -> Self {
        Self {
            dir,
            tx,
            mine: Arc::new(Semaphore::new(READS_PER_AGENT)),
            pending: Arc::new(AtomicUsize::new(0)),
            tasks: JoinSet::new(),
            complained: false,
        }
    }

    /// Takes an agent's read: refused at once (bad name, too many waiting) or answered on the
    /// queue when its turn has come and the piece is read, off the async threads.
    pub fn read(&mut self, request: u64, name: String, offset: u64) {
        while self.tasks.try_join_next().is_some() {}
        let refused = if let Err(why) = check_master_name(&name) {
            Some(why)
        } else if self.pending.load(Ordering::Acquire) >= READS_PER_AGENT + WAITING_PER_AGENT {
            Some(format!(
                "too many artifact reads from this agent at once (at most {} waiting)",
                READS_PER_AGENT + WAITING_PER_AGENT
            ))
        } else {
            None
        };
        if let Some(why) = refused {
            if self.complained {
                debug!(artifact = %name, "artifact refused to an agent: {why}");
            } else {
                self.complained = true;
                warn!(artifact = %name, "artifact refused to an agent: {why} (further refusals on this connection logged at debug)");
            }
            let result = Err(why);
            if self
                .tx
                .try_send(MasterToAgent::ArtifactData { request, result })
                .is_err()
            {
                debug!(artifact = %name, "agent's queue full or gone; artifact refusal dropped");
            }
            return;
        }
        self.pending.fetch_add(1, Ordering::AcqRel);
        let dir = self.dir.clone();
        let tx = self.tx.clone();
        let mine = self.mine.clone();
        let pending = Pending(self.pending.clone());
        self.tasks.spawn(async move {
            // Semaphores are never closed here: `Err` cannot happen; give up quietly if it does.
            let Ok(mine) = mine.acquire_owned().await else {
                return;
            };
            let Ok(all) = dir.at_once.clone().acquire_owned().await else {
                return;
            };
            let blocking = tokio::task::spawn_blocking(move || {
                // Held until the read is done, even if this connection's task is aborted.
                let _turn = (mine, all, pending);
                let result = dir.read_piece(&name, offset);
                match &result {
                    Ok(chunk) if offset == 0 => {
                        info!(artifact = %name, bytes = chunk.size, "an agent fetches an artifact")
                    }
                    Ok(_) => {}
                    Err(why) => info!(artifact = %name, "artifact refused to an agent: {why}"),
                }
                if tx
                    .try_send(MasterToAgent::ArtifactData { request, result })
                    .is_err()
                {
                    debug!(artifact = %name, "agent's queue full or gone; artifact piece dropped");
                }
            });
            let _ = blocking.await;
        });
    }
}

/// Counts a read as pending until dropped.
struct Pending(Arc<AtomicUsize>);

impl Drop for Pending {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_inside_are_read_in_pieces() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("app")).unwrap();
        let body: Vec<u8> = (0..CHUNK_BYTES + 10).map(|i| i as u8).collect();
        std::fs::write(dir.path().join("app/big.bin"), &body).unwrap();
        let served = ArtifactsDir::new(dir.path());
        let first = served.read("app/big.bin", 0).unwrap();
        assert_eq!(first.size, body.len() as u64);
        assert_eq!(first.data, body[..CHUNK_BYTES]);
        let rest = served.read("app/big.bin", CHUNK_BYTES as u64).unwrap();
        assert_eq!(rest.data, body[CHUNK_BYTES..]);
        let end = served.read("app/big.bin", body.len() as u64).unwrap();
        assert!(end.data.is_empty());
    }

    #[test]
    fn dot_dot_absolute_and_symlinks_out_are_refused() {
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("secret"), b"key").unwrap();
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("artifacts");
        std::fs::create_dir(&root).unwrap();
        std::os::unix::fs::symlink(outside.path().join("secret"), root.join("link")).unwrap();
        std::os::unix::fs::symlink(outside.path(), root.join("linkdir")).unwrap();
        std::fs::write(dir.path().join("beside"), b"state").unwrap();
        std::fs::create_dir(root.join("fifo-dir")).unwrap();
        let made = std::process::Command::new("mkfifo")
            .arg(root.join("fifo-dir/f"))
            .status()
            .unwrap();
        assert!(made.success());
        let served = ArtifactsDir::new(&root);
        for name in [
            "../beside",
            "a/../../beside",
            "/etc/passwd",
            "link",
            "linkdir/secret",
            "fifo-dir/f",
            "fifo-dir",
            "",
        ] {
            let e = served.read(name, 0).expect_err(name);
            assert!(!e.is_empty(), "{name}");
        }
        assert!(served.read("link", 0).unwrap_err().contains("symlink"));
        assert!(served
            .read("nothing", 0)
            .unwrap_err()
            .contains("no artifact"));
    }

    /// A stand-in read that blocks until released and counts how many run at once.
    #[derive(Default)]
    struct Gate {
        state: std::sync::Mutex<(usize, usize, usize, bool)>, // now, most, calls, open
        changed: std::sync::Condvar,
    }

    impl Gate {
        fn read(&self, name: &str) -> Result<ArtifactChunk, String> {
            let mut s = self.state.lock().unwrap();
            s.0 += 1;
            s.1 = s.1.max(s.0);
            s.2 += 1;
            self.changed.notify_all();
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
            while !s.3 && std::time::Instant::now() < deadline {
                s = self
                    .changed
                    .wait_timeout(s, deadline - std::time::Instant::now())
                    .unwrap()
                    .0;
            }
            s.0 -= 1;
            Ok(ArtifactChunk {
                size: name.len() as u64,
                data: name.as_bytes().to_vec(),
            })
        }
        fn now(&self) -> (usize, usize, usize) {
            let s = self.state.lock().unwrap();
            (s.0, s.1, s.2)
        }
        fn wait_running(&self, n: usize) {
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
            let mut s = self.state.lock().unwrap();
            while s.0 < n {
                let left = deadline.saturating_duration_since(std::time::Instant::now());
                assert!(!left.is_zero(), "{} reads running, waited for {n}", s.0);
                s = self.changed.wait_timeout(s, left).unwrap().0;
            }
        }
        fn open(&self) {
            self.state.lock().unwrap().3 = true;
            self.changed.notify_all();
        }
    }

    fn gated(gate: &Arc<Gate>) -> ArtifactsDir {
        let mut dir = ArtifactsDir::new(Path::new("/nonexistent"));
        let gate = gate.clone();
        dir.reader = Some(Arc::new(move |name, _| gate.read(name)));
        dir
    }

    type Rx = bramble_proto::queue::QueueRx<MasterToAgent>;

    fn conn(dir: &ArtifactsDir) -> (AgentReads, Rx) {
        let (tx, rx) = bramble_proto::queue::channel(1000, 64 << 20);
        (AgentReads::new(dir.clone(), tx), rx)
    }

    /// The next answer, waited for with a deadline.
    async fn answer(rx: &mut Rx) -> (u64, Result<ArtifactChunk, String>) {
        match tokio::time::timeout(std::time::Duration::from_secs(10), rx.recv()).await {
            Ok(Some(MasterToAgent::ArtifactData { request, result })) => (request, result),
            other => panic!("no artifact answer: {other:?}"),
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn one_agent_gets_two_reads_at_once_and_the_rest_wait() {
        let gate = Arc::new(Gate::default());
        let dir = gated(&gate);
        let (mut reads, mut rx) = conn(&dir);
        for request in 0..10 {
            reads.read(request, format!("f{request}"), 0);
        }
        gate.wait_running(READS_PER_AGENT);
        // Served in turn, not refused: a well-behaved agent fetching for many tasks works.
        gate.open();
        let mut got = Vec::new();
        for _ in 0..10 {
            let (request, result) = answer(&mut rx).await;
            assert_eq!(result.unwrap().data, format!("f{request}").into_bytes());
            got.push(request);
        }
        got.sort();
        assert_eq!(got, (0..10).collect::<Vec<_>>());
        assert_eq!(gate.now().1, READS_PER_AGENT, "most reads at once");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_master_bounds_all_reads_and_refuses_bad_names_and_floods_at_once() {
        let gate = Arc::new(Gate::default());
        let dir = gated(&gate);
        let mut conns: Vec<_> = (0..4).map(|_| conn(&dir)).collect();
        for (c, (reads, _)) in conns.iter_mut().enumerate() {
            for request in 0..3 {
                reads.read(request, format!("c{c}/{request}"), 0);
            }
        }
        gate.wait_running(READS_AT_ONCE);
        let calls = gate.now().2;
        // Every read slot is taken: a bad name is still answered at once, never read.
        let (reads, rx) = &mut conns[0];
        for (request, name) in [(100, "../master.redb"), (101, "/etc/passwd"), (102, "")] {
            reads.read(request, name.to_string(), 0);
            let (r, result) = answer(rx).await;
            assert_eq!(r, request);
            assert!(result.is_err(), "{name}");
        }
        // A flood from one connection: beyond what may wait, refused at once.
        let room = READS_PER_AGENT + WAITING_PER_AGENT - 3;
        for request in 200..200 + room as u64 + 5 {
            reads.read(request, "flood".into(), 0);
        }
        for _ in 0..5 {
            let (r, result) = answer(rx).await;
            assert!(r >= 200 + room as u64, "request {r} refused, it had room");
            assert!(result.unwrap_err().contains("too many"));
        }
        assert_eq!(
            gate.now().2,
            calls,
            "refused reads never reached the blocking pool"
        );
        gate.open();
        let mut served = 0;
        for (c, (_, rx)) in conns.iter_mut().enumerate() {
            let expect = if c == 0 { 3 + room } else { 3 };
            for _ in 0..expect {
                assert!(answer(rx).await.1.is_ok());
                served += 1;
            }
        }
        assert_eq!(served, 12 + room);
        assert_eq!(
            gate.now().1,
            READS_AT_ONCE,
            "most reads at once in the master"
        );
    }
}

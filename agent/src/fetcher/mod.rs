//! The fetcher: the artifacts a task names (`TaskInfo.artifacts`, `bramble_proto::artifact`)
//! put into its sandbox before it starts, as Mesos's fetcher does for `CommandInfo.uris`.
//!
//! Called by the containerizer's launch, after the sandbox is made and before it is handed to
//! the task user; the runtime runs such a launch in a task of its own, so a slow download
//! holds up nothing else. For each artifact, in order:
//! 1. the bytes: from the cache (`cache.rs`) when asked and held there, else downloaded —
//!    `http.rs` (`http://`, `https://` with the Mozilla roots built in) or `master.rs` (a file
//!    of the master's artifacts directory, over the agent's own connection) — streamed to a
//!    `.fetch-N.part` file in the sandbox, never held in memory, under a size limit and a
//!    deadline, SHA-256 computed on the way and checked when the artifact names one;
//! 2. placed: an archive (`.tar`, `.tar.gz`, `.tgz`) with `extract` is unpacked
//!    (`extract.rs`: no entry may leave the sandbox, no links out, no devices), anything else
//!    renamed to its file name; `executable` makes it 0755;
//! 3. once all are in, everything in the sandbox is handed to the task's user (`lchown`,
//!    following no symlink).
//!
//! The first failure stops the launch: the task becomes TASK_FAILED (`LaunchFailed`) with
//! `fetching URI: CAUSE` as its message, and the agent logs one line.

mod cache;
mod extract;
mod http;
pub mod master;

use bramble_proto::image_transfer::Digest;
use bramble_proto::task::Artifact;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tracing::info;

pub use master::MasterFetch;

/// How the fetcher is limited (`[fetch]` in the agent's config).
#[derive(Debug, Clone, PartialEq)]
pub struct FetchOptions {
    /// Where cached artifacts are kept (default `<work_dir>/fetch-cache`).
    pub cache_dir: PathBuf,
    /// The cache is kept under this many bytes, least recently used out first.
    pub cache_bytes: u64,
    /// The largest artifact downloaded; an archive unpacks to at most four times this.
    pub max_bytes: u64,
    /// How long one artifact may take to download.
    pub timeout: Duration,
}

/// Default `[fetch] cache_mb`.
pub const DEFAULT_CACHE_MB: u64 = 512;
/// Default `[fetch] max_mb`.
pub const DEFAULT_MAX_MB: u64 = 1024;
/// Default `[fetch] timeout_secs`.
pub const DEFAULT_TIMEOUT_SECS: u64 = 600;

impl FetchOptions {
    /// The defaults for an agent working in `work_dir`.
    pub fn new(work_dir: &Path) -> Self {
        Self {
            cache_dir: work_dir.join("fetch-cache"),
            cache_bytes: DEFAULT_CACHE_MB << 20,
            max_bytes: DEFAULT_MAX_MB << 20,
            timeout: Duration::from_secs(DEFAULT_TIMEOUT_SECS),
        }
    }
}

/// Why an artifact could not be put into the sandbox: the task's failure message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("fetching {uri}: {cause}")]
pub struct FetchError {
    pub uri: String,
    pub cause: String,
}

/// Who the fetched files are handed to (the task's user).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Owner {
    pub uid: u32,
    pub gid: u32,
}

/// Fetches artifacts into sandboxes. One per agent, shared by its launches.
#[derive(Debug)]
pub struct Fetcher {
    opts: FetchOptions,
    http: http::Client,
    master: MasterFetch,
    cache: cache::Cache,
}

impl Fetcher {
    /// A fetcher asking the master through `master` for `master:` artifacts.
    pub fn new(opts: FetchOptions, master: MasterFetch) -> Result<Self, String> {
        let cache = cache::Cache::open(&opts.cache_dir, opts.cache_bytes)?;
        Ok(Self {
            http: http::Client::new()?,
            master,
            cache,
            opts,
        })
    }

    /// Puts every artifact into `sandbox` (which exists), in order, then hands what it holds
    /// to `owner`. The first failure is the answer.
    pub async fn fetch_all(
        &self,
        sandbox: &Path,
        artifacts: &[Artifact],
        owner: Option<Owner>,
    ) -> Result<(), FetchError> {
        for (n, artifact) in artifacts.iter().enumerate() {
            let started = std::time::Instant::now();
            let fail = |cause: String| FetchError {
                uri: artifact.uri.clone(),
                cause,
            };
            let (bytes, cached) = self.fetch_one(sandbox, n, artifact).await.map_err(fail)?;
            info!(uri = %artifact.uri, sandbox = %sandbox.display(), bytes, cached,
                took_ms = started.elapsed().as_millis() as u64, "artifact fetched");
        }
        if let Some(owner) = owner {
            let dir = sandbox.to_path_buf();
            tokio::task::spawn_blocking(move || hand_over(&dir, owner))
                .await
                .map_err(|e| e.to_string())
                .and_then(|r| r)
                .map_err(|cause| FetchError {
                    uri: artifacts.last().map(|a| a.uri.clone()).unwrap_or_default(),
                    cause: format!("handing the fetched files to the task's user: {cause}"),
                })?;
        }
        Ok(())
    }

    /// One artifact into the sandbox: its size and whether it came from the cache.
    async fn fetch_one(
        &self,
        sandbox: &Path,
        n: usize,
        artifact: &Artifact,
    ) -> Result<(u64, bool), String> {
        artifact.check().map_err(|e| e.to_string())?;
        let name = artifact.file_name().map_err(|e| e.to_string())?;
        let unpack = artifact.unpacks().map_err(|e| e.to_string())?;
        let part = sandbox.join(format!(".fetch-{n}.part"));
        let key = artifact.cache.then(|| cache::key(artifact));
        let from_cache = match &key {
            Some(key) => self.cache.copy_out(key, &part).await,
            None => None,
        };
        let cached = from_cache.is_some();
        let size = match from_cache {
            Some(size) => size,
            None => {
                let (size, digest) = self.download(artifact, &part).await.inspect_err(|_| {
                    let _ = std::fs::remove_file(&part);
                })?;
                if let Some(expected) = &artifact.sha256 {
                    if !expected.eq_ignore_ascii_case(&digest) {
                        let _ = std::fs::remove_file(&part);
                        return Err(format!(
                            "sha256 mismatch: expected {expected}, downloaded {digest} ({size} bytes)"
                        ));
                    }
                }
                if let Some(key) = &key {
                    self.cache.store(key, &part).await;
                }
                size
            }
        };
        let sandbox = sandbox.to_path_buf();
        let max_unpacked = self.opts.max_bytes.saturating_mul(4);
        let executable = artifact.executable;
        let deadline = std::time::Instant::now() + self.opts.timeout;
        tokio::task::spawn_blocking(move || {
            let placed = place(
                &sandbox,
                &part,
                &name,
                unpack,
                executable,
                max_unpacked,
                deadline,
            );
            let _ = std::fs::remove_file(&part);
            placed
        })
        .await
        .map_err(|e| format!("placing the file: {e}"))??;
        Ok((size, cached))
    }

    /// Downloads into `part` within the size limit and the deadline: (size, sha256).
    async fn download(&self, artifact: &Artifact, part: &Path) -> Result<(u64, String), String> {
        let mut sink = Sink::create(part, self.opts.max_bytes).await?;
        let source = artifact.source().map_err(|e| e.to_string())?;
        let fetch = async {
            match source {
                bramble_proto::artifact::Source::Http { url } => {
                    self.http.download(&url, &mut sink).await
                }
                bramble_proto::artifact::Source::Master { name } => {
                    self.master.download(&name, &mut sink).await
                }
            }
        };
        match tokio::time::timeout(self.opts.timeout, fetch).await {
            Ok(result) => result?,
            Err(_) => {
                return Err(format!(
                    "timed out after {}s (`[fetch] timeout_secs`)",
                    self.opts.timeout.as_secs()
                ))
            }
        }
        sink.finish().await
    }
}

/// Where downloaded bytes go: a file, within a size limit, digested on the way.
pub(crate) struct Sink {
    file: tokio::fs::File,
    digest: Digest,
    written: u64,
    limit: u64,
}

impl Sink {
    async fn create(path: &Path, limit: u64) -> Result<Sink, String> {
        // A new file, never through whatever an earlier artifact left under this name.
        let _ = tokio::fs::remove_file(path).await;
        let file = tokio::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(path)
            .await
            .map_err(|e| format!("creating {}: {e}", path.display()))?;
        Ok(Sink {
            file,
            digest: Digest::default(),
            written: 0,
            limit,
        })
    }

    /// How many bytes the sink still takes.
    pub(crate) fn room(&self) -> u64 {
        self.limit.saturating_sub(self.written)
    }

    /// Refuses a download announced (e.g. by Content-Length) larger than the limit.
    pub(crate) fn expect(&self, total: u64) -> Result<(), String> {
        if total > self.limit {
            return Err(too_large(self.limit, Some(total)));
        }
        Ok(())
    }

    pub(crate) async fn write(&mut self, data: &[u8]) -> Result<(), String> {
        if data.len() as u64 > self.room() {
            return Err(too_large(self.limit, None));
        }
        self.digest.update(data);
        self.file
            .write_all(data)
            .await
            .map_err(|e| format!("writing into the sandbox: {e}"))?;
        self.written += data.len() as u64;
        Ok(())
    }

    pub(crate) fn written(&self) -> u64 {
        self.written
    }

    async fn finish(mut self) -> Result<(u64, String), String> {
        self.file
            .flush()
            .await
            .map_err(|e| format!("writing into the sandbox: {e}"))?;
        Ok((self.written, self.digest.finish()))
    }
}

fn too_large(limit: u64, announced: Option<u64>) -> String {
    let size = announced.map_or(String::new(), |n| format!(" ({n} bytes)"));
    format!(
        "larger than the agent's limit of {} MiB{size} (`[fetch] max_mb`)",
        limit >> 20
    )
}

/// Moves a fetched file to its place in the sandbox: unpacked, or renamed to `name`.
fn place(
    sandbox: &Path,
    part: &Path,
    name: &str,
    unpack: Option<bramble_proto::artifact::ArchiveKind>,
    executable: bool,
    max_unpacked: u64,
    deadline: std::time::Instant,
) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    if let Some(kind) = unpack {
        extract::unpack(part, kind, sandbox, max_unpacked, deadline)
            .map_err(|e| format!("unpacking {name}: {e}"))?;
        return Ok(());
    }
    let target = sandbox.join(name);
    // A directory an earlier archive left under the same name is not replaced.
    if std::fs::symlink_metadata(&target).is_ok_and(|m| m.is_dir()) {
        return Err(format!("{name} is a directory in the sandbox already"));
    }
    // rename never follows a symlink at the target: it replaces the link itself.
    std::fs::rename(part, &target).map_err(|e| format!("saving {name}: {e}"))?;
    let mode = if executable { 0o755 } else { 0o644 };
    std::fs::set_permissions(&target, std::fs::Permissions::from_mode(mode))
        .map_err(|e| format!("chmod {name}: {e}"))
}

/// Hands everything under `dir` to `owner`, changing links themselves and never following
/// one (the task is not running yet: nothing else changes the tree meanwhile).
fn hand_over(dir: &Path, owner: Owner) -> Result<(), String> {
    let entries = std::fs::read_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    for entry in entries {
        let entry = entry.map_err(|e| format!("{}: {e}", dir.display()))?;
        let path = entry.path();
        std::os::unix::fs::lchown(&path, Some(owner.uid), Some(owner.gid))
            .map_err(|e| format!("{}: {e}", path.display()))?;
        let kind = entry
            .file_type()
            .map_err(|e| format!("{}: {e}", path.display()))?;
        if kind.is_dir() {
            hand_over(&path, owner)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;

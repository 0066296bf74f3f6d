//! Images the master streams to this agent (`bramble images import|load` through the
//! master, see `bramble-master`'s `images.rs`): pieces arrive on the master link, are written
//! to a `.tmp-` file in the image store (never an image: the store skips such names, and a
//! restarted agent removes them), each chunk answered once written, so the master sends the
//! next only then. At the end the size and SHA-256 are checked and the image is installed
//! through [`ImageStore`] (whole or not at all), refused if it is for another architecture.
//!
//! One task owns the transfers: pieces are handled in order, and the unpacking (seconds to
//! minutes on a Pi) runs off the async threads.

use crate::images::{host_architecture, ImageConfig, ImageStore};
use crate::paths::WorkDir;
use bramble_proto::image_transfer::{Digest, CHUNK_BYTES, MAX_IMAGE_BYTES};
use bramble_proto::messages::{
    AgentToMaster, ImageAck, ImageFormat, ImagePiece, ImageSpec, ImageSummary,
};
use std::collections::HashMap;
use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tracing::{info, warn};

/// Transfers at once; more are refused (the master sends one per upload).
const MAX_TRANSFERS: usize = 4;
/// A transfer with no piece for this long is dropped (its master went away).
const STALE_AFTER: Duration = Duration::from_secs(120);

/// A piece from the master, and where its answer goes (the link it came on).
pub struct Request {
    pub request: u64,
    pub piece: ImagePiece,
    pub reply: mpsc::Sender<AgentToMaster>,
}

/// Starts the service; `store` is `None` on an agent without a container runtime, which
/// refuses every image with that reason.
/// `gc`: the work dir and the store's budget, when it has one (`image_gc.rs`), kept after
/// each install.
pub fn spawn(store: Option<(ImageStore, Option<(WorkDir, u64)>)>) -> mpsc::Sender<Request> {
    let (tx, mut rx) = mpsc::channel::<Request>(16);
    let (store, gc) = match store {
        Some((store, gc)) => (Some(store), gc),
        None => (None, None),
    };
    tokio::spawn(async move {
        let mut service = Service {
            store,
            transfers: HashMap::new(),
        };
        while let Some(req) = rx.recv().await {
            let result = service.piece(req.piece).await;
            if let (Ok(ImageAck::Installed(image)), Some((work_dir, budget)), Some(store)) =
                (&result, &gc, &service.store)
            {
                let (store, work_dir, budget) = (store.clone(), work_dir.clone(), *budget);
                let name = image.name.clone();
                let _ = tokio::task::spawn_blocking(move || {
                    crate::image_gc::collect(&store, &work_dir, budget, Some(&name))
                })
                .await;
            }
            let answer = AgentToMaster::ImageReply {
                request: req.request,
                result,
            };
            // The link may be gone; the master then fails the push on its own.
            let _ = req.reply.send(answer).await;
        }
    });
    tx
}

struct Transfer {
    spec: ImageSpec,
    path: PathBuf,
    file: std::fs::File,
    digest: Digest,
    received: u64,
    last: Instant,
}

impl Drop for Transfer {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

struct Service {
    store: Option<ImageStore>,
    transfers: HashMap<u64, Transfer>,
}

impl Service {
    async fn piece(&mut self, piece: ImagePiece) -> Result<ImageAck, String> {
        let Some(store) = self.store.clone() else {
            return Err(
                "this agent runs no container images (no [containers] runtime in its config)"
                    .into(),
            );
        };
        match piece {
            ImagePiece::Begin { transfer, spec } => self.begin(&store, transfer, spec),
            ImagePiece::Chunk {
                transfer,
                offset,
                data,
            } => {
                let t = self
                    .transfers
                    .get_mut(&transfer)
                    .ok_or("no such image transfer")?;
                let result = write(t, offset, &data);
                if result.is_err() {
                    self.transfers.remove(&transfer);
                }
                result
            }
            ImagePiece::End { transfer } => {
                let t = self
                    .transfers
                    .remove(&transfer)
                    .ok_or("no such image transfer")?;
                let name = t.spec.name.clone();
                let installed = tokio::task::spawn_blocking(move || install(&store, t))
                    .await
                    .map_err(|e| format!("installing the image: {e}"))?;
                match &installed {
                    Ok(ImageAck::Installed(s)) => {
                        info!(image = %s.name, arch = %s.architecture, "image installed from the master")
                    }
                    Err(e) => warn!(image = ?name, "image from the master refused: {e}"),
                    _ => {}
                }
                installed
            }
            ImagePiece::Abort { transfer } => {
                self.transfers.remove(&transfer);
                Ok(ImageAck::Received { offset: 0 })
            }
        }
    }

    fn begin(
        &mut self,
        store: &ImageStore,
        transfer: u64,
        spec: ImageSpec,
    ) -> Result<ImageAck, String> {
        self.transfers.retain(|_, t| t.last.elapsed() < STALE_AFTER);
        self.transfers.remove(&transfer);
        if self.transfers.len() >= MAX_TRANSFERS {
            return Err(format!(
                "{MAX_TRANSFERS} image transfers are in progress here already"
            ));
        }
        if spec.size > MAX_IMAGE_BYTES {
            return Err(format!(
                "the image is {} MiB, more than the {} MiB an agent takes",
                spec.size >> 20,
                MAX_IMAGE_BYTES >> 20
            ));
        }
        if let Some(arch) = &spec.architecture {
            foreign(arch).map_or(Ok(()), Err)?;
        }
        let dir = store.dir();
        std::fs::create_dir_all(dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
        // The tarball and what it unpacks to both need room: refuse now rather than fill the
        // card halfway through.
        if let Ok(usage) = crate::gc::DiskUsage::of(dir) {
            if usage.available < spec.size.saturating_mul(2) {
                return Err(format!(
                    "not enough room in {}: {} MiB free, the image needs about {} MiB",
                    dir.display(),
                    usage.available >> 20,
                    spec.size.saturating_mul(2) >> 20
                ));
            }
        }
        let path = dir.join(format!(
            "{}upload-{transfer}.tar",
            crate::images::TMP_PREFIX
        ));
        let file = std::fs::File::create(&path)
            .map_err(|e| format!("creating {}: {e}", path.display()))?;
        self.transfers.insert(
            transfer,
            Transfer {
                spec,
                path,
                file,
                digest: Digest::default(),
                received: 0,
                last: Instant::now(),
            },
        );
        Ok(ImageAck::Received { offset: 0 })
    }
}

/// Why an image for `arch` cannot run here, if it cannot.
fn foreign(arch: &str) -> Option<String> {
    (arch != host_architecture()).then(|| {
        format!(
            "the image is for {arch} and this agent is {}: its tasks could not run here",
            host_architecture()
        )
    })
}

fn write(t: &mut Transfer, offset: u64, data: &[u8]) -> Result<ImageAck, String> {
    if offset != t.received {
        return Err(format!(
            "chunk at byte {offset}, expected byte {}",
            t.received
        ));
    }
    let end = t.received + data.len() as u64;
    if end > t.spec.size || data.len() > CHUNK_BYTES {
        return Err(format!(
            "more bytes than announced ({end} of {})",
            t.spec.size
        ));
    }
    t.file
        .write_all(data)
        .map_err(|e| format!("writing {}: {e}", t.path.display()))?;
    t.digest.update(data);
    t.received = end;
    t.last = Instant::now();
    Ok(ImageAck::Received { offset: end })
}

/// Checks the whole file and installs it (blocking: unpacking takes a while).
fn install(store: &ImageStore, mut t: Transfer) -> Result<ImageAck, String> {
    if t.received != t.spec.size {
        return Err(format!(
            "the image ended at {} of {} bytes",
            t.received, t.spec.size
        ));
    }
    t.file
        .sync_all()
        .map_err(|e| format!("writing {}: {e}", t.path.display()))?;
    let digest = std::mem::take(&mut t.digest).finish();
    if !digest.eq_ignore_ascii_case(&t.spec.sha256) {
        return Err(format!(
            "the image's sha256 is {digest} here, not {}: damaged in transit",
            t.spec.sha256
        ));
    }
    let config = match t.spec.format {
        ImageFormat::Rootfs => {
            let name = t
                .spec
                .name
                .as_deref()
                .ok_or("a root filesystem needs a name")?;
            let arch = t
                .spec
                .architecture
                .clone()
                .unwrap_or_else(|| host_architecture().to_string());
            store.import_rootfs(&t.path, name, &arch)
        }
        ImageFormat::Archive => {
            store.load_archive_for(&t.path, t.spec.name.as_deref(), host_architecture())
        }
    }
    .map_err(|e| e.to_string())?;
    Ok(ImageAck::Installed(summary(&config)))
}

fn summary(config: &ImageConfig) -> ImageSummary {
    ImageSummary {
        name: config.name.clone(),
        architecture: config.architecture.clone(),
        size_bytes: config.size_bytes,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(data: &[u8], arch: Option<&str>) -> ImageSpec {
        let mut d = Digest::default();
        d.update(data);
        ImageSpec {
            format: ImageFormat::Rootfs,
            name: Some("tiny".into()),
            architecture: arch.map(str::to_string),
            size: data.len() as u64,
            sha256: d.finish(),
        }
    }

    /// A tarball of one file, as bytes.
    fn tarball(dir: &std::path::Path) -> Vec<u8> {
        let src = dir.join("src");
        std::fs::create_dir_all(src.join("bin")).unwrap();
        std::fs::write(src.join("bin/hello"), b"hi\n").unwrap();
        let out = dir.join("t.tar");
        let ok = std::process::Command::new("tar")
            .arg("-cf")
            .arg(&out)
            .arg("-C")
            .arg(&src)
            .arg(".")
            .status()
            .unwrap();
        assert!(ok.success());
        std::fs::read(out).unwrap()
    }

    fn service(dir: &std::path::Path) -> Service {
        Service {
            store: Some(ImageStore::new(dir.join("images"))),
            transfers: HashMap::new(),
        }
    }

    /// Sends `data` in chunks of `chunk` bytes.
    async fn send(s: &mut Service, transfer: u64, data: &[u8], chunk: usize) -> Result<(), String> {
        let mut offset = 0;
        for piece in data.chunks(chunk) {
            let ack = s
                .piece(ImagePiece::Chunk {
                    transfer,
                    offset,
                    data: piece.to_vec(),
                })
                .await?;
            offset += piece.len() as u64;
            assert_eq!(ack, ImageAck::Received { offset });
        }
        Ok(())
    }

    #[tokio::test]
    async fn a_streamed_image_is_checked_and_installed_leaving_nothing_behind() {
        let dir = tempfile::tempdir().unwrap();
        let data = tarball(dir.path());
        let mut s = service(dir.path());
        let begin = ImagePiece::Begin {
            transfer: 7,
            spec: spec(&data, None),
        };
        assert_eq!(s.piece(begin).await, Ok(ImageAck::Received { offset: 0 }));
        send(&mut s, 7, &data, 1000).await.unwrap();
        let done = s.piece(ImagePiece::End { transfer: 7 }).await.unwrap();
        let ImageAck::Installed(summary) = done else {
            panic!("{done:?}")
        };
        assert_eq!(summary.name, "tiny:latest");
        assert_eq!(summary.architecture, host_architecture());
        let store = ImageStore::new(dir.path().join("images"));
        assert!(store
            .resolve("tiny")
            .unwrap()
            .rootfs
            .join("bin/hello")
            .is_file());
        let names: Vec<_> = std::fs::read_dir(store.dir())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 1, "{names:?}");
    }

    #[tokio::test]
    async fn damaged_out_of_order_or_foreign_images_are_refused_and_never_installed() {
        let dir = tempfile::tempdir().unwrap();
        let data = tarball(dir.path());
        let mut s = service(dir.path());
        let store = ImageStore::new(dir.path().join("images"));

        // A digest that does not match what arrived.
        let mut damaged = spec(&data, None);
        damaged.sha256 = "0".repeat(64);
        s.piece(ImagePiece::Begin {
            transfer: 1,
            spec: damaged,
        })
        .await
        .unwrap();
        send(&mut s, 1, &data, 4096).await.unwrap();
        let err = s.piece(ImagePiece::End { transfer: 1 }).await.unwrap_err();
        assert!(err.contains("damaged in transit"), "{err}");

        // A chunk out of order ends the transfer.
        s.piece(ImagePiece::Begin {
            transfer: 2,
            spec: spec(&data, None),
        })
        .await
        .unwrap();
        let skip = ImagePiece::Chunk {
            transfer: 2,
            offset: 10,
            data: data[10..20].to_vec(),
        };
        let err = s.piece(skip).await.unwrap_err();
        assert!(err.contains("expected byte 0"), "{err}");
        let err = s.piece(ImagePiece::End { transfer: 2 }).await.unwrap_err();
        assert!(err.contains("no such image transfer"), "{err}");

        // Another architecture is refused before a byte is sent.
        let other = if host_architecture() == "arm64" {
            "amd64"
        } else {
            "arm64"
        };
        let err = s
            .piece(ImagePiece::Begin {
                transfer: 3,
                spec: spec(&data, Some(other)),
            })
            .await
            .unwrap_err();
        assert!(
            err.contains(other) && err.contains(host_architecture()),
            "{err}"
        );

        // Too big for any agent.
        let mut huge = spec(&data, None);
        huge.size = MAX_IMAGE_BYTES + 1;
        let err = s
            .piece(ImagePiece::Begin {
                transfer: 4,
                spec: huge,
            })
            .await
            .unwrap_err();
        assert!(err.contains("MiB"), "{err}");

        // An aborted transfer leaves nothing.
        s.piece(ImagePiece::Begin {
            transfer: 5,
            spec: spec(&data, None),
        })
        .await
        .unwrap();
        send(&mut s, 5, &data[..100], 50).await.unwrap();
        s.piece(ImagePiece::Abort { transfer: 5 }).await.unwrap();

        assert!(store.list().unwrap().is_empty());
        let left: Vec<_> = std::fs::read_dir(store.dir())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert!(left.is_empty(), "{left:?}");
    }

    #[tokio::test]
    async fn an_agent_without_a_runtime_says_so() {
        let mut s = Service {
            store: None,
            transfers: HashMap::new(),
        };
        let err = s.piece(ImagePiece::End { transfer: 1 }).await.unwrap_err();
        assert!(err.contains("[containers] runtime"), "{err}");
    }
}

//! Container images on their way to the agents (`bramble images import|load`): an operator
//! uploads the file to the master in acknowledged chunks, the master keeps it in a temporary
//! file under `<state_dir>/uploads` (bounded by [`MAX_IMAGE_BYTES`], checked against the
//! operator's size and SHA-256 before anything is sent on), then streams it to each agent over
//! its existing connection, one acknowledged chunk of [`CHUNK_BYTES`] after another, through
//! the state task (`state/images.rs`), which only passes pieces into agents' queues. Each agent
//! checks the digest again and installs the image (`agent/src/image_service.rs`).
//!
//! The bytes are never in the state task and never more than a few chunks per agent in
//! memory. A half-received upload is a `.part` file removed when the upload ends or its
//! connection goes (and at the master's start), so it is never sent on.

use bramble_proto::image_transfer::{Digest, CHUNK_BYTES, MAX_IMAGE_BYTES};
use bramble_proto::messages::{
    ImageAck, ImageFormat, ImagePiece, ImagePushResult, ImageSpec, ImageSummary, ImageUpload,
    OperatorCall, OperatorReply,
};
use bramble_proto::AgentId;
use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot};
use tracing::{info, warn};

use crate::state::Input;
use bramble_proto::task::CONTAINERS_ATTRIBUTE;

/// Chunks in flight to one agent: enough to hide a LAN round trip, few enough that an
/// image never crowds an agent's queue.
const WINDOW: usize = 4;
/// How long an agent has to take one piece.
const PIECE_TIMEOUT: Duration = Duration::from_secs(30);
/// How long an agent has to check and unpack a whole image (a Pi's SD card is slow).
const INSTALL_TIMEOUT: Duration = Duration::from_secs(600);

/// Where uploads are kept while they arrive and are streamed out.
#[derive(Debug, Clone)]
pub struct Uploads {
    dir: PathBuf,
}

impl Uploads {
    /// `<state_dir>/uploads`, emptied of what a previous master left (never complete: an
    /// upload lives only as long as its operator's connection).
    pub fn new(state_dir: &Path) -> Uploads {
        let dir = state_dir.join("uploads");
        if let Ok(entries) = std::fs::read_dir(&dir) {
            for e in entries.filter_map(Result::ok) {
                let _ = std::fs::remove_file(e.path());
            }
        }
        Uploads { dir }
    }
}

/// One operator connection's upload in progress (one at a time per connection).
pub struct Upload {
    spec: ImageSpec,
    agent: Option<AgentId>,
    path: PathBuf,
    file: Option<tokio::fs::File>,
    digest: Option<Digest>,
    received: u64,
}

impl Drop for Upload {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Answers one piece of an operator's upload; `upload` is the connection's current one.
pub async fn handle(
    uploads: &Uploads,
    upload: &mut Option<Upload>,
    piece: ImageUpload,
    inputs: &mpsc::Sender<Input>,
) -> OperatorReply {
    let result = match piece {
        ImageUpload::Begin { spec, agent } => begin(uploads, spec, agent).await.map(|u| {
            *upload = Some(u);
            OperatorReply::ImageReceived { offset: 0 }
        }),
        ImageUpload::Chunk { offset, data } => match upload.as_mut() {
            Some(u) => u
                .write(offset, &data)
                .await
                .map(|offset| OperatorReply::ImageReceived { offset }),
            None => Err("no image upload in progress on this connection".into()),
        },
        ImageUpload::End => match upload.take() {
            Some(u) => finish(u, inputs).await.map(OperatorReply::ImagePushed),
            None => Err("no image upload in progress on this connection".into()),
        },
    };
    result.unwrap_or_else(|message| {
        // A refused piece ends the upload: what arrived is of no use.
        *upload = None;
        OperatorReply::Error { message }
    })
}

/// Checks what the operator says is coming and opens the file it goes to.
async fn begin(
    uploads: &Uploads,
    spec: ImageSpec,
    agent: Option<AgentId>,
) -> Result<Upload, String> {
    if spec.size > MAX_IMAGE_BYTES {
        return Err(format!(
            "the image is {} MiB; the master takes images of at most {} MiB",
            spec.size >> 20,
            MAX_IMAGE_BYTES >> 20
        ));
    }
    if spec.sha256.len() != 64 || !spec.sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err("the upload's sha256 is not 64 hex digits".into());
    }
    if spec.format == ImageFormat::Rootfs && spec.name.is_none() {
        return Err("a root filesystem upload needs an image name".into());
    }
    tokio::fs::create_dir_all(&uploads.dir)
        .await
        .map_err(|e| format!("creating {}: {e}", uploads.dir.display()))?;
    let path = uploads.dir.join(format!("{}.part", transfer_id()));
    let file = tokio::fs::File::create(&path)
        .await
        .map_err(|e| format!("creating {}: {e}", path.display()))?;
    Ok(Upload {
        spec,
        agent,
        path,
        file: Some(file),
        digest: Some(Digest::default()),
        received: 0,
    })
}

impl Upload {
    async fn write(&mut self, offset: u64, data: &[u8]) -> Result<u64, String> {
        if offset != self.received {
            return Err(format!(
                "chunk at byte {offset}, expected byte {}",
                self.received
            ));
        }
        let end = self.received + data.len() as u64;
        if end > self.spec.size || data.len() > CHUNK_BYTES {
            return Err(format!(
                "more bytes than announced ({end} of {})",
                self.spec.size
            ));
        }
        let (Some(file), Some(digest)) = (self.file.as_mut(), self.digest.as_mut()) else {
            return Err("the upload is already complete".into());
        };
        file.write_all(data)
            .await
            .map_err(|e| format!("writing {}: {e}", self.path.display()))?;
        digest.update(data);
        self.received = end;
        Ok(end)
    }
}

/// Checks the whole upload, then streams it to the target agents.
async fn finish(
    mut upload: Upload,
    inputs: &mpsc::Sender<Input>,
) -> Result<Vec<ImagePushResult>, String> {
    if upload.received != upload.spec.size {
        return Err(format!(
            "upload ended at {} of {} bytes",
            upload.received, upload.spec.size
        ));
    }
    if let Some(mut file) = upload.file.take() {
        file.flush()
            .await
            .map_err(|e| format!("writing {}: {e}", upload.path.display()))?;
    }
    let digest = upload.digest.take().map(Digest::finish).unwrap_or_default();
    if !digest.eq_ignore_ascii_case(&upload.spec.sha256) {
        return Err(format!(
            "the upload's sha256 is {digest}, not the announced {}: damaged in transit?",
            upload.spec.sha256
        ));
    }
    let targets = targets(inputs, upload.agent.as_ref()).await?;
    info!(
        bytes = upload.spec.size,
        agents = targets.len(),
        name = upload.spec.name.as_deref().unwrap_or("(the archive's)"),
        "streaming an image to agents"
    );
    // Every agent at once (they are few): the slowest sets the pace, not their sum.
    let mut pushes = tokio::task::JoinSet::new();
    for (index, (agent_id, hostname)) in targets.into_iter().enumerate() {
        let (inputs, path, spec) = (inputs.clone(), upload.path.clone(), upload.spec.clone());
        pushes.spawn(async move {
            let result = push(&inputs, &agent_id, &path, spec).await;
            match &result {
                Ok(image) => info!(agent = %agent_id, image = %image.name, "image installed"),
                Err(e) => warn!(agent = %agent_id, "image not installed: {e}"),
            }
            let pushed = ImagePushResult {
                agent_id,
                hostname,
                result,
            };
            (index, pushed)
        });
    }
    let mut results = Vec::new();
    while let Some(done) = pushes.join_next().await {
        results.push(done.map_err(|e| format!("an image push failed: {e}"))?);
    }
    results.sort_by_key(|(index, _)| *index);
    // The upload's file goes only now, once every push has read it.
    drop(upload);
    Ok(results.into_iter().map(|(_, r)| r).collect())
}

/// The agents to send to: the one named, else every connected agent that runs images.
async fn targets(
    inputs: &mpsc::Sender<Input>,
    only: Option<&AgentId>,
) -> Result<Vec<(AgentId, String)>, String> {
    let (reply, rx) = oneshot::channel();
    let call = OperatorCall::GetState;
    inputs
        .send(Input::Operator { call, reply })
        .await
        .map_err(|_| "the master is shutting down".to_string())?;
    let OperatorReply::State(state) = rx
        .await
        .map_err(|_| "the master is shutting down".to_string())?
    else {
        return Err("the master's state did not answer".into());
    };
    let connected = state.agents.iter().filter(|a| a.connected);
    let targets: Vec<(AgentId, String)> = match only {
        Some(id) => {
            let agent = state.agents.iter().find(|a| &a.id == id);
            match agent {
                Some(a) if a.connected => vec![(a.id.clone(), a.hostname.clone())],
                Some(_) => return Err(format!("agent {id} is not connected")),
                None => return Err(format!("no agent {id} is known to this master")),
            }
        }
        None => connected
            .filter(|a| a.attributes.contains_key(CONTAINERS_ATTRIBUTE))
            .map(|a| (a.id.clone(), a.hostname.clone()))
            .collect(),
    };
    if targets.is_empty() {
        return Err(format!(
            "no connected agent runs container images (none advertises '{CONTAINERS_ATTRIBUTE}'): \
             give agents a [containers] runtime"
        ));
    }
    Ok(targets)
}

/// Sends the file to one agent: Begin, acknowledged chunks (at most [`WINDOW`] unanswered),
/// End; on failure the agent is told to drop what it has.
async fn push(
    inputs: &mpsc::Sender<Input>,
    agent: &AgentId,
    path: &Path,
    spec: ImageSpec,
) -> Result<ImageSummary, String> {
    let transfer = transfer_id();
    let result = push_pieces(inputs, agent, path, spec, transfer).await;
    if result.is_err() {
        // Best effort: the agent also drops a transfer that goes quiet.
        let _ = ask(inputs, agent, ImagePiece::Abort { transfer }, PIECE_TIMEOUT).await;
    }
    result
}

async fn push_pieces(
    inputs: &mpsc::Sender<Input>,
    agent: &AgentId,
    path: &Path,
    spec: ImageSpec,
    transfer: u64,
) -> Result<ImageSummary, String> {
    let size = spec.size;
    let begin = ImagePiece::Begin { transfer, spec };
    expect_received(ask(inputs, agent, begin, PIECE_TIMEOUT).await?.await, 0)?;
    let mut file = tokio::fs::File::open(path)
        .await
        .map_err(|e| format!("opening {}: {e}", path.display()))?;
    let mut in_flight: VecDeque<(u64, oneshot::Receiver<Result<ImageAck, String>>)> =
        VecDeque::new();
    let mut offset = 0u64;
    while offset < size || !in_flight.is_empty() {
        if offset < size && in_flight.len() < WINDOW {
            let want = CHUNK_BYTES.min((size - offset) as usize);
            let mut data = vec![0u8; want];
            file.read_exact(&mut data)
                .await
                .map_err(|e| format!("reading {}: {e}", path.display()))?;
            let piece = ImagePiece::Chunk {
                transfer,
                offset,
                data,
            };
            offset += want as u64;
            in_flight.push_back((offset, ask(inputs, agent, piece, PIECE_TIMEOUT).await?));
            continue;
        }
        if let Some((end, rx)) = in_flight.pop_front() {
            expect_received(rx.await, end)?;
        }
    }
    let end = ImagePiece::End { transfer };
    match ask(inputs, agent, end, INSTALL_TIMEOUT).await?.await {
        Ok(Ok(ImageAck::Installed(summary))) => Ok(summary),
        Ok(Ok(other)) => Err(format!(
            "the agent answered {other:?} to the end of the image"
        )),
        Ok(Err(e)) => Err(e),
        Err(_) => Err("the master is shutting down".into()),
    }
}

/// Hands a piece to the state task; the receiver gets the agent's answer.
async fn ask(
    inputs: &mpsc::Sender<Input>,
    agent: &AgentId,
    piece: ImagePiece,
    timeout: Duration,
) -> Result<oneshot::Receiver<Result<ImageAck, String>>, String> {
    let (reply, rx) = oneshot::channel();
    inputs
        .send(Input::ImageToAgent {
            agent: agent.clone(),
            piece,
            timeout,
            reply,
        })
        .await
        .map_err(|_| "the master is shutting down".to_string())?;
    Ok(rx)
}

fn expect_received(
    answer: Result<Result<ImageAck, String>, oneshot::error::RecvError>,
    want: u64,
) -> Result<(), String> {
    match answer {
        Ok(Ok(ImageAck::Received { offset })) if offset == want => Ok(()),
        Ok(Ok(other)) => Err(format!(
            "the agent answered {other:?}, expected byte {want}"
        )),
        Ok(Err(e)) => Err(e),
        Err(_) => Err("the master is shutting down".into()),
    }
}

/// Unique enough across this master's life and its restarts (start time + a counter): an
/// agent keys its transfers by it.
fn transfer_id() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let base = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0);
    base.wrapping_shl(8)
        .wrapping_add(NEXT.fetch_add(1, Ordering::Relaxed))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(data: &[u8]) -> ImageSpec {
        let mut d = Digest::default();
        d.update(data);
        ImageSpec {
            format: ImageFormat::Archive,
            name: None,
            architecture: None,
            size: data.len() as u64,
            sha256: d.finish(),
        }
    }

    fn error(reply: OperatorReply) -> String {
        match reply {
            OperatorReply::Error { message } => message,
            other => panic!("expected an error, got {other:?}"),
        }
    }

    fn files(dir: &Path) -> usize {
        std::fs::read_dir(dir).map(|d| d.count()).unwrap_or(0)
    }

    #[tokio::test]
    async fn uploads_are_bounded_checked_and_never_kept_half_done() {
        let state = tempfile::tempdir().unwrap();
        let uploads = Uploads::new(state.path());
        let (inputs, _rx) = mpsc::channel(1);
        let mut upload = None;
        let data = vec![5u8; 1000];

        // Too big: refused before a byte is sent.
        let mut huge = spec(&data);
        huge.size = MAX_IMAGE_BYTES + 1;
        let begin = ImageUpload::Begin {
            spec: huge,
            agent: None,
        };
        let err = error(handle(&uploads, &mut upload, begin, &inputs).await);
        assert!(err.contains("at most 2048 MiB"), "{err}");

        // Damaged in transit: the digest at the end does not match.
        let mut damaged = spec(&data);
        damaged.sha256 = "a".repeat(64);
        let begin = ImageUpload::Begin {
            spec: damaged,
            agent: None,
        };
        let ok = handle(&uploads, &mut upload, begin, &inputs).await;
        assert_eq!(ok, OperatorReply::ImageReceived { offset: 0 });
        let chunk = ImageUpload::Chunk {
            offset: 0,
            data: data.clone(),
        };
        let ok = handle(&uploads, &mut upload, chunk, &inputs).await;
        assert_eq!(ok, OperatorReply::ImageReceived { offset: 1000 });
        assert_eq!(files(&state.path().join("uploads")), 1);
        let err = error(handle(&uploads, &mut upload, ImageUpload::End, &inputs).await);
        assert!(err.contains("damaged in transit"), "{err}");
        assert_eq!(files(&state.path().join("uploads")), 0);

        // More than announced, or out of order: the upload ends and its file goes.
        let begin = ImageUpload::Begin {
            spec: spec(&data[..10]),
            agent: None,
        };
        handle(&uploads, &mut upload, begin, &inputs).await;
        let chunk = ImageUpload::Chunk {
            offset: 0,
            data: data.clone(),
        };
        let err = error(handle(&uploads, &mut upload, chunk, &inputs).await);
        assert!(err.contains("more bytes than announced"), "{err}");
        assert!(upload.is_none());
        assert_eq!(files(&state.path().join("uploads")), 0);
        let chunk = ImageUpload::Chunk {
            offset: 0,
            data: data.clone(),
        };
        let err = error(handle(&uploads, &mut upload, chunk, &inputs).await);
        assert!(err.contains("no image upload in progress"), "{err}");

        // A connection that goes mid-upload leaves nothing (the upload is dropped with it).
        let begin = ImageUpload::Begin {
            spec: spec(&data),
            agent: None,
        };
        handle(&uploads, &mut upload, begin, &inputs).await;
        assert_eq!(files(&state.path().join("uploads")), 1);
        drop(upload.take());
        assert_eq!(files(&state.path().join("uploads")), 0);
    }
}

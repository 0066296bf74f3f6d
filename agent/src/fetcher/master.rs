//! `master:NAME` artifacts: files of the master's artifacts directory, read a piece at a time
//! over the agent's own connection to the master (`AgentToMaster::ArtifactRead`, answered by
//! `MasterToAgent::ArtifactData`; the next piece is asked for only once the last is written,
//! so a fetch holds one piece in memory and never crowds the link).
//!
//! [`MasterFetch`] is shared by the fetcher and the master link: the link says which
//! connection is current ([`MasterFetch::connected`]) and hands it the answers
//! ([`MasterFetch::answer`]); a connection that ends fails the fetches waiting on it.

use super::Sink;
use bramble_proto::messages::{AgentToMaster, ArtifactChunk};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

/// How long the master has to answer one piece.
const PIECE_TIMEOUT: Duration = Duration::from_secs(30);

type Answer = Result<ArtifactChunk, String>;

/// Requests to the master for artifact pieces, and where their answers go.
#[derive(Debug, Clone, Default)]
pub struct MasterFetch {
    inner: Arc<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    link: Mutex<Option<mpsc::Sender<AgentToMaster>>>,
    waiting: Mutex<HashMap<u64, oneshot::Sender<Answer>>>,
    next: AtomicU64,
}

impl MasterFetch {
    /// The master link's current connection (`None`: none). Requests waiting on the previous
    /// one fail: their answers will never come.
    pub fn connected(&self, link: Option<mpsc::Sender<AgentToMaster>>) {
        if let Ok(mut current) = self.inner.link.lock() {
            *current = link;
        }
        if let Ok(mut waiting) = self.inner.waiting.lock() {
            waiting.clear();
        }
    }

    /// An answer from the master; `false` if no one waits for it (timed out, or unknown).
    pub fn answer(&self, request: u64, result: Answer) -> bool {
        let waiter = self
            .inner
            .waiting
            .lock()
            .ok()
            .and_then(|mut w| w.remove(&request));
        waiter.is_some_and(|w| w.send(result).is_ok())
    }

    /// Reads `name` from the master into `sink`, piece by piece.
    pub(super) async fn download(&self, name: &str, sink: &mut Sink) -> Result<(), String> {
        let mut offset = 0u64;
        let mut size = None;
        loop {
            let chunk = self.ask(name, offset).await?;
            match size {
                None => {
                    sink.expect(chunk.size)?;
                    size = Some(chunk.size);
                }
                Some(s) if s != chunk.size => {
                    return Err(format!(
                        "the file changed on the master while it was fetched ({s} → {} bytes)",
                        chunk.size
                    ));
                }
                Some(_) => {}
            }
            if chunk.data.is_empty() {
                if offset != chunk.size {
                    return Err(format!(
                        "the master's file ended at {offset} of {} bytes",
                        chunk.size
                    ));
                }
                return Ok(());
            }
            sink.write(&chunk.data).await?;
            offset += chunk.data.len() as u64;
            if offset >= chunk.size {
                return Ok(());
            }
        }
    }

    async fn ask(&self, name: &str, offset: u64) -> Result<ArtifactChunk, String> {
        let request = self.inner.next.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        let link = self.inner.link.lock().ok().and_then(|l| l.clone());
        let link = link.ok_or("not connected to the master")?;
        if let Ok(mut waiting) = self.inner.waiting.lock() {
            waiting.insert(request, tx);
        }
        let msg = AgentToMaster::ArtifactRead {
            request,
            name: name.to_string(),
            offset,
        };
        if link.send(msg).await.is_err() {
            self.forget(request);
            return Err("the connection to the master went down".into());
        }
        let answer = match tokio::time::timeout(PIECE_TIMEOUT, rx).await {
            Err(_) => {
                self.forget(request);
                return Err(format!(
                    "the master did not answer within {}s",
                    PIECE_TIMEOUT.as_secs()
                ));
            }
            Ok(Err(_)) => return Err("the connection to the master went down".into()),
            Ok(Ok(answer)) => answer,
        };
        answer.map_err(|why| format!("the master says: {why}"))
    }

    fn forget(&self, request: u64) {
        if let Ok(mut waiting) = self.inner.waiting.lock() {
            waiting.remove(&request);
        }
    }
}

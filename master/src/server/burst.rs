//! The state task: one owner of the [`Master`], working in bursts — handle what is waiting,
//! commit what the burst changed (group commit), then let the burst's messages out.

use super::{Backend, OpenStore};
use crate::state::{Input, Master};
use crate::store::Batch;
use bramble_proto::memory;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch};
use tracing::{debug, error, warn};

/// How often timeouts are checked.
const TICK: Duration = Duration::from_millis(100);
/// Inputs handled before a commit at most; more wait for the next burst.
const MAX_BURST: usize = 1024;
/// A commit slower than this is worth telling the operator about (a dying SD card).
const SLOW_COMMIT: Duration = Duration::from_secs(1);

pub(super) async fn run_state(
    mut master: Master,
    store: OpenStore,
    mut inputs: mpsc::Receiver<Input>,
    mut shutdown: watch::Receiver<bool>,
    mut crash: watch::Receiver<bool>,
    failed: watch::Sender<Option<String>>,
) {
    let mut store = Some(store);
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut after_burst = memory::AfterBurst::new(Instant::now());
    loop {
        tokio::select! {
            _ = shutdown.changed() => break,
            _ = crash.changed() => return,
            input = inputs.recv() => match input {
                Some(input) => {
                    master.handle(input, Instant::now());
                    let mut handled = 1;
                    for _ in 1..MAX_BURST {
                        match inputs.try_recv() {
                            Ok(input) => master.handle(input, Instant::now()),
                            Err(_) => break,
                        }
                        handled += 1;
                    }
                    after_burst.worked(handled);
                    master.end_burst(Instant::now());
                    // Relayed status updates rest on the agents' records, not on this commit.
                    master.flush_early();
                }
                None => break,
            },
            _ = tick.tick() => {
                let now = Instant::now();
                master.tick(now);
                if after_burst.due(now) {
                    memory::trim_after_burst();
                }
            }
        }
        let batch = master.take_writes();
        if !batch.is_empty() {
            let Some(open) = store.take() else { break };
            match commit(open, batch).await {
                Ok(open) => store = Some(open),
                Err(e) => {
                    error!("stopping the master: {e}; nothing more is sent, so no peer is told anything that is not on disk");
                    let _ = failed.send(Some(e));
                    return;
                }
            }
        }
        if *crash.borrow() {
            return;
        }
        master.flush_outbox();
    }
    debug!("master state task stopped");
}

/// Writes one burst's changes: to the local file off the async threads (a commit waits for
/// fsync), or through the replicated log.
async fn commit(mut open: OpenStore, batch: Batch) -> Result<OpenStore, String> {
    let started = Instant::now();
    let records = batch.len();
    let done = match open.store {
        Backend::Local(_) => tokio::task::spawn_blocking(move || {
            let result = match &mut open.store {
                Backend::Local(store) => store.commit(&batch).map_err(|e| e.to_string()),
                Backend::Replicated(_) => Ok(()),
            };
            (open, result)
        })
        .await
        .map_err(|e| format!("the master store's commit task failed: {e}")),
        Backend::Replicated(ref store) => {
            let result = store.commit(&batch).await.map_err(|e| e.to_string());
            Ok((open, result))
        }
    };
    match done {
        Ok((open, Ok(()))) => {
            let took = started.elapsed();
            if took > SLOW_COMMIT {
                warn!(?took, records, store = %open.store.describe(), "slow commit to the master store (failing storage?)");
            } else {
                debug!(?took, records, "committed");
            }
            Ok(open)
        }
        Ok((_, Err(e))) => Err(e),
        Err(e) => Err(e),
    }
}

impl Backend {
    fn describe(&self) -> String {
        match self {
            Backend::Local(store) => store.path().display().to_string(),
            Backend::Replicated(_) => "replicated".into(),
        }
    }
}

//! `bramble bench state`: the write latency of a framework's key/value state (issue 18). One
//! scheduler on a throwaway cluster (one master, or a replicated group on loopback) writes its
//! own state one write at a time, each timed from the driver call to the `state_changed` that
//! confirms it: by then the master has committed it (with `[ha]`, on a majority). Writes
//! alternate between a plain put and a compare-and-set on the version the last confirmation
//! gave, over an odd number of keys (so each key takes both kinds); the first round, which
//! creates the keys, is left out of the figures.

use super::stats::{spread, Spread};
use bramble_proto::framework_state::StateEntry;
use bramble_sdk::{async_trait, Filters, Offer, Scheduler, SchedulerDriver, TaskStatus};
use serde::Serialize;
use std::collections::HashMap;
use std::time::Instant;

/// Keys the writes rotate over: odd, so puts and compare-and-sets take turns on each.
const KEYS: u64 = 15;

#[derive(Debug, Serialize)]
pub struct StateReport {
    pub masters: usize,
    /// Writes timed (after the first round of `KEYS` that creates the keys).
    pub writes: u64,
    pub value_bytes: usize,
    pub wall_s: f64,
    pub writes_per_s: f64,
    /// Plain puts, call → confirmation.
    pub put: Spread,
    /// Compare-and-set puts on the confirmed version, call → confirmation.
    pub compare_and_set: Spread,
    /// Writes the master refused (a compare-and-set that lost, a quota): should be 0.
    pub refused: u64,
    /// Writes whose confirmation a reconnection lost (sent again, not timed).
    pub lost: u64,
}

/// A write sent and not yet confirmed.
struct InFlight {
    key: String,
    compare_and_set: bool,
    at: Instant,
}

/// The writer: one write in flight, the next sent from the confirmation of the last.
struct Writer {
    total: u64,
    value: Vec<u8>,
    sent: u64,
    in_flight: Option<InFlight>,
    versions: HashMap<String, u64>,
    put_ms: Vec<f64>,
    cas_ms: Vec<f64>,
    refused: u64,
    lost: u64,
    started: Option<Instant>,
    ended: Option<Instant>,
    failed: Option<String>,
}

impl Writer {
    fn next(&mut self, driver: &SchedulerDriver) {
        if self.sent == self.total + KEYS {
            self.ended = Some(Instant::now());
            driver.stop(false);
            return;
        }
        if self.sent == KEYS {
            // The keys exist: the timed writes start here.
            self.started = Some(Instant::now());
        }
        let key = format!("bench/{}", self.sent % KEYS);
        let compare_and_set = self.sent % 2 == 1;
        let expected = compare_and_set.then(|| self.versions.get(&key).copied().unwrap_or(0));
        self.sent += 1;
        self.in_flight = Some(InFlight {
            key: key.clone(),
            compare_and_set,
            at: Instant::now(),
        });
        if let Err(e) = driver.put_state(key, self.value.clone(), expected) {
            self.failed = Some(format!("writing the framework's state: {e}"));
            driver.stop(false);
        }
    }

    fn timed(&self) -> bool {
        self.started.is_some()
    }
}

#[async_trait]
impl Scheduler for Writer {
    async fn resource_offers(&mut self, driver: &SchedulerDriver, offers: Vec<Offer>) {
        for offer in offers {
            let _ = driver.decline_offer(offer.id, Filters::default());
        }
    }

    async fn status_update(&mut self, _: &SchedulerDriver, _: &TaskStatus) {}

    /// Delivered on every (re-)registration: the first starts the writes; a later one (a
    /// leader change with several masters) may have lost the pending write's confirmation,
    /// so that write is counted lost and the next one sent on the versions just loaded.
    async fn state_loaded(&mut self, driver: &SchedulerDriver, entries: Vec<StateEntry>) {
        for e in entries {
            self.versions.insert(e.key, e.version);
        }
        if self.sent == 0 {
            self.next(driver);
        } else if self.in_flight.take().is_some() {
            self.lost += 1;
            self.sent -= 1;
            self.next(driver);
        }
    }

    async fn state_changed(
        &mut self,
        driver: &SchedulerDriver,
        key: &str,
        entry: Option<&StateEntry>,
    ) {
        if let Some(e) = entry {
            self.versions.insert(key.to_string(), e.version);
        }
        let Some(done) = self.in_flight.take_if(|f| f.key == key) else {
            return;
        };
        if self.timed() {
            let ms = done.at.elapsed().as_secs_f64() * 1e3;
            if done.compare_and_set {
                self.cas_ms.push(ms);
            } else {
                self.put_ms.push(ms);
            }
        }
        self.next(driver);
    }

    async fn error(&mut self, driver: &SchedulerDriver, message: &str) {
        // A refused write names its key; any other error is not about our write.
        let ours = self
            .in_flight
            .as_ref()
            .is_some_and(|f| message.contains(f.key.as_str()));
        if ours {
            tracing::warn!("a state write was refused: {message}");
            self.in_flight = None;
            self.refused += 1;
            self.next(driver);
        }
    }
}

/// `writes` timed writes of `value_bytes` each, one at a time, on a throwaway cluster of
/// `masters` (after a first round that creates the keys).
pub async fn state(masters: usize, writes: u64, value_bytes: usize) -> anyhow::Result<StateReport> {
    anyhow::ensure!(
        value_bytes <= bramble_proto::framework_state::MAX_VALUE_BYTES,
        "--bytes {value_bytes}: over the {}-byte value limit",
        bramble_proto::framework_state::MAX_VALUE_BYTES
    );
    let cluster = crate::demo::Throwaway::start_with_masters(masters, 0, 1.0, 1024).await?;
    let config = cluster.scheduler_config("bench-state")?;
    let writer = Writer {
        total: writes,
        value: vec![b'x'; value_bytes],
        sent: 0,
        in_flight: None,
        versions: HashMap::new(),
        put_ms: Vec::new(),
        cas_ms: Vec::new(),
        refused: 0,
        lost: 0,
        started: None,
        ended: None,
        failed: None,
    };
    let done = bramble_sdk::run_scheduler(config, writer).await;
    cluster.stop().await;
    let w = done?;
    if let Some(why) = w.failed {
        anyhow::bail!(why);
    }
    let (Some(started), Some(ended)) = (w.started, w.ended) else {
        anyhow::bail!("the writes did not complete");
    };
    let wall = (ended - started).as_secs_f64();
    Ok(StateReport {
        masters,
        writes,
        value_bytes,
        wall_s: wall,
        writes_per_s: if wall > 0.0 {
            writes as f64 / wall
        } else {
            0.0
        },
        put: spread(w.put_ms),
        compare_and_set: spread(w.cas_ms),
        refused: w.refused,
        lost: w.lost,
    })
}

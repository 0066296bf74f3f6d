//! `bramble bench state`: the write latency of a framework's key/value state (issue 18). One
//! scheduler on a throwaway cluster (one master, or a replicated group on loopback) writes its
//! own state one write at a time, each timed from the driver call to the `state_changed` that
//! confirms it: by then the master has committed it (with `[ha]`, on a majority). Writes
//! alternate between a plain put and a compare-and-set on the version the last confirmation
//! gave, over a few keys, so both kinds are measured on warm keys.

use super::stats::{spread, Spread};
use bramble_proto::framework_state::StateEntry;
use bramble_sdk::{async_trait, Filters, Offer, Scheduler, SchedulerDriver, TaskStatus};
use serde::Serialize;
use std::collections::HashMap;
use std::time::Instant;

/// Keys the writes rotate over.
const KEYS: usize = 16;

#[derive(Debug, Serialize)]
pub struct StateReport {
    pub masters: usize,
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
}

/// The writer: one write in flight, the next sent from the confirmation of the last.
struct Writer {
    total: u64,
    value: Vec<u8>,
    sent: u64,
    in_flight: Option<(String, bool, Instant)>,
    versions: HashMap<String, u64>,
    put_ms: Vec<f64>,
    cas_ms: Vec<f64>,
    refused: u64,
    started: Option<Instant>,
    ended: Option<Instant>,
}

impl Writer {
    fn next(&mut self, driver: &SchedulerDriver) {
        if self.sent == self.total {
            self.ended = Some(Instant::now());
            driver.stop(false);
            return;
        }
        let key = format!("bench/{}", self.sent as usize % KEYS);
        let compare_and_set = self.sent % 2 == 1;
        let expected = compare_and_set.then(|| self.versions.get(&key).copied().unwrap_or(0));
        self.sent += 1;
        self.in_flight = Some((key.clone(), compare_and_set, Instant::now()));
        if let Err(e) = driver.put_state(key, self.value.clone(), expected) {
            tracing::error!("writing the framework's state: {e}");
            driver.stop(false);
        }
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

    async fn state_loaded(&mut self, driver: &SchedulerDriver, entries: Vec<StateEntry>) {
        for e in entries {
            self.versions.insert(e.key, e.version);
        }
        if self.started.is_none() {
            self.started = Some(Instant::now());
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
        let Some((_, compare_and_set, at)) = self.in_flight.take_if(|(k, ..)| k == key) else {
            return;
        };
        let ms = at.elapsed().as_secs_f64() * 1e3;
        if compare_and_set {
            self.cas_ms.push(ms);
        } else {
            self.put_ms.push(ms);
        }
        self.next(driver);
    }

    async fn error(&mut self, driver: &SchedulerDriver, message: &str) {
        // A refused write names its key; anything else is not ours to count.
        if self.in_flight.take().is_some() {
            tracing::warn!("a state write was refused: {message}");
            self.refused += 1;
            self.next(driver);
        }
    }
}

/// `writes` writes of `value_bytes` each, one at a time, on a throwaway cluster of `masters`.
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
        started: None,
        ended: None,
    };
    let done = bramble_sdk::run_scheduler(config, writer).await;
    cluster.stop().await;
    let w = done?;
    let wall = match (w.started, w.ended) {
        (Some(a), Some(b)) => (b - a).as_secs_f64(),
        _ => 0.0,
    };
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
    })
}

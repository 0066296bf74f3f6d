//! The master's front panel: turns the cluster summary into what the SSD1306 OLED shows.
//!
//! A tokio task waits for the summary the state publishes on its [`Feed`] (agents' loads and
//! jobs' progress, pushed when they change; never the whole state) and maps it to a
//! [`PanelState`], re-reading the board's temperature now and then; a dedicated thread owns
//! the display driver (its I2C calls block) and draws whatever state is newest. The driver
//! itself decides when the glass needs redrawing, rotates screens and guards against burn-in;
//! a missing or failing panel is logged once by the driver and never disturbs the cluster.
//! The last composed picture is kept in a [`PanelFeed`], from which the master's edges answer
//! `bramble display --png` and the web UI: exactly what the panel shows.

use crate::certificates::CertificateChecks;
use crate::state::feed::{ClusterSummary, Feed};
use bramble_firmware::board::BoardFacts;
use bramble_firmware::render::{to_png, Framebuffer};
use bramble_firmware::{
    AgentBar, DisplayConfig, JobProgress, LinuxDisplayDriver, PanelState, Phase, UpdateOutcome,
};
use bramble_proto::messages::OperatorReply;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::watch;
use tracing::debug;

/// How often the board's temperature is re-read when the cluster does not change.
const TEMPERATURE_EVERY: Duration = Duration::from_secs(1);
/// How often the display thread offers the driver a state (the driver throttles itself).
const DRAW_EVERY: Duration = Duration::from_millis(100);
/// Scale of PNGs served to people (128×64 → 512×256).
pub const PNG_SCALE: u32 = 4;

/// The latest picture on the panel and the state it was drawn from.
#[derive(Clone, Default)]
pub struct PanelFeed(Arc<Mutex<Option<(PanelState, Framebuffer)>>>);

impl PanelFeed {
    fn publish(&self, state: &PanelState, frame: &Framebuffer) {
        if let Ok(mut slot) = self.0.lock() {
            *slot = Some((state.clone(), frame.clone()));
        }
    }

    /// The panel as a PNG, and the state behind it as JSON; `None` before the first frame.
    pub fn snapshot(&self) -> Option<(Vec<u8>, String)> {
        let slot = self.0.lock().ok()?;
        let (state, frame) = slot.as_ref()?;
        let json = serde_json::to_string(state).unwrap_or_default();
        Some((to_png(frame, PNG_SCALE), json))
    }

    /// The answer to `OperatorCall::GetPanel`.
    pub fn reply(&self) -> OperatorReply {
        match self.snapshot() {
            Some((png, state_json)) => OperatorReply::Panel { png, state_json },
            None => OperatorReply::Error {
                message: "the front panel has not drawn anything yet (is the display running?)"
                    .into(),
            },
        }
    }
}

/// Maps the master's summary of the cluster to the panel's.
pub fn panel_state(name: &str, cluster: &ClusterSummary, temperature_c: Option<f32>) -> PanelState {
    let up: Vec<_> = cluster.agents.iter().filter(|a| a.connected).collect();
    let mut state = PanelState::starting(name);
    state.phase = Phase::Running;
    state.agents_up = up.len() as u32;
    state.agents_known = cluster.agents.len() as u32;
    state.cpus_total = up.iter().map(|a| a.total.cpus()).sum();
    state.cpus_allocated = up.iter().map(|a| a.allocated.cpus()).sum();
    state.mem_total_mib = up.iter().map(|a| a.total.mem_mib).sum();
    state.mem_allocated_mib = up.iter().map(|a| a.allocated.mem_mib).sum();
    state.agents = cluster
        .agents
        .iter()
        .map(|a| AgentBar {
            name: a.hostname.clone(),
            cpus_allocated: a.allocated.cpus(),
            cpus_total: a.total.cpus(),
            up: a.connected,
            unhealthy: a.unhealthy,
        })
        .collect();
    // The job in flight, else the most recently finished one.
    let job = cluster
        .jobs
        .iter()
        .find(|j| !j.progress.finished)
        .or_else(|| cluster.jobs.last());
    state.job = job.map(|j| {
        let p = &j.progress;
        let left = p.total.saturating_sub(p.done);
        JobProgress {
            name: job_title(&p.job, &j.framework_name),
            terms_done: p.done,
            terms_total: p.total,
            estimate: p.estimate.unwrap_or(0.0),
            correct_digits: p.correct_digits.unwrap_or(0),
            terms_per_s: p.rate_per_s,
            eta_s: (p.rate_per_s > 0.0 && !p.finished).then(|| left as f64 / p.rate_per_s),
        }
    });
    state.temperature_c = temperature_c;
    state
}

/// The pi screen's title: the framework's name when it names the job (`bramble pi` calls its
/// framework `pi 2e10`), else the job's kind and the framework's name; never `pi-pi`.
fn job_title(job: &str, framework_name: &str) -> String {
    if framework_name.is_empty() {
        job.to_string()
    } else if framework_name.starts_with(job) {
        framework_name.to_string()
    } else {
        format!("{job} {framework_name}")
    }
}

/// A running panel; dropping it does not stop it, [`DisplayHandle::stop`] does.
pub struct DisplayHandle {
    stop: Arc<AtomicBool>,
    sampler: tokio::task::JoinHandle<()>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl DisplayHandle {
    pub async fn stop(mut self) {
        self.stop.store(true, Ordering::Relaxed);
        self.sampler.abort();
        if let Some(t) = self.thread.take() {
            let _ = tokio::task::spawn_blocking(move || t.join()).await;
        }
    }
}

/// Starts the panel: opens the display as `config` says (`auto` runs without one when nothing
/// answers), keeps it in step with the summaries on `cluster`, and leaves each composed
/// picture in `panel` (the master's, see `MasterHandle::panel_feed`).
pub fn start(
    cluster: &Feed,
    panel: PanelFeed,
    config: DisplayConfig,
    name: String,
) -> DisplayHandle {
    start_with_notices(cluster, panel, config, name, None)
}

/// [`start`], also showing the soonest certificate expiry `certificates` knows of (re-read
/// with the temperature, every second).
pub fn start_with_notices(
    cluster: &Feed,
    panel: PanelFeed,
    config: DisplayConfig,
    name: String,
    certificates: Option<Arc<CertificateChecks>>,
) -> DisplayHandle {
    let feed = panel;
    let mut summaries = cluster.watch_summary();
    let (tx, rx) = watch::channel(PanelState::starting(name.clone()));
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = tokio::spawn(async move {
        let mut temperature = tokio::time::interval(TEMPERATURE_EVERY);
        loop {
            tokio::select! {
                changed = summaries.changed() => if changed.is_err() {
                    return; // the master is gone
                },
                _ = temperature.tick() => {}
            }
            let temp = BoardFacts::read(Path::new("/")).temperature_c;
            let summary = summaries.borrow_and_update().clone();
            let mut state = panel_state(&name, &summary, temp);
            state.notice = certificates
                .as_ref()
                .and_then(|c| c.expiry.panel_line(time::OffsetDateTime::now_utc()));
            tx.send_replace(state);
        }
    });
    let (_keep, target) = watch::channel(feed);
    let thread = spawn_driver(rx, target, config, stop.clone());
    DisplayHandle {
        stop,
        sampler,
        thread,
    }
}

/// The picture of a replicated master standing by (`[ha]`): "standby", the term it knows,
/// and the leader (`None` while an election is on).
pub fn standby_state(
    name: &str,
    term: u64,
    leader: Option<String>,
    temperature_c: Option<f32>,
) -> PanelState {
    let mut state = PanelState::starting(name);
    state.phase = Phase::Standby { term, leader };
    state.temperature_c = temperature_c;
    state
}

/// Runs a panel drawing whatever `states` holds newest, each composed picture left in the
/// [`PanelFeed`] `target` names now (a replicated master's changes with each term it leads:
/// see `ha/panel.rs`). `sampler` is the task filling `states`, stopped with the panel.
pub fn start_from(
    states: watch::Receiver<PanelState>,
    target: watch::Receiver<PanelFeed>,
    config: DisplayConfig,
    sampler: tokio::task::JoinHandle<()>,
) -> DisplayHandle {
    let stop = Arc::new(AtomicBool::new(false));
    let thread = spawn_driver(states, target, config, stop.clone());
    DisplayHandle {
        stop,
        sampler,
        thread,
    }
}

/// The thread that owns the display driver (its I2C calls block).
fn spawn_driver(
    rx: watch::Receiver<PanelState>,
    target: watch::Receiver<PanelFeed>,
    config: DisplayConfig,
    stop: Arc<AtomicBool>,
) -> Option<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name("display".into())
        .spawn(move || {
            let mut driver = LinuxDisplayDriver::open(config);
            while !stop.load(Ordering::Relaxed) {
                let state = rx.borrow().clone();
                let outcome = driver.update(&state, Instant::now());
                // A throttled update composed nothing: its frame is still an older state's,
                // and the feed must pair each picture with the state it was drawn from.
                let composed = outcome != UpdateOutcome::Throttled;
                if let Some(frame) = driver.frame().filter(|_| composed) {
                    target.borrow().publish(&state, frame);
                }
                debug!(?outcome, "display update");
                std::thread::sleep(DRAW_EVERY);
            }
        })
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use bramble_proto::messages::{JobProgress as Progress, JobSummary};

    fn with_job(framework_name: &str) -> ClusterSummary {
        ClusterSummary {
            agents: Vec::new(),
            jobs: vec![JobSummary {
                framework_id: "fw-1".into(),
                framework_name: framework_name.into(),
                progress: Progress {
                    job: "pi".into(),
                    done: 5,
                    total: 20_000_000_000,
                    unit: "terms".into(),
                    rate_per_s: 1.0,
                    tasks_done: 0,
                    tasks_total: 64,
                    estimate: None,
                    correct_digits: None,
                    elapsed_s: 1.0,
                    finished: false,
                    waiting_for: None,
                },
            }],
        }
    }

    #[test]
    fn the_pi_screen_is_titled_by_the_job() {
        let title = |fw: &str| {
            panel_state("testbed", &with_job(fw), None)
                .job
                .map(|j| j.name)
        };
        assert_eq!(title("pi 2e10").as_deref(), Some("pi 2e10"));
        assert_eq!(title("pi").as_deref(), Some("pi"));
        assert_eq!(title("render-farm").as_deref(), Some("pi render-farm"));
    }
}

//! What the master feeds the front panel: plain data, no behaviour.
//!
//! It is serde so a snapshot can be saved to a file and rendered offline
//! (`bramble display --png`), and so tests can keep states as fixtures.

use serde::{Deserialize, Serialize};

/// Everything the panel may show, as of one moment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PanelState {
    pub phase: Phase,
    pub cluster_name: String,
    pub agents_up: u32,
    pub agents_known: u32,
    pub cpus_allocated: f64,
    pub cpus_total: f64,
    pub mem_allocated_mib: u64,
    pub mem_total_mib: u64,
    /// One entry per known agent, in the order they should be listed.
    pub agents: Vec<AgentBar>,
    /// The pi job, while one is running (or just finished).
    pub job: Option<JobProgress>,
    /// The master's SoC temperature, when the board reports one.
    pub temperature_c: Option<f32>,
    /// A short line the operator must see (a certificate about to expire), shown in place of
    /// the cluster's name on the cluster screen.
    #[serde(default)]
    pub notice: Option<String>,
}

/// The master's own lifecycle, as far as the panel cares.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Phase {
    Starting,
    Running,
    /// The master hit something the operator must see; the text is shown as is.
    Error(String),
    /// A replicated master standing by (`[ha]`): the Raft term it knows and who leads, as
    /// short as the panel can show it (the leader's id and address; `None` in an election).
    Standby {
        term: u64,
        leader: Option<String>,
    },
}

/// One agent's share of the cluster, drawn as a mini bar.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgentBar {
    pub name: String,
    pub cpus_allocated: f64,
    pub cpus_total: f64,
    pub up: bool,
    /// Up but marked unhealthy by the master (its executors keep failing): no offers for now.
    #[serde(default)]
    pub unhealthy: bool,
}

/// Progress of the pi job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobProgress {
    pub name: String,
    pub terms_done: u64,
    pub terms_total: u64,
    /// The current estimate of pi.
    pub estimate: f64,
    /// How many decimals of `estimate` are known to be right.
    pub correct_digits: u32,
    pub terms_per_s: f64,
    /// Seconds left, when the job can tell.
    pub eta_s: Option<f64>,
}

impl PanelState {
    /// The state before the master has anything to report.
    pub fn starting(cluster_name: impl Into<String>) -> Self {
        PanelState {
            phase: Phase::Starting,
            cluster_name: cluster_name.into(),
            agents_up: 0,
            agents_known: 0,
            cpus_allocated: 0.0,
            cpus_total: 0.0,
            mem_allocated_mib: 0,
            mem_total_mib: 0,
            agents: Vec::new(),
            job: None,
            temperature_c: None,
            notice: None,
        }
    }
}

impl JobProgress {
    /// Fraction done in 0..=1 (0 when the total is unknown).
    pub fn fraction(&self) -> f64 {
        if self.terms_total == 0 {
            0.0
        } else {
            (self.terms_done as f64 / self.terms_total as f64).clamp(0.0, 1.0)
        }
    }

    pub fn is_done(&self) -> bool {
        self.terms_total > 0 && self.terms_done >= self.terms_total
    }
}

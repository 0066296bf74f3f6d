//! Fixtures and the golden-PNG check shared by the firmware's integration tests.
#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use bramble_firmware::testing::{RecordingI2c, Ssd1306Decoder};
use bramble_firmware::{
    from_png, to_png, AgentBar, DisplayConfig, Framebuffer, JobProgress, PanelState, Phase,
};

/// Scale of the committed PNGs: big enough to read in the README.
pub const GOLDEN_SCALE: u32 = 4;

pub fn agent(name: &str, alloc: f64, total: f64, up: bool) -> AgentBar {
    AgentBar {
        name: name.into(),
        cpus_allocated: alloc,
        cpus_total: total,
        up,
        unhealthy: false,
    }
}

/// Three agents, the second up but unhealthy (its executors keep failing to register).
pub fn cluster_unhealthy_agent() -> PanelState {
    let mut s = cluster_3_agents();
    s.agents[1].unhealthy = true;
    s
}

/// Seven agents, the third unhealthy, the fifth down.
pub fn cluster_7_agents_one_unhealthy() -> PanelState {
    let mut s = cluster_7_agents();
    s.agents[2].unhealthy = true;
    s
}

/// Three Pi 4s, busy, no job.
pub fn cluster_3_agents() -> PanelState {
    PanelState {
        phase: Phase::Running,
        cluster_name: "bramble".into(),
        agents_up: 3,
        agents_known: 3,
        cpus_allocated: 9.5,
        cpus_total: 12.0,
        mem_allocated_mib: 5632,
        mem_total_mib: 11_520,
        agents: vec![
            agent("pi-01", 4.0, 4.0, true),
            agent("pi-02", 3.5, 4.0, true),
            agent("pi-03", 2.0, 4.0, true),
        ],
        job: None,
        temperature_c: Some(48.3),
        notice: None,
    }
}

/// Seven agents, one down: too many for labelled rows, so columns.
pub fn cluster_7_agents() -> PanelState {
    let mut s = cluster_3_agents();
    s.agents = (1..=7)
        .map(|i| agent(&format!("pi-{i:02}"), f64::from(i % 5), 4.0, i != 5))
        .collect();
    s.agents_up = 6;
    s.agents_known = 7;
    s.cpus_allocated = 13.0;
    s.cpus_total = 28.0;
    s.mem_allocated_mib = 9 * 1024;
    s.mem_total_mib = 27 * 1024;
    s
}

pub fn cluster_0_agents() -> PanelState {
    let mut s = PanelState::starting("bramble");
    s.phase = Phase::Running;
    s
}

pub fn pi_mid_job() -> PanelState {
    let mut s = cluster_3_agents();
    s.job = Some(JobProgress {
        name: "pi-leibniz".into(),
        terms_done: 420_000_000,
        terms_total: 1_000_000_000,
        estimate: 3.141_592_658_2,
        correct_digits: 8,
        terms_per_s: 12_345_678.0,
        eta_s: Some(47.0),
    });
    s
}

pub fn pi_done() -> PanelState {
    let mut s = cluster_3_agents();
    s.job = Some(JobProgress {
        name: "pi-leibniz".into(),
        terms_done: 1_000_000_000,
        terms_total: 1_000_000_000,
        estimate: std::f64::consts::PI + 3e-12,
        correct_digits: 10,
        terms_per_s: 12_100_000.0,
        eta_s: Some(0.0),
    });
    s
}

pub fn master_starting() -> PanelState {
    PanelState::starting("bramble")
}

pub fn error_state() -> PanelState {
    let mut s = cluster_3_agents();
    s.phase = Phase::Error("store: opening /var/lib/bramble/master.redb: permission denied".into());
    s
}

pub fn config_for(size: bramble_firmware::PanelSize) -> DisplayConfig {
    DisplayConfig {
        size,
        ..DisplayConfig::default()
    }
}

/// What the panel at 0x3C shows after everything `rec` recorded.
pub fn decode(rec: &RecordingI2c) -> Framebuffer {
    Ssd1306Decoder::replay(0x3C, &rec.transactions())
        .expect("recorded stream is valid SSD1306")
        .picture()
}

fn golden_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden")
}

/// Compares `actual` with `tests/golden/{name}.png`, pixel for pixel.
/// `BRAMBLE_UPDATE_GOLDEN=1` rewrites the golden instead. On a mismatch the actual picture is
/// written to `{name}.actual.png` beside it (gitignored) and the test fails with the count.
pub fn check_golden(name: &str, actual: &Framebuffer) {
    check_golden_in(&golden_dir(), name, actual)
}

pub fn check_golden_in(dir: &std::path::Path, name: &str, actual: &Framebuffer) {
    let golden_path = dir.join(format!("{name}.png"));
    let actual_path = dir.join(format!("{name}.actual.png"));
    if std::env::var_os("BRAMBLE_UPDATE_GOLDEN").is_some_and(|v| v == "1") {
        std::fs::create_dir_all(dir).unwrap();
        std::fs::write(&golden_path, to_png(actual, GOLDEN_SCALE)).unwrap();
        let _ = std::fs::remove_file(&actual_path);
        return;
    }
    let bytes = std::fs::read(&golden_path).unwrap_or_else(|e| {
        std::fs::write(&actual_path, to_png(actual, GOLDEN_SCALE)).unwrap();
        panic!(
            "reading golden {}: {e}; the actual picture is in {}; \
             run with BRAMBLE_UPDATE_GOLDEN=1 to accept it",
            golden_path.display(),
            actual_path.display()
        )
    });
    let golden = from_png(&bytes, GOLDEN_SCALE).expect("golden PNG decodes");
    let diff = actual.diff_count(&golden);
    if diff != 0 {
        std::fs::write(&actual_path, to_png(actual, GOLDEN_SCALE)).unwrap();
        panic!(
            "{name}: {diff} pixels differ from {}; actual written to {} \
             (BRAMBLE_UPDATE_GOLDEN=1 accepts it)",
            golden_path.display(),
            actual_path.display()
        );
    }
    let _ = std::fs::remove_file(&actual_path);
}

/// Collects what `tracing` logs while `f` runs.
pub fn capture_logs<T>(f: impl FnOnce() -> T) -> (T, String) {
    #[derive(Clone)]
    struct Buf(Arc<Mutex<Vec<u8>>>);
    impl std::io::Write for Buf {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let buf = Buf(Arc::new(Mutex::new(Vec::new())));
    let writer = buf.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .with_max_level(tracing::Level::DEBUG)
        .finish();
    let out = tracing::subscriber::with_default(subscriber, f);
    let text = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
    (out, text)
}

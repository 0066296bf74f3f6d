//! Status update recording throughput: the update log (`status_updates/`) against a copy of
//! the one-file-per-update design it replaced, in one run, on the same directory's disk.
//!
//! Each round records a batch of updates (one per task, as a burst of FINISHED updates would)
//! and then acknowledges them all, as the agent does when the acks come back; for the log,
//! acknowledgements are handed to the OS once per batch, as the runtime does after each
//! burst. Rounds repeat for `--secs` per configuration; old and new alternate, batch sizes 1,
//! 16 and 256, `--repeats` times, and the median is reported. Prints one JSON object.
//!
//! `cargo run --release -p bramble-agent --example update_log_bench -- --dir <on the disk to
//! measure>` (`bench/updates.sh`). `/tmp` may be a tmpfs where fsync costs nothing: pass a
//! directory on the real disk.

use anyhow::{Context, Result};
use bramble_agent::status_updates::StatusUpdateManager;
use bramble_proto::durable;
use bramble_proto::task::UpdateSource;
use bramble_proto::{TaskState, TaskStatus};
use clap::Parser;
use serde_json::json;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use uuid::Uuid;

#[derive(Parser)]
struct Args {
    /// Where to write (a fresh subdirectory is made and removed). Default: target/.
    #[arg(long, default_value = "target")]
    dir: PathBuf,
    /// Seconds per measurement.
    #[arg(long, default_value_t = 2.0)]
    secs: f64,
    /// Measurements per configuration (interleaved; the median is reported).
    #[arg(long, default_value_t = 3)]
    repeats: usize,
}

const BATCHES: [usize; 3] = [1, 16, 256];

fn main() -> Result<()> {
    let args = Args::parse();
    let root = args
        .dir
        .join(format!("update-log-bench-{}", std::process::id()));
    fs::create_dir_all(&root).with_context(|| format!("creating {}", root.display()))?;
    let result = run(&root, &args);
    let _ = fs::remove_dir_all(&root);
    let report = result?;
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(())
}

fn run(root: &Path, args: &Args) -> Result<serde_json::Value> {
    let budget = Duration::from_secs_f64(args.secs);
    let mut rows = Vec::new();
    for batch in BATCHES {
        let (mut old, mut new) = (Vec::new(), Vec::new());
        for r in 0..args.repeats {
            old.push(measure(
                &root.join(format!("old-{batch}-{r}")),
                batch,
                budget,
                Old::new,
            )?);
            new.push(measure(
                &root.join(format!("new-{batch}-{r}")),
                batch,
                budget,
                New::open,
            )?);
        }
        let (old, new) = (median(old), median(new));
        rows.push(json!({
            "batch": batch,
            "old_file_per_update": {
                "updates_per_s": old.rate.round(),
                "fdatasyncs_per_batch": batch,
                "dir_fsyncs_per_batch": 1,
            },
            "new_update_log": {
                "updates_per_s": new.rate.round(),
                "fdatasyncs_per_batch": 1,
                "compactions": new.rewrites,
            },
            "speedup": (new.rate / old.rate * 100.0).round() / 100.0,
        }));
    }
    Ok(json!({
        "bench": "status_update_recording",
        "what": "updates/s recorded durably then acknowledged, by batch size (median of repeats)",
        "dir": root.display().to_string(),
        "secs_per_measurement": args.secs,
        "repeats": args.repeats,
        "results": rows,
    }))
}

/// One design under test.
trait Recorder: Sized {
    /// Records `batch` durably, then acknowledges all of it.
    fn round(&mut self, batch: Vec<TaskStatus>) -> Result<()>;
    /// Segments started after the first (the new design's compactions); 0 for the old one.
    fn rewrites(&self) -> usize;
}

#[derive(Debug, Clone, Copy)]
struct Measured {
    rate: f64,
    rewrites: usize,
}

fn measure<R: Recorder>(
    dir: &Path,
    batch: usize,
    budget: Duration,
    open: fn(&Path) -> Result<R>,
) -> Result<Measured> {
    fs::create_dir_all(dir)?;
    let mut recorder = open(dir)?;
    let mut task = 0usize;
    let mut updates = 0usize;
    let started = Instant::now();
    while started.elapsed() < budget {
        let statuses = (0..batch)
            .map(|_| {
                task += 1;
                status(task)
            })
            .collect();
        recorder.round(statuses)?;
        updates += batch;
    }
    let rate = updates as f64 / started.elapsed().as_secs_f64();
    let rewrites = recorder.rewrites();
    drop(recorder);
    fs::remove_dir_all(dir)?;
    Ok(Measured { rate, rewrites })
}

fn median(mut runs: Vec<Measured>) -> Measured {
    runs.sort_by(|a, b| a.rate.total_cmp(&b.rate));
    runs[runs.len() / 2]
}

/// A tiny task's FINISHED update carrying a pi chunk's partial sum, as an executor sends it.
fn status(task: usize) -> TaskStatus {
    let mut s = TaskStatus::new(
        "4f0c9a52-7d1e-4c1b-9a77-0d3c2e9b1a10-0001".into(),
        format!("pi-{task:06}").into(),
        TaskState::Finished,
        UpdateSource::Executor,
    );
    s.executor_id = Some("pi-executor".into());
    s.data = std::f64::consts::FRAC_PI_4.to_le_bytes().to_vec();
    s
}

/// The update log.
struct New(StatusUpdateManager);

impl New {
    fn open(dir: &Path) -> Result<Self> {
        Ok(Self(StatusUpdateManager::open(dir)?))
    }
}

impl Recorder for New {
    fn round(&mut self, batch: Vec<TaskStatus>) -> Result<()> {
        let ids: Vec<_> = batch
            .iter()
            .map(|s| (s.framework_id.clone(), s.task_id.clone()))
            .collect();
        let uuids = self.0.record_batch(batch)?;
        for ((fw, task), uuid) in ids.iter().zip(uuids) {
            self.0.acknowledge(fw, task, uuid)?;
        }
        self.0.flush();
        Ok(())
    }

    /// The segment's generation (`updates-<gen>.log`) counts the segments started since the
    /// open started the first.
    fn rewrites(&self) -> usize {
        fs::read_dir(self.0.dir())
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| {
                let name = e.file_name().into_string().ok()?;
                name.strip_prefix("updates-")?
                    .strip_suffix(".log")?
                    .parse::<usize>()
                    .ok()
            })
            .max()
            .map_or(0, |gen| gen - 1)
    }
}

/// The design before the log, as `status_updates/files.rs` wrote it: one pretty-JSON file per
/// update through `durable::write_batch` (each file fdatasync'd, one directory fsync per
/// batch), deleted unflushed on acknowledgement.
struct Old {
    dir: PathBuf,
    seq: u64,
}

impl Old {
    fn new(dir: &Path) -> Result<Self> {
        Ok(Self {
            dir: dir.to_path_buf(),
            seq: 0,
        })
    }
}

impl Recorder for Old {
    fn round(&mut self, batch: Vec<TaskStatus>) -> Result<()> {
        let files = batch
            .into_iter()
            .map(|mut s| {
                self.seq += 1;
                let uuid = *s.uuid.get_or_insert_with(Uuid::new_v4);
                let mut bytes = serde_json::to_vec_pretty(&s)?;
                bytes.push(b'\n');
                Ok((format!("{:020}-{}.upd", self.seq, uuid.hyphenated()), bytes))
            })
            .collect::<Result<Vec<_>>>()?;
        durable::write_batch(&self.dir, &files)?;
        for (name, _) in &files {
            fs::remove_file(self.dir.join(name))?;
        }
        Ok(())
    }

    fn rewrites(&self) -> usize {
        0
    }
}

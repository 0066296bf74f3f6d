//! The pi job's durable journal: what a restarted `bramble pi` needs to finish the same job
//! without counting any chunk twice — the job (terms, chunking, kernel), the framework id to
//! fail over to, every launched attempt and every chunk result already counted (exact bits).
//!
//! Format: one record per line, `<text> #<fnv1a-64 of text, hex>`, appended and fsync'd
//! before the scheduler acts on it (results before their update is acknowledged, launches
//! before they are sent). A crash can only tear the last line; such a tail is dropped (and
//! cut off before appending again). A bad line anywhere else means the file is not ours or
//! was damaged: refused, never guessed at. A new journal is written to a temporary file,
//! fsync'd and renamed into place, so it either exists with its header or not at all.
//!
//! ```text
//! bramble-pi-journal v1 kernel=1 terms=3000000000 tasks=24 chunks=24 #…
//! framework fw-1a2b #…
//! launch 3 1 #…                 chunk 3, attempt 1
//! result 3 3fb9… 3c5e… #…       chunk 3, hi and lo bit patterns
//! finished 400921fb… #…         the estimate's bits: the job is over
//! ```

use super::kernel::{chunks, Sum};
use bramble_proto::durable;
use bramble_sdk::FrameworkId;
use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};
use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

/// Bumped whenever the kernel could give different bits for the same range: results of an
/// older kernel must not be mixed with new ones.
pub const KERNEL_VERSION: u32 = 1;
const MAGIC: &str = "bramble-pi-journal v1";

/// The job a journal belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JobSpec {
    pub terms: u64,
    pub tasks: u64,
    pub chunks: u64,
    pub kernel: u32,
}

impl JobSpec {
    pub fn new(terms: u64, tasks: u64) -> Self {
        Self {
            terms,
            tasks,
            chunks: chunks(terms, tasks).len() as u64,
            kernel: KERNEL_VERSION,
        }
    }
}

impl std::fmt::Display for JobSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} terms in {} chunks (kernel {})",
            self.terms, self.chunks, self.kernel
        )
    }
}

#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    #[error("{path}: {what}: {source}")]
    Io {
        path: PathBuf,
        what: &'static str,
        source: std::io::Error,
    },
    #[error("{path} line {line}: {why}; it is not a pi journal or it was damaged (move it away, or pass --fresh to start over)")]
    Corrupt {
        path: PathBuf,
        line: usize,
        why: String,
    },
    #[error("{path} holds an unfinished job of {found}, not {wanted}: rerun with the same --terms/--tasks to resume it, or pass --fresh to discard it")]
    DifferentJob {
        path: PathBuf,
        found: JobSpec,
        wanted: JobSpec,
    },
    #[error("{path}: the journal is unusable after an earlier write failed")]
    Poisoned { path: PathBuf },
    #[error(
        "{path} is in use by another bramble pi: wait for it to end, or pass another --journal"
    )]
    InUse { path: PathBuf },
}

/// What a journal held when it was opened.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Recovered {
    pub framework_id: Option<FrameworkId>,
    /// Results in the order they were counted.
    pub results: Vec<(usize, Sum)>,
    /// The highest attempt launched per chunk.
    pub launches: BTreeMap<usize, u32>,
    /// The estimate's bits, when the job finished.
    pub finished: Option<u64>,
}

/// How [`Journal::open`] found the file.
#[derive(Debug, Clone, PartialEq)]
pub enum Opening {
    /// No journal there: a new one was created.
    New,
    /// An unfinished journal of this job: resume it.
    Resume(Recovered),
    /// The journal's job had finished; a new one replaced it.
    ReplacedFinished { spec: JobSpec },
    /// `--fresh`: an unfinished journal (of this or another job) was discarded.
    Discarded { spec: Option<JobSpec> },
}

/// An open journal, appending.
#[derive(Debug)]
pub struct Journal {
    path: PathBuf,
    spec: JobSpec,
    /// `None` after a failed write: the file's tail is unknown, so nothing more is written.
    file: Option<File>,
    /// Held while the journal is open: two processes resuming one job would take the
    /// framework from each other in turn. The kernel drops it when the process dies.
    _lock: Flock<File>,
}

/// A journal's full contents.
#[derive(Debug, Clone, PartialEq)]
pub struct Contents {
    pub spec: JobSpec,
    pub recovered: Recovered,
    /// Bytes of whole, valid lines; anything after is a torn tail.
    pub valid_len: u64,
}

impl Journal {
    /// Opens the journal at `path` for `spec`: resumes an unfinished journal of the same job,
    /// replaces a finished one, and refuses one of another job (or a damaged one) unless
    /// `fresh`, which starts over in every case.
    pub fn open(
        path: &Path,
        spec: JobSpec,
        fresh: bool,
    ) -> Result<(Journal, Opening), JournalError> {
        let lock = lock(path)?;
        let existing = match std::fs::metadata(path) {
            Ok(_) => Some(read(path)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(source) => {
                return Err(JournalError::Io {
                    path: path.to_path_buf(),
                    what: "reading the journal",
                    source,
                })
            }
        };
        let opening = match existing {
            None => Opening::New,
            Some(Err(e)) if !fresh || matches!(e, JournalError::Io { .. }) => return Err(e),
            Some(Err(_)) => Opening::Discarded { spec: None },
            Some(Ok(c)) if c.recovered.finished.is_some() => {
                Opening::ReplacedFinished { spec: c.spec }
            }
            Some(Ok(c)) if fresh => Opening::Discarded { spec: Some(c.spec) },
            Some(Ok(c)) if c.spec != spec => {
                return Err(JournalError::DifferentJob {
                    path: path.to_path_buf(),
                    found: c.spec,
                    wanted: spec,
                })
            }
            Some(Ok(c)) => {
                let file = reopen(path, c.valid_len)?;
                let journal = Journal {
                    path: path.to_path_buf(),
                    spec,
                    file: Some(file),
                    _lock: lock,
                };
                return Ok((journal, Opening::Resume(c.recovered)));
            }
        };
        let file = create(path, spec)?;
        Ok((
            Journal {
                path: path.to_path_buf(),
                spec,
                file: Some(file),
                _lock: lock,
            },
            opening,
        ))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn spec(&self) -> JobSpec {
        self.spec
    }

    pub fn record_framework(&mut self, id: &FrameworkId) -> Result<(), JournalError> {
        self.append(&[format!("framework {id}")])
    }

    /// Launches are recorded before they are sent, so a restart knows every task id that
    /// might be running.
    pub fn record_launches(&mut self, launches: &[(usize, u32)]) -> Result<(), JournalError> {
        let lines: Vec<String> = launches
            .iter()
            .map(|(chunk, attempt)| format!("launch {chunk} {attempt}"))
            .collect();
        self.append(&lines)
    }

    /// A chunk's result, durable before its update is acknowledged.
    pub fn record_result(&mut self, chunk: usize, sum: Sum) -> Result<(), JournalError> {
        self.append(&[format!(
            "result {chunk} {:016x} {:016x}",
            sum.hi.to_bits(),
            sum.lo.to_bits()
        )])
    }

    pub fn record_finished(&mut self, estimate: f64) -> Result<(), JournalError> {
        self.append(&[format!("finished {:016x}", estimate.to_bits())])
    }

    fn append(&mut self, records: &[String]) -> Result<(), JournalError> {
        if records.is_empty() {
            return Ok(());
        }
        let Some(file) = self.file.as_mut() else {
            return Err(JournalError::Poisoned {
                path: self.path.clone(),
            });
        };
        let mut buf = String::new();
        for r in records {
            buf.push_str(&line(r));
        }
        let written = file
            .write_all(buf.as_bytes())
            .and_then(|()| file.sync_data());
        written.map_err(|source| {
            // A half-written tail is dropped when the journal is next read, but appending
            // after it now would bury good records behind a bad line.
            self.file = None;
            JournalError::Io {
                path: self.path.clone(),
                what: "appending to the journal",
                source,
            }
        })
    }
}

/// Reads a journal without changing it.
pub fn read(path: &Path) -> Result<Contents, JournalError> {
    let bytes = std::fs::read(path).map_err(|source| JournalError::Io {
        path: path.to_path_buf(),
        what: "reading the journal",
        source,
    })?;
    parse(path, &bytes)
}

fn parse(path: &Path, bytes: &[u8]) -> Result<Contents, JournalError> {
    let corrupt = |line: usize, why: String| JournalError::Corrupt {
        path: path.to_path_buf(),
        line,
        why,
    };
    let mut spec = None;
    let mut recovered = Recovered::default();
    let mut valid_len = 0u64;
    let mut rest = bytes;
    let mut number = 0;
    while !rest.is_empty() {
        number += 1;
        let Some(end) = rest.iter().position(|&b| b == b'\n') else {
            // A torn last line: the crash came mid-append, before its fsync returned.
            break;
        };
        let raw = &rest[..end];
        rest = &rest[end + 1..];
        let is_last = rest.is_empty();
        let text = match std::str::from_utf8(raw).ok().and_then(checked) {
            Some(t) => t,
            // A torn tail can also look like a whole line of zeros or garbage.
            None if is_last => break,
            None => return Err(corrupt(number, "bad line or checksum".into())),
        };
        let applied = match spec {
            None => parse_header(text).map(|s| spec = Some(s)),
            Some(s) => apply(text, s, &mut recovered),
        };
        if let Err(why) = applied {
            return Err(corrupt(number, why));
        }
        valid_len += end as u64 + 1;
    }
    let spec = spec.ok_or_else(|| corrupt(1, "no header".into()))?;
    Ok(Contents {
        spec,
        recovered,
        valid_len,
    })
}

fn parse_header(text: &str) -> Result<JobSpec, String> {
    let rest = text
        .strip_prefix(MAGIC)
        .ok_or_else(|| format!("expected the header {MAGIC:?}"))?;
    let mut fields = BTreeMap::new();
    for kv in rest.split_whitespace() {
        let (k, v) = kv.split_once('=').ok_or("header field without '='")?;
        let v: u64 = v.parse().map_err(|_| format!("header field {k}={v}"))?;
        fields.insert(k, v);
    }
    let get = |k: &str| fields.get(k).copied().ok_or(format!("header lacks {k}"));
    let spec = JobSpec {
        terms: get("terms")?,
        tasks: get("tasks")?,
        chunks: get("chunks")?,
        kernel: u32::try_from(get("kernel")?).map_err(|_| "kernel version out of range")?,
    };
    if spec.chunks != chunks(spec.terms, spec.tasks).len() as u64 {
        return Err(format!(
            "header's chunk count {} does not match its terms and tasks",
            spec.chunks
        ));
    }
    Ok(spec)
}

fn apply(text: &str, spec: JobSpec, r: &mut Recovered) -> Result<(), String> {
    let mut words = text.split(' ');
    let kind = words.next().unwrap_or("");
    let args: Vec<&str> = words.collect();
    let chunk = |s: &str| -> Result<usize, String> {
        let c: usize = s.parse().map_err(|_| format!("chunk index {s:?}"))?;
        if (c as u64) < spec.chunks {
            Ok(c)
        } else {
            Err(format!("chunk {c} is beyond the job's {}", spec.chunks))
        }
    };
    let bits = |s: &str| u64::from_str_radix(s, 16).map_err(|_| format!("bit pattern {s:?}"));
    if r.finished.is_some() {
        return Err(format!("{kind} after the job finished"));
    }
    match (kind, args.as_slice()) {
        ("framework", [id]) if !id.is_empty() => r.framework_id = Some(FrameworkId(id.to_string())),
        ("launch", [c, a]) => {
            let c = chunk(c)?;
            let a: u32 = a.parse().map_err(|_| format!("attempt {a:?}"))?;
            let known = r.launches.entry(c).or_insert(0);
            *known = (*known).max(a);
        }
        ("result", [c, hi, lo]) => {
            let c = chunk(c)?;
            if r.results.iter().any(|(i, _)| *i == c) {
                return Err(format!("chunk {c} has two results"));
            }
            let sum = Sum {
                hi: f64::from_bits(bits(hi)?),
                lo: f64::from_bits(bits(lo)?),
            };
            r.results.push((c, sum));
        }
        ("finished", [b]) => r.finished = Some(bits(b)?),
        _ => return Err(format!("unknown record {text:?}")),
    }
    Ok(())
}

fn fnv1a(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

fn line(text: &str) -> String {
    format!("{text} #{:016x}\n", fnv1a(text))
}

/// The record's text when its checksum holds.
fn checked(raw: &str) -> Option<&str> {
    let (text, sum) = raw.rsplit_once(" #")?;
    (u64::from_str_radix(sum, 16).ok()? == fnv1a(text)).then_some(text)
}

fn io(path: &Path, what: &'static str) -> impl FnOnce(std::io::Error) -> JournalError {
    let path = path.to_path_buf();
    move |source| JournalError::Io { path, what, source }
}

fn parent_dir(path: &Path) -> &Path {
    path.parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
}

/// Takes `<journal>.lock` (created next to it) for as long as the journal is open.
fn lock(path: &Path) -> Result<Flock<File>, JournalError> {
    let dir = parent_dir(path);
    std::fs::create_dir_all(dir).map_err(io(dir, "creating the journal's directory"))?;
    let mut name = path.as_os_str().to_owned();
    name.push(".lock");
    let lock_path = PathBuf::from(name);
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(io(&lock_path, "opening the journal's lock file"))?;
    match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
        Ok(lock) => Ok(lock),
        Err((_, Errno::EWOULDBLOCK)) => Err(JournalError::InUse {
            path: path.to_path_buf(),
        }),
        Err((_, e)) => Err(JournalError::Io {
            path: lock_path,
            what: "locking the journal",
            source: e.into(),
        }),
    }
}

/// A new journal holding only its header, in place durably (a crash leaves no journal or
/// this one), opened for appending.
fn create(path: &Path, spec: JobSpec) -> Result<File, JournalError> {
    let header = format!(
        "{MAGIC} kernel={} terms={} tasks={} chunks={}",
        spec.kernel, spec.terms, spec.tasks, spec.chunks
    );
    durable::write(path, line(&header).as_bytes()).map_err(|e| JournalError::Io {
        path: e.path,
        what: e.action,
        source: e.source,
    })?;
    OpenOptions::new()
        .append(true)
        .open(path)
        .map_err(io(path, "opening the new journal"))
}

/// Opens an existing journal for appending, cutting off a torn tail first.
fn reopen(path: &Path, valid_len: u64) -> Result<File, JournalError> {
    let file = OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(io(path, "opening the journal"))?;
    let len = file
        .metadata()
        .map_err(io(path, "reading the journal"))?
        .len();
    if len != valid_len {
        tracing::warn!(journal = %path.display(), dropped_bytes = len - valid_len,
            "dropping the journal's torn last line (the previous run died mid-write)");
        file.set_len(valid_len)
            .and_then(|()| file.sync_all())
            .map_err(io(path, "cutting the journal's torn tail"))?;
    }
    drop(file);
    OpenOptions::new()
        .append(true)
        .open(path)
        .map_err(io(path, "opening the journal"))
}

/// Where the journal lives unless `--journal` says otherwise:
/// `$XDG_STATE_HOME/bramble/pi.journal`, else `~/.local/state/bramble/pi.journal`.
pub fn default_path() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_STATE_HOME")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .or_else(|| {
            std::env::var_os("HOME")
                .map(PathBuf::from)
                .filter(|p| p.is_absolute())
                .map(|h| h.join(".local").join("state"))
        })?;
    Some(base.join("bramble").join("pi.journal"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pi::kernel::leibniz_range;

    fn spec() -> JobSpec {
        JobSpec::new(1000, 4)
    }

    #[test]
    fn records_survive_a_reopen_bit_for_bit() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("state").join("pi.journal");
        let (mut j, opening) = Journal::open(&path, spec(), false).expect("new");
        assert_eq!(opening, Opening::New);
        let s = leibniz_range(0, 250);
        let odd = Sum {
            hi: -0.0,
            lo: f64::MIN_POSITIVE / 3.0,
        };
        j.record_framework(&FrameworkId("fw-1".into())).expect("fw");
        j.record_launches(&[(0, 1), (1, 1), (1, 2)])
            .expect("launch");
        j.record_result(0, s).expect("result");
        j.record_result(1, odd).expect("result");
        drop(j);
        let (_, opening) = Journal::open(&path, spec(), false).expect("reopen");
        let Opening::Resume(r) = opening else {
            panic!("expected a resume, got {opening:?}");
        };
        assert_eq!(r.framework_id, Some(FrameworkId("fw-1".into())));
        assert_eq!(r.launches, BTreeMap::from([(0, 1), (1, 2)]));
        assert_eq!(r.results.len(), 2);
        assert_eq!(r.results[0].1.to_bytes(), s.to_bytes());
        assert_eq!(
            r.results[1].1.to_bytes(),
            odd.to_bytes(),
            "signed zero and subnormal exact"
        );
    }

    #[test]
    fn a_torn_tail_is_dropped_and_cut_off_but_damage_inside_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("pi.journal");
        let (mut j, _) = Journal::open(&path, spec(), false).expect("new");
        j.record_result(2, leibniz_range(500, 750)).expect("result");
        drop(j);
        let good = std::fs::read(&path).expect("read");
        // A crash mid-append: half a record, then the same with a newline but a bad sum.
        for tail in [
            &b"result 3 3ff0"[..],
            b"result 3 00 00 #0123\n",
            b"\0\0\0\0\0",
        ] {
            let mut torn = good.clone();
            torn.extend_from_slice(tail);
            std::fs::write(&path, &torn).expect("write");
            let c = read(&path).expect("torn tail tolerated");
            assert_eq!(c.valid_len, good.len() as u64);
            assert_eq!(c.recovered.results.len(), 1);
            let (mut j, _) = Journal::open(&path, spec(), false).expect("resume");
            j.record_result(3, leibniz_range(750, 1000))
                .expect("append after the cut");
            drop(j);
            let c = read(&path).expect("clean again");
            assert_eq!(c.recovered.results.len(), 2, "tail {tail:?}");
            std::fs::write(&path, &good).expect("restore");
        }
        // The same bad line followed by good ones is damage, not a torn tail.
        let mut damaged = good.clone();
        damaged.extend_from_slice(b"result 3 00 00 #0123\n");
        damaged.extend_from_slice(line("launch 1 1").as_bytes());
        std::fs::write(&path, &damaged).expect("write");
        let e = Journal::open(&path, spec(), false).expect_err("damage refused");
        assert!(matches!(e, JournalError::Corrupt { line: 3, .. }), "{e}");
        assert!(e.to_string().contains("--fresh"), "{e}");
        let (_, opening) = Journal::open(&path, spec(), true).expect("--fresh starts over");
        assert_eq!(opening, Opening::Discarded { spec: None });
    }

    #[test]
    fn another_jobs_journal_is_refused_unless_fresh_and_a_finished_one_is_replaced() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("pi.journal");
        let (mut j, _) = Journal::open(&path, spec(), false).expect("new");
        j.record_result(0, leibniz_range(0, 250)).expect("result");
        drop(j);
        let other = JobSpec::new(1000, 5);
        let e = Journal::open(&path, other, false).expect_err("different job");
        assert!(matches!(e, JournalError::DifferentJob { .. }), "{e}");
        assert!(e.to_string().contains("--fresh"), "{e}");
        assert_eq!(
            read(&path).expect("untouched").recovered.results.len(),
            1,
            "refusal loses nothing"
        );
        let (mut j, opening) = Journal::open(&path, other, true).expect("fresh");
        assert_eq!(opening, Opening::Discarded { spec: Some(spec()) });
        j.record_finished(3.0).expect("finish");
        drop(j);
        let (_, opening) = Journal::open(&path, spec(), false).expect("after a finished job");
        assert_eq!(opening, Opening::ReplacedFinished { spec: other });
        let c = read(&path).expect("new journal");
        assert_eq!(c.spec, spec());
        assert_eq!(c.recovered, Recovered::default());
    }

    #[test]
    fn one_journal_serves_one_process_at_a_time() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("pi.journal");
        let (first, _) = Journal::open(&path, spec(), false).expect("first");
        let e = Journal::open(&path, spec(), false).expect_err("second while the first is open");
        assert!(matches!(e, JournalError::InUse { .. }), "{e}");
        let e = Journal::open(&path, spec(), true).expect_err("--fresh does not break the lock");
        assert!(matches!(e, JournalError::InUse { .. }), "{e}");
        drop(first);
        let (_, opening) = Journal::open(&path, spec(), false).expect("free again");
        assert_eq!(opening, Opening::Resume(Recovered::default()));
    }

    #[test]
    fn records_that_make_no_sense_are_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("pi.journal");
        let header = format!("{MAGIC} kernel=1 terms=1000 tasks=4 chunks=4");
        for bad in [
            "result 9 00 00",
            "result 1 00 00\nresult 1 00 00",
            "launch x 1",
            "finished 00\nlaunch 0 1",
            "hello",
        ] {
            let mut text = line(&header);
            for l in bad.lines() {
                text.push_str(&line(l));
            }
            text.push_str(&line("framework fw"));
            std::fs::write(&path, text).expect("write");
            assert!(read(&path).is_err(), "{bad:?} accepted");
        }
        std::fs::write(
            &path,
            line(&format!("{MAGIC} kernel=1 terms=1000 tasks=4 chunks=5")),
        )
        .expect("write");
        assert!(read(&path).is_err(), "inconsistent header accepted");
    }
}

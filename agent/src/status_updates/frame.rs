//! The bytes of an update log segment: its header, the checksummed frames that follow it, and
//! the scan that turns a segment's bytes back into records, telling a torn tail (a write a
//! crash cut short: expected, quiet) from damage in the middle (loud, salvaged). Pure: no I/O,
//! so every byte offset of every failure can be tested.
//!
//! **Segment** = header, then frames, appended in order:
//! ```text
//! header (32 bytes): "BRMBLUPD" | format u32 | protocol u32 | next_seq u64 | 0u32 | crc32 u32
//! frame:             len u32 | crc32(len ‖ payload) u32 | payload (postcard `Record`)
//! ```
//! All integers little-endian. A record is an update, an acknowledgement, the forgetting of a
//! framework, or a change to a run's task list ([`Record`]). The payload is postcard rather than JSON: a `TaskStatus` carries
//! opaque `data` bytes (a JSON array of numbers, ~3.5 bytes per byte) and postcard is several
//! times faster to encode, which matters at tens of thousands of updates a second on a Pi.
//! Postcard is not self-describing, so the header records the wire `PROTOCOL_VERSION` the
//! records were encoded with (a `TaskStatus` encodes as on the wire, and changing that
//! encoding means bumping the protocol version); a segment from another version is refused
//! whole rather than misread. `next_seq` keeps sequence numbers increasing across rewrites.
//!
//! **Scan**: frames are read while they verify (length in range, checksum, payload decodes
//! with no bytes left over). At the first frame that does not, the scan looks for any frame
//! that verifies further on, byte by byte: if none does, the bad bytes are a torn tail (the
//! end of a write that never completed; an unsynced acknowledgement may also leave zeros);
//! if one does, the segment was damaged in the middle, and the scan resumes there, keeping
//! every record that verifies. A checksum is what makes a stray match essentially impossible
//! (2⁻³² per offset, and the payload must still decode).

use super::before_artifacts::LoggedTaskV2;
use crate::checkpoint::{LoggedTask, TaskChange};
use bramble_proto::{FrameworkId, TaskId, TaskStatus, PROTOCOL_VERSION};
use serde::{Deserialize, Serialize};
use std::borrow::Cow;
use uuid::Uuid;

const MAGIC: &[u8; 8] = b"BRMBLUPD";
/// Version of the segment layout described in the header.
const FORMAT: u32 = 1;
pub(super) const HEADER_LEN: usize = 32;
const FRAME_HEAD: usize = 8;
/// Bigger than any status update the agent can be sent (wire frames are at most 1 MiB), so a
/// larger length can only be damage.
pub(super) const MAX_PAYLOAD: usize = 4 << 20;

/// One entry of the log. Borrowed when written, owned when read back.
// One record lives while it is encoded or replayed, never in a collection.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(super) enum Record<'a> {
    /// An update, durable before `record` returns.
    Update {
        seq: u64,
        uuid: Uuid,
        status: Cow<'a, TaskStatus>,
    },
    /// The framework acknowledged this update (written without a flush: see `log.rs`).
    Ack {
        framework_id: Cow<'a, FrameworkId>,
        task_id: Cow<'a, TaskId>,
        uuid: Uuid,
    },
    /// Every update of this framework is dropped.
    Forget { framework_id: Cow<'a, FrameworkId> },
    // Run task lists (`checkpoint::TaskChange`, kept by `members.rs`). Appended after the
    // variants above, so the encoding of those does not change: an older agent reading a
    // segment with these finds frames it cannot decode, salvages every update around them as
    // it does around damage, and moves the segment aside.
    /// The log holds this run's task list from here on.
    RunLogged { container: Cow<'a, str> },
    /// A `TaskAdded` as agents wrote it before tasks had artifacts: read (and turned into a
    /// `TaskAdded` by the scan), never written (`before_artifacts.rs`).
    TaskAddedBeforeArtifacts {
        container: Cow<'a, str>,
        task: LoggedTaskV2,
    },
    TaskRemoved {
        container: Cow<'a, str>,
        task_id: Cow<'a, TaskId>,
    },
    /// The run and every task of it are forgotten.
    RunRemoved { container: Cow<'a, str> },
    /// A task joined the run (or changed): replaces an entry with the same task id. Appended
    /// when `TaskInfo` gained `artifacts`, so the older encoding keeps its index.
    TaskAdded {
        container: Cow<'a, str>,
        task: Cow<'a, LoggedTask>,
    },
}

impl<'a> Record<'a> {
    /// The record of a run task list change, borrowing from it.
    pub(super) fn change(change: &'a TaskChange) -> Self {
        match change {
            TaskChange::RunLogged { container } => Record::RunLogged {
                container: Cow::Borrowed(container),
            },
            TaskChange::TaskAdded { container, task } => Record::TaskAdded {
                container: Cow::Borrowed(container),
                task: Cow::Borrowed(task),
            },
            TaskChange::TaskRemoved { container, task_id } => Record::TaskRemoved {
                container: Cow::Borrowed(container),
                task_id: Cow::Borrowed(task_id),
            },
            TaskChange::RunRemoved { container } => Record::RunRemoved {
                container: Cow::Borrowed(container),
            },
        }
    }
}

/// A segment's header, for a segment whose first update will get sequence number `next_seq`.
pub(super) fn header(next_seq: u64) -> [u8; HEADER_LEN] {
    let mut h = [0u8; HEADER_LEN];
    h[0..8].copy_from_slice(MAGIC);
    h[8..12].copy_from_slice(&FORMAT.to_le_bytes());
    h[12..16].copy_from_slice(&PROTOCOL_VERSION.to_le_bytes());
    h[16..24].copy_from_slice(&next_seq.to_le_bytes());
    let crc = crc32fast::hash(&h[..28]);
    h[28..32].copy_from_slice(&crc.to_le_bytes());
    h
}

/// Why a segment cannot be read at all.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(super) enum HeaderError {
    #[error("not an update log segment (bad or damaged header)")]
    Damaged,
    #[error(
        "written in segment format {format} for protocol version {protocol}; this agent reads \
         format {FORMAT}, protocol {PROTOCOL_VERSION}"
    )]
    Version { format: u32, protocol: u32 },
}

/// The `next_seq` of a segment's header.
pub(super) fn read_header(bytes: &[u8]) -> Result<u64, HeaderError> {
    let h = bytes.get(..HEADER_LEN).ok_or(HeaderError::Damaged)?;
    let crc = u32_at(h, 28);
    if &h[0..8] != MAGIC || crc32fast::hash(&h[..28]) != crc {
        return Err(HeaderError::Damaged);
    }
    let (format, protocol) = (u32_at(h, 8), u32_at(h, 12));
    if format != FORMAT || protocol != PROTOCOL_VERSION {
        return Err(HeaderError::Version { format, protocol });
    }
    let mut seq = [0u8; 8];
    seq.copy_from_slice(&h[16..24]);
    Ok(u64::from_le_bytes(seq))
}

/// Why a record could not be encoded.
#[derive(Debug, thiserror::Error)]
pub enum EncodeError {
    #[error(transparent)]
    Postcard(#[from] postcard::Error),
    #[error("{0} bytes encoded, more than the {MAX_PAYLOAD} a log record may hold")]
    TooLarge(usize),
}

/// Appends `record` as one frame to `buf`; returns the frame's length in bytes. On error
/// `buf` is left as it was.
pub(super) fn encode(record: &Record<'_>, buf: &mut Vec<u8>) -> Result<usize, EncodeError> {
    let start = buf.len();
    buf.extend_from_slice(&[0u8; FRAME_HEAD]);
    if let Err(e) = postcard::to_extend(record, Append(buf)) {
        buf.truncate(start);
        return Err(e.into());
    }
    let payload = buf.len() - start - FRAME_HEAD;
    if payload > MAX_PAYLOAD {
        buf.truncate(start);
        return Err(EncodeError::TooLarge(payload));
    }
    let len = (payload as u32).to_le_bytes();
    let mut crc = crc32fast::Hasher::new();
    crc.update(&len);
    crc.update(&buf[start + FRAME_HEAD..]);
    buf[start..start + 4].copy_from_slice(&len);
    buf[start + 4..start + 8].copy_from_slice(&crc.finalize().to_le_bytes());
    Ok(buf.len() - start)
}

/// Lets postcard append to a borrowed buffer (its `to_extend` takes the writer by value).
struct Append<'a>(&'a mut Vec<u8>);

impl Extend<u8> for Append<'_> {
    fn extend<I: IntoIterator<Item = u8>>(&mut self, bytes: I) {
        self.0.extend(bytes);
    }
}

/// The frame at the start of `bytes`, if it verifies: the record and the frame's length.
fn decode(bytes: &[u8]) -> Option<(Record<'static>, usize)> {
    let head = bytes.get(..FRAME_HEAD)?;
    let len = u32_at(head, 0) as usize;
    if len == 0 || len > MAX_PAYLOAD {
        return None;
    }
    let payload = bytes.get(FRAME_HEAD..FRAME_HEAD + len)?;
    let mut crc = crc32fast::Hasher::new();
    crc.update(&head[0..4]);
    crc.update(payload);
    if crc.finalize() != u32_at(head, 4) {
        return None;
    }
    match postcard::take_from_bytes::<Record<'static>>(payload) {
        Ok((Record::TaskAddedBeforeArtifacts { container, task }, [])) => {
            let task = Cow::Owned(task.into());
            Some((Record::TaskAdded { container, task }, FRAME_HEAD + len))
        }
        Ok((record, [])) => Some((record, FRAME_HEAD + len)),
        _ => None,
    }
}

/// What a scan of a segment's frames found.
#[derive(Debug, Default)]
pub(super) struct Scan {
    /// Every record that verified, in file order, with its frame's length.
    pub records: Vec<(Record<'static>, usize)>,
    /// Bytes at the end that belong to no verified frame (a torn tail), if any.
    pub torn_tail: Option<Range>,
    /// Stretches in the middle that did not verify, with frames that do after them (or running
    /// to the end, if the search for a next frame gave up).
    pub damaged: Vec<Range>,
}

/// A byte range of the segment, `[start, end)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Range {
    pub start: usize,
    pub end: usize,
}

/// Reads every frame of `frames` (a segment's bytes after its header); `base` is their offset
/// in the segment, for the ranges reported. See the module header.
pub(super) fn scan(frames: &[u8], base: usize) -> Scan {
    scan_within(frames, base, RESYNC_BUDGET)
}

/// Bytes checksummed while looking for a frame after damage, at most: crafted bytes could make
/// every offset claim a long frame, so the search gives up after this much.
const RESYNC_BUDGET: usize = 256 << 20;

fn scan_within(frames: &[u8], base: usize, mut budget: usize) -> Scan {
    let mut scan = Scan::default();
    let mut pos = 0;
    while pos < frames.len() {
        if let Some((record, len)) = decode(&frames[pos..]) {
            scan.records.push((record, len));
            pos += len;
            continue;
        }
        let resume = (pos + 1..frames.len()).find(|&p| {
            let claimed = frames
                .get(p..p + 4)
                .map_or(0, |l| u32_at(l, 0) as usize)
                .min(frames.len() - p);
            budget = budget.saturating_sub(claimed);
            budget == 0 || decode(&frames[p..]).is_some()
        });
        let end = resume.unwrap_or(frames.len());
        let range = Range {
            start: base + pos,
            end: base + end,
        };
        if budget == 0 {
            // Gave up: whatever follows is lost, and it was damage, not a torn write.
            scan.damaged.push(Range {
                end: base + frames.len(),
                ..range
            });
            break;
        }
        match resume {
            Some(_) => scan.damaged.push(range),
            None => scan.torn_tail = Some(range),
        }
        pos = end;
    }
    scan
}

fn u32_at(bytes: &[u8], at: usize) -> u32 {
    let mut b = [0u8; 4];
    b.copy_from_slice(&bytes[at..at + 4]);
    u32::from_le_bytes(b)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bramble_proto::task::UpdateSource;
    use bramble_proto::TaskState;

    fn update(seq: u64, data: usize) -> Record<'static> {
        let mut status = TaskStatus::new(
            "fw".into(),
            format!("t{seq}").into(),
            TaskState::Running,
            UpdateSource::Agent,
        );
        status.data = vec![7; data];
        let uuid = Uuid::new_v4();
        status.uuid = Some(uuid);
        Record::Update {
            seq,
            uuid,
            status: Cow::Owned(status),
        }
    }

    fn frames(records: &[Record<'_>]) -> (Vec<u8>, Vec<usize>) {
        let mut buf = Vec::new();
        let lens = records
            .iter()
            .map(|r| encode(r, &mut buf).unwrap())
            .collect();
        (buf, lens)
    }

    fn decoded(scan: &Scan) -> Vec<Record<'static>> {
        scan.records.iter().map(|(r, _)| r.clone()).collect()
    }

    #[test]
    fn records_round_trip_with_their_lengths() {
        let records = vec![
            update(1, 0),
            Record::Ack {
                framework_id: Cow::Owned("fw".into()),
                task_id: Cow::Owned("t1".into()),
                uuid: Uuid::new_v4(),
            },
            update(2, 1000),
            Record::Forget {
                framework_id: Cow::Owned("fw".into()),
            },
            Record::RunLogged {
                container: Cow::Owned("c1".into()),
            },
            Record::TaskAdded {
                container: Cow::Owned("c1".into()),
                task: Cow::Owned(crate::status_updates::tests::logged_task("t1")),
            },
            Record::TaskRemoved {
                container: Cow::Owned("c1".into()),
                task_id: Cow::Owned("t1".into()),
            },
            Record::RunRemoved {
                container: Cow::Owned("c1".into()),
            },
        ];
        let (buf, lens) = frames(&records);
        assert_eq!(lens.iter().sum::<usize>(), buf.len());
        let scan = scan(&buf, HEADER_LEN);
        assert_eq!(decoded(&scan), records);
        assert_eq!(
            scan.records.iter().map(|(_, l)| *l).collect::<Vec<_>>(),
            lens
        );
        assert!(scan.torn_tail.is_none() && scan.damaged.is_empty());
    }

    #[test]
    fn the_first_records_encode_as_older_agents_wrote_them() {
        // Variant indices are part of the format: the run task list records were appended
        // after these, so segments of older agents read the same.
        let mut buf = Vec::new();
        let forget = Record::Forget {
            framework_id: Cow::Owned("fw".into()),
        };
        encode(&forget, &mut buf).unwrap();
        assert_eq!(&buf[FRAME_HEAD..], &[2, 2, b'f', b'w']);
    }

    #[test]
    fn task_added_records_of_agents_before_artifacts_still_read() {
        let task = crate::status_updates::tests::logged_task("t1");
        let old = Record::TaskAddedBeforeArtifacts {
            container: Cow::Owned("c1".into()),
            task: LoggedTaskV2::of(&task),
        };
        let mut buf = Vec::new();
        encode(&old, &mut buf).unwrap();
        // The variant index older agents wrote (the fifth record kind).
        assert_eq!(buf[FRAME_HEAD], 4);
        let scan = scan(&buf, 0);
        assert!(scan.torn_tail.is_none() && scan.damaged.is_empty());
        let expected = Record::TaskAdded {
            container: Cow::Owned("c1".into()),
            task: Cow::Owned(task.clone()),
        };
        assert_eq!(decoded(&scan), vec![expected]);
        // Today's records carry artifacts and read back with them.
        let mut with = task;
        with.info.artifacts = vec![bramble_proto::task::Artifact::new("http://h/a.tgz")];
        let new = Record::TaskAdded {
            container: Cow::Owned("c1".into()),
            task: Cow::Owned(with),
        };
        let (buf, _) = frames(std::slice::from_ref(&new));
        assert_eq!(decoded(&scan_all(&buf)), vec![new]);
    }

    fn scan_all(buf: &[u8]) -> Scan {
        scan(buf, 0)
    }

    #[test]
    fn header_round_trips_and_refuses_damage_and_other_versions() {
        let h = header(42);
        assert_eq!(read_header(&h), Ok(42));
        assert_eq!(read_header(&h[..31]), Err(HeaderError::Damaged));
        for byte in 0..HEADER_LEN {
            let mut bad = h;
            bad[byte] ^= 0x10;
            assert!(read_header(&bad).is_err(), "flip in byte {byte} not seen");
        }
        let mut other = h;
        other[12..16].copy_from_slice(&(PROTOCOL_VERSION + 1).to_le_bytes());
        let crc = crc32fast::hash(&other[..28]);
        other[28..32].copy_from_slice(&crc.to_le_bytes());
        assert!(matches!(
            read_header(&other),
            Err(HeaderError::Version { protocol, .. }) if protocol == PROTOCOL_VERSION + 1
        ));
    }

    #[test]
    fn a_cut_at_every_offset_of_the_last_frame_is_a_torn_tail() {
        let records = vec![update(1, 5), update(2, 30), update(3, 17)];
        let (buf, lens) = frames(&records);
        let last_start = lens[0] + lens[1];
        for cut in last_start..buf.len() {
            let scan = scan(&buf[..cut], 0);
            assert_eq!(decoded(&scan), records[..2], "cut at {cut}");
            let torn = (cut > last_start).then_some(Range {
                start: last_start,
                end: cut,
            });
            assert_eq!(scan.torn_tail, torn, "cut at {cut}");
            assert!(scan.damaged.is_empty(), "cut at {cut}");
        }
    }

    #[test]
    fn zeros_after_the_last_frame_are_a_torn_tail() {
        let (mut buf, _) = frames(&[update(1, 3)]);
        let end = buf.len();
        buf.extend_from_slice(&[0u8; 100]);
        let scan = scan(&buf, 0);
        assert_eq!(scan.records.len(), 1);
        assert_eq!(
            scan.torn_tail,
            Some(Range {
                start: end,
                end: end + 100
            })
        );
    }

    #[test]
    fn a_flipped_bit_anywhere_in_a_middle_frame_loses_only_that_frame() {
        let records = vec![update(1, 5), update(2, 30), update(3, 17)];
        let (buf, lens) = frames(&records);
        let (start, end) = (lens[0], lens[0] + lens[1]);
        for byte in start..end {
            for bit in [0, 3, 7] {
                let mut bad = buf.clone();
                bad[byte] ^= 1 << bit;
                let scan = scan(&bad, 0);
                assert_eq!(
                    decoded(&scan),
                    vec![records[0].clone(), records[2].clone()],
                    "bit {bit} of byte {byte}"
                );
                assert_eq!(scan.damaged, vec![Range { start, end }], "byte {byte}");
                assert!(scan.torn_tail.is_none());
            }
        }
    }

    #[test]
    fn the_search_after_damage_gives_up_on_bytes_that_all_claim_long_frames() {
        let (mut buf, lens) = frames(&[update(1, 3)]);
        // Every offset reads as a frame of about 1 MiB that does not verify.
        for _ in 0..(2 << 20) / 4 {
            buf.extend_from_slice(&[0x00, 0x00, 0x10, 0x00]);
        }
        let scan = scan_within(&buf, 0, 8 << 20);
        assert_eq!(scan.records.len(), 1);
        assert!(scan.torn_tail.is_none());
        assert_eq!(
            scan.damaged,
            vec![Range {
                start: lens[0],
                end: buf.len()
            }]
        );
    }
}

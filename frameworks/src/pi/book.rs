//! The pi job's ledger: which chunks are pending, running or done, and with what result.
//! Pure bookkeeping, so the rules that make the answer trustworthy are unit-tested: a chunk
//! counts once however often it reports (across restarts too: results restored from the
//! journal are done before anything reports); only the current attempt's loss sends it back to
//! the queue; the estimate combines finished chunks in chunk order. [`BookCounts`] says how
//! that went, so a chaos test can check that no chunk was counted twice.

use super::kernel::{chunks, combine, Sum};
use std::collections::VecDeque;

#[derive(Debug, Clone, Copy, PartialEq)]
enum Chunk {
    Pending,
    Running,
    Done(Sum),
}

/// What recording a result did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recorded {
    Counted,
    /// The chunk had already reported; this result was ignored.
    Duplicate {
        agrees: bool,
    },
}

/// How the ledger's chunks were accounted for. `restored + counted == chunks` once the job
/// is complete; anything else means a chunk was counted twice or never.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct BookCounts {
    pub chunks: u64,
    /// Results taken from the journal of an earlier run of the same job.
    pub restored: u64,
    /// Results counted by this run.
    pub counted: u64,
    /// Chunks sent back to the queue because their current attempt ended without a result.
    pub relaunched: u64,
    /// Results for chunks already done, ignored.
    pub duplicates_ignored: u64,
    /// Of those, results whose bits differed from the kept one (should stay 0: the kernel is
    /// a pure function of the range).
    pub duplicates_disagreeing: u64,
}

pub struct ChunkBook {
    ranges: Vec<(u64, u64)>,
    chunks: Vec<Chunk>,
    attempts: Vec<u32>,
    pending: VecDeque<usize>,
    done: usize,
    terms_done: u64,
    counts: BookCounts,
}

impl ChunkBook {
    pub fn new(terms: u64, tasks: u64) -> Self {
        let ranges = chunks(terms, tasks);
        let n = ranges.len();
        Self {
            ranges,
            chunks: vec![Chunk::Pending; n],
            attempts: vec![0; n],
            pending: (0..n).collect(),
            done: 0,
            terms_done: 0,
            counts: BookCounts {
                chunks: n as u64,
                ..BookCounts::default()
            },
        }
    }

    pub fn len(&self) -> usize {
        self.ranges.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ranges.is_empty()
    }

    pub fn has_pending(&self) -> bool {
        !self.pending.is_empty()
    }

    pub fn counts(&self) -> BookCounts {
        self.counts
    }

    /// A result an earlier run of this job already counted (from its journal). `false` for
    /// an unknown chunk or one already done.
    pub fn restore_result(&mut self, index: usize, sum: Sum) -> bool {
        if !matches!(
            self.chunks.get(index),
            Some(Chunk::Pending | Chunk::Running)
        ) {
            return false;
        }
        self.mark_done(index, sum);
        self.counts.restored += 1;
        true
    }

    /// Attempt `attempt` of chunk `index` was launched by an earlier run. Later attempts get
    /// higher numbers (task ids stay unique across runs); a chunk not yet done is taken as
    /// running that attempt until the cluster says otherwise.
    pub fn restore_launch(&mut self, index: usize, attempt: u32) {
        let Some(known) = self.attempts.get_mut(index) else {
            return;
        };
        if attempt < *known {
            return;
        }
        *known = attempt;
        if !matches!(self.chunks[index], Chunk::Done(_)) {
            self.chunks[index] = Chunk::Running;
            self.pending.retain(|&i| i != index);
        }
    }

    /// The chunks believed running, with their current attempt.
    pub fn running(&self) -> Vec<(usize, u32)> {
        self.chunks
            .iter()
            .enumerate()
            .filter(|(_, c)| matches!(c, Chunk::Running))
            .map(|(i, _)| (i, self.attempts[i]))
            .collect()
    }

    /// Takes the next pending chunk to launch: its index, attempt number and term range.
    pub fn launch_next(&mut self) -> Option<(usize, u32, (u64, u64))> {
        let index = self.pending.pop_front()?;
        self.attempts[index] += 1;
        self.chunks[index] = Chunk::Running;
        Some((index, self.attempts[index], self.ranges[index]))
    }

    /// Takes the first pending chunk `ok` accepts (e.g. not one that just failed on the agent
    /// offering), as [`launch_next`](Self::launch_next) does.
    pub fn launch_next_where(
        &mut self,
        ok: impl Fn(usize) -> bool,
    ) -> Option<(usize, u32, (u64, u64))> {
        let at = self.pending.iter().position(|&i| ok(i))?;
        let index = self.pending.remove(at)?;
        self.attempts[index] += 1;
        self.chunks[index] = Chunk::Running;
        Some((index, self.attempts[index], self.ranges[index]))
    }

    /// The attempt number of chunk `index` so far (0: never launched).
    pub fn attempt(&self, index: usize) -> u32 {
        self.attempts.get(index).copied().unwrap_or(0)
    }

    /// How many chunks wait for an offer.
    pub fn pending_count(&self) -> usize {
        self.pending.len()
    }

    /// A launch that never reached the cluster: back to the front of the queue.
    pub fn unlaunch(&mut self, index: usize) {
        if index < self.chunks.len() && self.chunks[index] == Chunk::Running {
            self.chunks[index] = Chunk::Pending;
            self.pending.push_front(index);
        }
    }

    /// Whether a result for `index` would be counted (the chunk exists and is not done).
    pub fn would_count(&self, index: usize) -> bool {
        matches!(
            self.chunks.get(index),
            Some(Chunk::Pending | Chunk::Running)
        )
    }

    pub fn finished(&mut self, index: usize, sum: Sum) -> Option<Recorded> {
        match *self.chunks.get(index)? {
            Chunk::Done(previous) => {
                let agrees = previous.to_bytes() == sum.to_bytes();
                self.counts.duplicates_ignored += 1;
                if !agrees {
                    self.counts.duplicates_disagreeing += 1;
                }
                Some(Recorded::Duplicate { agrees })
            }
            _ => {
                self.mark_done(index, sum);
                self.counts.counted += 1;
                Some(Recorded::Counted)
            }
        }
    }

    fn mark_done(&mut self, index: usize, sum: Sum) {
        self.chunks[index] = Chunk::Done(sum);
        self.pending.retain(|&i| i != index);
        self.done += 1;
        let (b, e) = self.ranges[index];
        self.terms_done += e - b;
    }

    /// Attempt `attempt` of chunk `index` ended without a result. Returns true when the chunk
    /// went back to the queue (a stale attempt or a finished chunk changes nothing).
    pub fn lost(&mut self, index: usize, attempt: u32) -> bool {
        let current = self.attempts.get(index) == Some(&attempt);
        if !current || !matches!(self.chunks.get(index), Some(Chunk::Running)) {
            return false;
        }
        self.chunks[index] = Chunk::Pending;
        self.pending.push_back(index);
        self.counts.relaunched += 1;
        true
    }

    pub fn done(&self) -> usize {
        self.done
    }

    pub fn terms_done(&self) -> u64 {
        self.terms_done
    }

    pub fn is_complete(&self) -> bool {
        self.done == self.ranges.len()
    }

    /// 4 × the sum of the finished chunks, combined in chunk order.
    pub fn estimate(&self) -> Option<f64> {
        (self.done > 0).then(|| {
            combine(self.chunks.iter().filter_map(|c| match c {
                Chunk::Done(s) => Some(*s),
                _ => None,
            }))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pi::kernel::leibniz_range;

    fn run_all(book: &mut ChunkBook, order: &[usize]) {
        let mut launched = Vec::new();
        while let Some((i, _, (b, e))) = book.launch_next() {
            launched.push((i, leibniz_range(b, e)));
        }
        for &i in order {
            let (_, s) = launched
                .iter()
                .find(|(j, _)| *j == i)
                .copied()
                .expect("launched");
            assert_eq!(book.finished(i, s), Some(Recorded::Counted));
        }
    }

    #[test]
    fn finishing_order_does_not_change_a_single_bit() {
        let mut forward = ChunkBook::new(1_000_003, 5);
        run_all(&mut forward, &[0, 1, 2, 3, 4]);
        let mut backward = ChunkBook::new(1_000_003, 5);
        run_all(&mut backward, &[4, 2, 0, 3, 1]);
        let a = forward.estimate().expect("done");
        let b = backward.estimate().expect("done");
        assert_eq!(a.to_bits(), b.to_bits());
        assert!(forward.is_complete() && backward.is_complete());
        assert_eq!(forward.terms_done(), 1_000_003);
    }

    #[test]
    fn a_chunk_that_reports_twice_counts_once() {
        let mut book = ChunkBook::new(100, 2);
        let (i, _, (b, e)) = book.launch_next().expect("chunk");
        let s = leibniz_range(b, e);
        assert_eq!(book.finished(i, s), Some(Recorded::Counted));
        assert_eq!(
            book.finished(i, s),
            Some(Recorded::Duplicate { agrees: true })
        );
        assert_eq!(book.done(), 1);
        assert_eq!(book.terms_done(), e - b);
        assert_eq!(book.finished(99, s), None, "unknown chunk index");
    }

    #[test]
    fn only_the_current_attempts_loss_requeues() {
        let mut book = ChunkBook::new(100, 1);
        let (i, first, _) = book.launch_next().expect("chunk");
        assert!(
            book.lost(i, first),
            "current attempt lost: back in the queue"
        );
        assert!(!book.lost(i, first), "already pending");
        let (_, second, (b, e)) = book.launch_next().expect("relaunch");
        assert_eq!(second, first + 1);
        assert!(
            !book.lost(i, first),
            "a stale attempt's loss changes nothing"
        );
        assert_eq!(
            book.finished(i, leibniz_range(b, e)),
            Some(Recorded::Counted)
        );
        assert!(!book.lost(i, second), "a finished chunk is never requeued");
        assert!(book.is_complete());
    }

    #[test]
    fn a_late_result_from_a_lost_attempt_still_counts_once() {
        let mut book = ChunkBook::new(100, 1);
        let (i, first, (b, e)) = book.launch_next().expect("chunk");
        assert!(book.lost(i, first));
        let _ = book.launch_next().expect("relaunch");
        let s = leibniz_range(b, e);
        assert_eq!(book.finished(i, s), Some(Recorded::Counted));
        assert_eq!(
            book.finished(i, s),
            Some(Recorded::Duplicate { agrees: true })
        );
        assert!(!book.has_pending());
    }

    #[test]
    fn a_restored_book_counts_each_chunk_once_and_says_so() {
        let ranges = chunks(1_000, 4);
        let sum = |i: usize| leibniz_range(ranges[i].0, ranges[i].1);
        // The first run counted chunk 0 and 2 and had launched 1 (attempt 2) and 3.
        let mut book = ChunkBook::new(1_000, 4);
        book.restore_launch(1, 1);
        book.restore_launch(1, 2);
        book.restore_launch(1, 1);
        book.restore_launch(3, 1);
        book.restore_launch(0, 1);
        assert!(book.restore_result(0, sum(0)));
        assert!(book.restore_result(2, sum(2)));
        assert!(!book.restore_result(2, sum(2)), "restored twice");
        assert!(!book.restore_result(9, sum(2)), "unknown chunk");
        assert_eq!(book.running(), vec![(1, 2), (3, 1)]);
        assert!(
            !book.has_pending(),
            "in-flight chunks wait for the cluster's word"
        );
        // The agents resend chunk 0's result: ignored. Attempt 1 of chunk 1 is stale.
        assert_eq!(
            book.finished(0, sum(0)),
            Some(Recorded::Duplicate { agrees: true })
        );
        assert!(!book.lost(1, 1));
        // The master no longer knows attempt 1 of chunk 3: it runs again as attempt 2.
        assert!(book.lost(3, 1));
        assert_eq!(book.launch_next().map(|(i, a, _)| (i, a)), Some((3, 2)));
        assert_eq!(book.finished(1, sum(1)), Some(Recorded::Counted));
        assert_eq!(book.finished(3, sum(3)), Some(Recorded::Counted));
        assert!(book.is_complete());
        assert_eq!(
            book.counts(),
            BookCounts {
                chunks: 4,
                restored: 2,
                counted: 2,
                relaunched: 1,
                duplicates_ignored: 1,
                duplicates_disagreeing: 0,
            }
        );
        let mut whole = ChunkBook::new(1_000, 4);
        run_all(&mut whole, &[0, 1, 2, 3]);
        assert_eq!(
            book.estimate().map(f64::to_bits),
            whole.estimate().map(f64::to_bits),
            "restored results give the same bits"
        );
    }

    #[test]
    fn a_disagreeing_duplicate_is_counted_as_such() {
        let mut book = ChunkBook::new(100, 1);
        let s = leibniz_range(0, 100);
        assert_eq!(book.finished(0, s), Some(Recorded::Counted));
        let other = Sum {
            hi: s.hi,
            lo: s.lo + 1e-30,
        };
        assert_eq!(
            book.finished(0, other),
            Some(Recorded::Duplicate { agrees: false })
        );
        assert_eq!(book.counts().duplicates_disagreeing, 1);
        assert_eq!(
            book.estimate().map(f64::to_bits),
            Some(combine([s]).to_bits()),
            "the first result is kept"
        );
    }
}

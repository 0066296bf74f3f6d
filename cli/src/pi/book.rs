//! The pi job's ledger: which chunks are pending, running or done, and with what result.
//! Pure bookkeeping, so the rules that make the answer trustworthy are unit-tested: a chunk
//! counts once however often it reports; only the current attempt's loss sends it back to
//! the queue; the estimate combines finished chunks in chunk order.

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

pub struct ChunkBook {
    ranges: Vec<(u64, u64)>,
    chunks: Vec<Chunk>,
    attempts: Vec<u32>,
    pending: VecDeque<usize>,
    done: usize,
    terms_done: u64,
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

    /// Takes the next pending chunk to launch: its index, attempt number and term range.
    pub fn launch_next(&mut self) -> Option<(usize, u32, (u64, u64))> {
        let index = self.pending.pop_front()?;
        self.attempts[index] += 1;
        self.chunks[index] = Chunk::Running;
        Some((index, self.attempts[index], self.ranges[index]))
    }

    /// A launch that never reached the cluster: back to the front of the queue.
    pub fn unlaunch(&mut self, index: usize) {
        if index < self.chunks.len() && self.chunks[index] == Chunk::Running {
            self.chunks[index] = Chunk::Pending;
            self.pending.push_front(index);
        }
    }

    pub fn finished(&mut self, index: usize, sum: Sum) -> Option<Recorded> {
        match *self.chunks.get(index)? {
            Chunk::Done(previous) => Some(Recorded::Duplicate {
                agrees: previous == sum,
            }),
            _ => {
                self.chunks[index] = Chunk::Done(sum);
                self.pending.retain(|&i| i != index);
                self.done += 1;
                let (b, e) = self.ranges[index];
                self.terms_done += e - b;
                Some(Recorded::Counted)
            }
        }
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
}

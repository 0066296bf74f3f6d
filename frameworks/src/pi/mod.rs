//! The showcase job: pi from the Gregory–Leibniz series, split into chunks that run on every
//! agent inside one long-lived custom executor per agent (`bramble executor pi`).
//!
//! - `kernel`: the series itself, bit-reproducible per term range;
//! - `book`: the chunk ledger — each chunk counted once, only the current attempt's loss
//!   requeued, results combined in chunk order;
//! - `journal`: what a restarted scheduler needs to resume the same job;
//! - `scheduler`: launches chunks on offers and collects the answer;
//! - `placement`: where chunks go (not back where they failed, not to agents avoided);
//! - `executor`: computes chunks on the agents.
//!
//! `bramble pi` (in the CLI) opens the journal, runs the scheduler and prints the answer.

pub mod book;
pub mod executor;
pub mod journal;
pub mod kernel;
mod placement;
pub mod scheduler;

use serde::{Deserialize, Serialize};

/// One chunk of the series, as carried in a task's `data`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PiChunk {
    pub index: u32,
    pub begin: u64,
    pub end: u64,
}

impl PiChunk {
    pub fn to_bytes(&self) -> Vec<u8> {
        // A fixed little-endian layout: 4 + 8 + 8 bytes.
        let mut out = Vec::with_capacity(20);
        out.extend_from_slice(&self.index.to_le_bytes());
        out.extend_from_slice(&self.begin.to_le_bytes());
        out.extend_from_slice(&self.end.to_le_bytes());
        out
    }

    pub fn from_bytes(bytes: &[u8]) -> Option<PiChunk> {
        if bytes.len() != 20 {
            return None;
        }
        let index = u32::from_le_bytes(bytes[0..4].try_into().ok()?);
        let begin = u64::from_le_bytes(bytes[4..12].try_into().ok()?);
        let end = u64::from_le_bytes(bytes[12..20].try_into().ok()?);
        (begin <= end).then_some(PiChunk { index, begin, end })
    }
}

#[cfg(test)]
mod tests {
    use super::PiChunk;

    #[test]
    fn chunks_round_trip_and_garbage_is_refused() {
        let c = PiChunk {
            index: 7,
            begin: 1 << 40,
            end: (1 << 40) + 99,
        };
        assert_eq!(PiChunk::from_bytes(&c.to_bytes()), Some(c));
        assert_eq!(PiChunk::from_bytes(b"nonsense"), None);
        let backwards = PiChunk {
            index: 0,
            begin: 9,
            end: 1,
        };
        assert_eq!(PiChunk::from_bytes(&backwards.to_bytes()), None);
    }
}

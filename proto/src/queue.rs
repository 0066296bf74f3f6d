//! A peer's outbound queue, bounded by bytes as well as by messages.
//!
//! A count alone does not bound memory: 4,096 queued messages are a few hundred kilobytes of
//! heartbeats or four gigabytes of framework messages near the frame limit, and a peer that
//! stops reading decides which. So each message is charged its encoded size when queued and
//! credited back once the writer has written it; a sender that would go over either bound gets
//! [`Full`] at once (the caller drops that peer, never waits for it).

use crate::codec::payload_size;
use serde::Serialize;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use tokio::sync::mpsc;

/// Why a message was not queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Full {
    #[error("{0} messages queued")]
    Messages(usize),
    #[error("{0} bytes queued")]
    Bytes(usize),
    #[error("the receiving side is gone")]
    Closed,
}

/// A queue holding at most `messages` messages and `bytes` encoded bytes. One message bigger
/// than `bytes` still goes into an empty queue, so the limit never blocks a legal frame.
pub fn channel<T>(messages: usize, bytes: usize) -> (QueueTx<T>, QueueRx<T>) {
    let (tx, rx) = mpsc::channel(messages.max(1));
    let queued = Arc::new(Queued {
        bytes: AtomicUsize::new(0),
        limit: bytes,
        messages,
    });
    (
        QueueTx {
            tx,
            queued: queued.clone(),
        },
        QueueRx {
            rx,
            queued,
            taken: 0,
        },
    )
}

#[derive(Debug)]
struct Queued {
    bytes: AtomicUsize,
    limit: usize,
    messages: usize,
}

impl Queued {
    /// Charges `size` bytes unless that would go over the limit (an empty queue takes any).
    fn charge(&self, size: usize) -> Result<(), Full> {
        let mut now = self.bytes.load(Ordering::Relaxed);
        loop {
            if now > 0 && now.saturating_add(size) > self.limit {
                return Err(Full::Bytes(now));
            }
            match self.bytes.compare_exchange_weak(
                now,
                now.saturating_add(size),
                Ordering::AcqRel,
                Ordering::Relaxed,
            ) {
                Ok(_) => return Ok(()),
                Err(actual) => now = actual,
            }
        }
    }

    fn credit(&self, size: usize) {
        self.bytes.fetch_sub(size, Ordering::AcqRel);
    }
}

#[derive(Debug)]
pub struct QueueTx<T> {
    tx: mpsc::Sender<(T, usize)>,
    queued: Arc<Queued>,
}

impl<T> Clone for QueueTx<T> {
    fn clone(&self) -> Self {
        Self {
            tx: self.tx.clone(),
            queued: self.queued.clone(),
        }
    }
}

impl<T: Serialize> QueueTx<T> {
    /// Queues `msg` now or says why not.
    pub fn try_send(&self, msg: T) -> Result<(), Full> {
        // A message that cannot be encoded fails at the writer; charge it nothing here.
        let size = payload_size(&msg).unwrap_or(0);
        self.queued.charge(size)?;
        match self.tx.try_send((msg, size)) {
            Ok(()) => Ok(()),
            Err(e) => {
                self.queued.credit(size);
                Err(match e {
                    mpsc::error::TrySendError::Full(_) => Full::Messages(self.queued.messages),
                    mpsc::error::TrySendError::Closed(_) => Full::Closed,
                })
            }
        }
    }

    /// Bytes queued and not yet written.
    pub fn queued_bytes(&self) -> usize {
        self.queued.bytes.load(Ordering::Relaxed)
    }
}

#[derive(Debug)]
pub struct QueueRx<T> {
    rx: mpsc::Receiver<(T, usize)>,
    queued: Arc<Queued>,
    /// Bytes taken by the last `recv_many` and not yet credited back by `written`.
    taken: usize,
}

impl<T> QueueRx<T> {
    /// Waits for messages and moves up to `max` of them, and at most about `max_bytes`, into
    /// `batch`; 0 once every sender is gone. Their bytes still count against the queue until
    /// [`QueueRx::written`].
    pub async fn recv_many(&mut self, batch: &mut Vec<T>, max: usize, max_bytes: usize) -> usize {
        self.written();
        let Some((first, size)) = self.rx.recv().await else {
            return 0;
        };
        batch.push(first);
        self.taken = size;
        let mut n = 1;
        while n < max && self.taken < max_bytes {
            match self.rx.try_recv() {
                Ok((msg, size)) => {
                    batch.push(msg);
                    self.taken += size;
                    n += 1;
                }
                Err(_) => break,
            }
        }
        n
    }

    /// The last batch is written: its bytes leave the queue's count.
    pub fn written(&mut self) {
        self.queued.credit(std::mem::take(&mut self.taken));
    }

    /// The next message, credited at once (for a reader that hands messages on one by one).
    pub async fn recv(&mut self) -> Option<T> {
        self.written();
        let (msg, size) = self.rx.recv().await?;
        self.queued.credit(size);
        Some(msg)
    }

    /// One message if one is queued (for tests and synchronous drains); credited at once.
    pub fn try_recv(&mut self) -> Result<T, mpsc::error::TryRecvError> {
        let (msg, size) = self.rx.try_recv()?;
        self.queued.credit(size);
        Ok(msg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn blob(n: usize) -> Vec<u8> {
        vec![0; n]
    }

    #[test]
    fn bytes_bound_the_queue_before_the_count_does() {
        let (tx, mut rx) = channel::<Vec<u8>>(4096, 10_000);
        for _ in 0..3 {
            tx.try_send(blob(3_000)).expect("fits");
        }
        assert!(matches!(tx.try_send(blob(3_000)), Err(Full::Bytes(_))));
        // A small one still fits beside them.
        tx.try_send(blob(500)).expect("small fits");
        rx.try_recv().expect("one out");
        tx.try_send(blob(2_000)).expect("room again");
    }

    #[test]
    fn an_empty_queue_takes_a_message_bigger_than_its_bound() {
        let (tx, mut rx) = channel::<Vec<u8>>(16, 1_000);
        tx.try_send(blob(5_000)).expect("alone it goes");
        assert!(matches!(tx.try_send(blob(1)), Err(Full::Bytes(_))));
        rx.try_recv().expect("out");
        assert_eq!(tx.queued_bytes(), 0);
    }

    #[test]
    fn the_count_still_bounds_small_messages() {
        let (tx, _rx) = channel::<u8>(2, 1 << 20);
        tx.try_send(1).expect("one");
        tx.try_send(2).expect("two");
        assert_eq!(tx.try_send(3), Err(Full::Messages(2)));
    }

    #[tokio::test]
    async fn a_batch_counts_until_it_is_written() {
        let (tx, mut rx) = channel::<Vec<u8>>(64, 10_000);
        for _ in 0..4 {
            tx.try_send(blob(2_000)).expect("fits");
        }
        let mut batch = Vec::new();
        // At most about 3,000 bytes a batch: two messages.
        assert_eq!(rx.recv_many(&mut batch, 64, 3_000).await, 2);
        assert!(tx.queued_bytes() >= 8_000);
        rx.written();
        assert!(tx.queued_bytes() < 5_000);
        batch.clear();
        assert_eq!(rx.recv_many(&mut batch, 64, 1 << 20).await, 2);
        drop(tx);
        batch.clear();
        assert_eq!(rx.recv_many(&mut batch, 64, 1 << 20).await, 0);
    }
}

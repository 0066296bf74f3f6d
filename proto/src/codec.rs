//! Length-prefixed frames of postcard-encoded serde messages.
//!
//! A frame is a 4-byte big-endian length followed by that many bytes of postcard. The length
//! is checked against a limit *before* anything is allocated, and the payload's buffer grows
//! only as its bytes arrive: a peer cannot make us reserve gigabytes by lying in four bytes,
//! nor a megabyte per connection by sending a prefix and nothing after it. The same codec runs
//! over QUIC streams and over the executor's Unix socket.
//!
//! Limits are enforced where input enters, never on the way out: a message a relay forwards
//! (an executor's update, a framework message, a launch) was checked against
//! [`MAX_INPUT_BYTES`] when it came in, which leaves [`RELAY_HEADROOM`] for the ids a relay
//! adds, so the relayed frame always fits [`MAX_FRAME_BYTES`] and cannot wedge a link.
//!
//! Tiny tasks make many tiny messages (a launch, two updates and an acknowledgement each), so
//! both ends work in batches: a reader buffers (a burst of frames costs one read, not two per
//! frame), and writers drain their queue with [`FrameWriter::send_batch`] (a burst leaves in
//! one write and one flush: fewer wake-ups, fuller packets).

use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};

/// Largest control-stream frame we accept or send: generous for offers and status updates,
/// small enough that a misbehaving peer costs little.
pub const MAX_FRAME_BYTES: usize = 1 << 20;

/// Room kept between what a caller may send ([`MAX_INPUT_BYTES`]) and [`MAX_FRAME_BYTES`], for
/// the fields relays add (agent, framework and executor ids, enum tags) on the way on.
pub const RELAY_HEADROOM: usize = 64 * 1024;

/// Largest message accepted where input enters the cluster: an SDK call, an executor's
/// message on the agent's socket, a scheduler's call at the master.
pub const MAX_INPUT_BYTES: usize = MAX_FRAME_BYTES - RELAY_HEADROOM;

/// Most queued messages a writer takes from its queue (`recv_many`) for one
/// [`FrameWriter::send_batch`].
pub const MAX_BATCH: usize = 256;

/// A reader's buffer: many small frames per read; bigger frames bypass it.
const READ_BUFFER_BYTES: usize = 16 * 1024;

/// A payload buffer bigger than this is given back after its frame, so one large message
/// does not pin its size for the life of the connection.
const KEEP_PAYLOAD_BUFFER: usize = 64 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    #[error("frame of {len} bytes exceeds the {limit}-byte limit")]
    FrameTooLarge { len: usize, limit: usize },
    #[error("undecodable frame of {len} bytes: {source}")]
    Decode {
        len: usize,
        #[source]
        source: postcard::Error,
    },
    #[error("could not encode message: {0}")]
    Encode(#[source] postcard::Error),
    #[error("stream closed")]
    Closed,
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
}

/// Encodes one message into a complete frame (prefix included).
pub fn encode_frame<T: Serialize>(msg: &T, limit: usize) -> Result<Vec<u8>, CodecError> {
    append_frame(Vec::new(), msg, limit)
}

/// Appends one message's complete frame to `buf`. On error `buf` is returned to no one: the
/// caller drops the whole batch.
fn append_frame<T: Serialize>(buf: Vec<u8>, msg: &T, limit: usize) -> Result<Vec<u8>, CodecError> {
    let start = buf.len();
    let mut buf = buf;
    // Reserve the prefix up front and fill it in once the payload length is known.
    buf.extend_from_slice(&[0u8; 4]);
    let mut buf = postcard::to_extend(msg, buf).map_err(CodecError::Encode)?;
    let len = buf.len() - start - 4;
    if len > limit {
        return Err(CodecError::FrameTooLarge { len, limit });
    }
    buf[start..start + 4].copy_from_slice(&(len as u32).to_be_bytes());
    Ok(buf)
}

/// The size `msg` would have as a frame's payload, without encoding it.
pub fn payload_size<T: Serialize>(msg: &T) -> Result<usize, CodecError> {
    postcard::serialize_with_flavor(msg, postcard::ser_flavors::Size::default())
        .map_err(CodecError::Encode)
}

/// Checks a message where it enters the cluster: over [`MAX_INPUT_BYTES`] it is refused
/// here, to its sender, instead of failing later on a link that relays it.
pub fn check_input<T: Serialize>(msg: &T) -> Result<(), CodecError> {
    let len = payload_size(msg)?;
    if len > MAX_INPUT_BYTES {
        return Err(CodecError::FrameTooLarge {
            len,
            limit: MAX_INPUT_BYTES,
        });
    }
    Ok(())
}

/// Decodes one frame's payload (prefix already stripped).
pub fn decode_payload<T: DeserializeOwned>(payload: &[u8]) -> Result<T, CodecError> {
    postcard::from_bytes(payload).map_err(|source| CodecError::Decode {
        len: payload.len(),
        source,
    })
}

/// Reads frames from one direction of a stream.
pub struct FrameReader<R> {
    inner: BufReader<R>,
    limit: usize,
    buf: Vec<u8>,
}

impl<R: AsyncRead + Unpin> FrameReader<R> {
    pub fn new(inner: R) -> Self {
        Self::with_limit(inner, MAX_FRAME_BYTES)
    }

    pub fn with_limit(inner: R, limit: usize) -> Self {
        Self {
            inner: BufReader::with_capacity(READ_BUFFER_BYTES, inner),
            limit,
            buf: Vec::new(),
        }
    }

    /// Changes the largest frame accepted from now on: a small one until a peer has said who
    /// it is, the full one after.
    pub fn set_limit(&mut self, limit: usize) {
        self.limit = limit;
    }

    /// Reads the next message. A clean end of stream between frames is `Closed`; a frame over
    /// the limit or one that does not decode as `T` is an error, after which the stream must be
    /// abandoned (its framing can no longer be trusted).
    pub async fn recv<T: DeserializeOwned>(&mut self) -> Result<T, CodecError> {
        let mut prefix = [0u8; 4];
        match self.inner.read_exact(&mut prefix).await {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                return Err(CodecError::Closed)
            }
            Err(e) => return Err(CodecError::Io(e)),
        }
        let len = u32::from_be_bytes(prefix) as usize;
        if len > self.limit {
            return Err(CodecError::FrameTooLarge {
                len,
                limit: self.limit,
            });
        }
        // Grows with what arrives (read_to_end doubles as it goes), never to `len` up front.
        self.buf.clear();
        let got = (&mut self.inner)
            .take(len as u64)
            .read_to_end(&mut self.buf)
            .await?;
        if got < len {
            return Err(CodecError::Io(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                format!("stream ended {got} bytes into a {len}-byte frame"),
            )));
        }
        let decoded = decode_payload(&self.buf);
        if self.buf.capacity() > KEEP_PAYLOAD_BUFFER {
            self.buf = Vec::new();
        }
        decoded
    }

    /// Bytes held for the payload being read (tests of what a stalled peer costs).
    pub fn payload_capacity(&self) -> usize {
        self.buf.capacity()
    }
}

/// Writes frames to one direction of a stream.
pub struct FrameWriter<W> {
    inner: W,
    limit: usize,
}

impl<W: AsyncWrite + Unpin> FrameWriter<W> {
    pub fn new(inner: W) -> Self {
        Self::with_limit(inner, MAX_FRAME_BYTES)
    }

    pub fn with_limit(inner: W, limit: usize) -> Self {
        Self { inner, limit }
    }

    pub async fn send<T: Serialize>(&mut self, msg: &T) -> Result<(), CodecError> {
        let frame = encode_frame(msg, self.limit)?;
        self.inner.write_all(&frame).await?;
        self.inner.flush().await?;
        Ok(())
    }

    /// Sends several messages with one write and one flush. A message over the limit fails
    /// the batch before anything is written.
    pub async fn send_batch<T: Serialize>(&mut self, msgs: &[T]) -> Result<(), CodecError> {
        let mut frames = Vec::new();
        for msg in msgs {
            frames = append_frame(frames, msg, self.limit)?;
        }
        self.inner.write_all(&frames).await?;
        self.inner.flush().await?;
        Ok(())
    }

    pub fn into_inner(self) -> W {
        self.inner
    }

    pub fn get_mut(&mut self) -> &mut W {
        &mut self.inner
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::messages::{AgentToMaster, Hello, PeerKind};
    use crate::resources::Resources;
    use std::time::Duration;

    #[tokio::test]
    async fn messages_round_trip_through_frames() {
        let (a, b) = tokio::io::duplex(4096);
        let mut w = FrameWriter::new(a);
        let mut r = FrameReader::new(b);
        let hello = Hello {
            protocol_version: 1,
            software_version: "0.1.0".into(),
            kind: PeerKind::Agent,
        };
        let reg = AgentToMaster::Register {
            agent_id: None,
            hostname: "pi-1".into(),
            resources: Resources::new(4.0, 3800),
            attributes: Default::default(),
            tasks: vec![],
        };
        w.send(&hello).await.expect("send hello");
        w.send(&reg).await.expect("send register");
        assert_eq!(r.recv::<Hello>().await.expect("hello"), hello);
        assert_eq!(r.recv::<AgentToMaster>().await.expect("register"), reg);
        drop(w);
        assert!(matches!(r.recv::<Hello>().await, Err(CodecError::Closed)));
    }

    #[tokio::test]
    async fn a_batch_arrives_as_its_frames_in_order() {
        let (a, b) = tokio::io::duplex(1 << 16);
        let mut w = FrameWriter::new(a);
        let mut r = FrameReader::new(b);
        let beats: Vec<AgentToMaster> = (0..100u64)
            .map(|i| AgentToMaster::SandboxData {
                request: i,
                result: Err(format!("no {i}")),
            })
            .collect();
        w.send_batch(&beats).await.expect("send batch");
        w.send_batch::<AgentToMaster>(&[])
            .await
            .expect("empty batch");
        w.send(&AgentToMaster::Heartbeat).await.expect("send one");
        for want in &beats {
            assert_eq!(&r.recv::<AgentToMaster>().await.expect("frame"), want);
        }
        assert_eq!(
            r.recv::<AgentToMaster>().await.expect("last"),
            AgentToMaster::Heartbeat
        );
    }

    #[tokio::test]
    async fn a_batch_with_one_oversized_message_writes_nothing() {
        let (a, mut b) = tokio::io::duplex(1 << 16);
        let mut w = FrameWriter::with_limit(a, 64);
        let batch = vec![
            AgentToMaster::Heartbeat,
            AgentToMaster::SandboxData {
                request: 1,
                result: Err("x".repeat(100)),
            },
        ];
        assert!(matches!(
            w.send_batch(&batch).await,
            Err(CodecError::FrameTooLarge { .. })
        ));
        drop(w);
        let mut rest = Vec::new();
        b.read_to_end(&mut rest).await.expect("read");
        assert!(rest.is_empty(), "wrote {} bytes", rest.len());
    }

    #[tokio::test]
    async fn oversized_prefix_is_refused_before_allocating() {
        let (mut a, b) = tokio::io::duplex(64);
        a.write_all(&u32::MAX.to_be_bytes()).await.expect("write");
        let mut r = FrameReader::new(b);
        match r.recv::<Hello>().await {
            Err(CodecError::FrameTooLarge { len, limit }) => {
                assert_eq!(len, u32::MAX as usize);
                assert_eq!(limit, MAX_FRAME_BYTES);
            }
            other => panic!("expected FrameTooLarge, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn a_prefix_without_its_payload_reserves_nothing() {
        let (mut a, b) = tokio::io::duplex(1024);
        // A peer claims a frame just under the limit, sends ten bytes of it and stalls.
        a.write_all(&((MAX_FRAME_BYTES - 1) as u32).to_be_bytes())
            .await
            .expect("write prefix");
        a.write_all(&[7u8; 10]).await.expect("write payload");
        let mut r = FrameReader::new(b);
        let stalled =
            tokio::time::timeout(Duration::from_millis(200), r.recv::<AgentToMaster>()).await;
        assert!(
            stalled.is_err(),
            "nothing more was sent, recv must still wait"
        );
        assert!(
            r.payload_capacity() < 4096,
            "a stalled {}-byte frame holds {} bytes",
            MAX_FRAME_BYTES - 1,
            r.payload_capacity()
        );
    }

    #[tokio::test]
    async fn a_big_frame_arrives_whole_and_its_buffer_is_given_back() {
        let (a, b) = tokio::io::duplex(1 << 16);
        let msg = AgentToMaster::ExecutorMessage {
            framework_id: "f".into(),
            executor_id: "e".into(),
            data: (0..MAX_INPUT_BYTES).map(|i| i as u8).collect(),
        };
        let sent = msg.clone();
        let writer = tokio::spawn(async move {
            let mut w = FrameWriter::new(a);
            w.send(&sent).await.expect("send");
            w.send(&AgentToMaster::Heartbeat).await.expect("send");
        });
        let mut r = FrameReader::new(b);
        assert_eq!(r.recv::<AgentToMaster>().await.expect("big"), msg);
        assert!(r.payload_capacity() <= KEEP_PAYLOAD_BUFFER);
        assert_eq!(
            r.recv::<AgentToMaster>().await.expect("next"),
            AgentToMaster::Heartbeat
        );
        writer.await.expect("writer");
    }

    #[tokio::test]
    async fn a_lowered_limit_refuses_what_the_full_one_takes() {
        let (a, b) = tokio::io::duplex(4096);
        let mut w = FrameWriter::new(a);
        let mut r = FrameReader::new(b);
        r.set_limit(16);
        w.send(&"x".repeat(100)).await.expect("send");
        assert!(matches!(
            r.recv::<String>().await,
            Err(CodecError::FrameTooLarge {
                len: 101,
                limit: 16
            })
        ));
    }

    #[test]
    fn input_over_the_input_limit_is_refused_and_its_relay_still_fits() {
        let data = |n| AgentToMaster::ExecutorMessage {
            framework_id: "f".repeat(1000).into(),
            executor_id: "e".repeat(1000).into(),
            data: vec![0; n],
        };
        assert!(check_input(&data(MAX_INPUT_BYTES - 4096)).is_ok());
        assert!(matches!(
            check_input(&data(MAX_INPUT_BYTES)),
            Err(CodecError::FrameTooLarge {
                limit: MAX_INPUT_BYTES,
                ..
            })
        ));
        let size = payload_size(&data(MAX_INPUT_BYTES - 4096)).expect("size");
        assert!(size + RELAY_HEADROOM / 2 < MAX_FRAME_BYTES);
        assert_eq!(
            size,
            encode_frame(&data(MAX_INPUT_BYTES - 4096), MAX_FRAME_BYTES)
                .expect("encode")
                .len()
                - 4
        );
    }

    #[tokio::test]
    async fn garbage_payload_is_a_decode_error() {
        let (mut a, b) = tokio::io::duplex(64);
        a.write_all(&[0, 0, 0, 3, 0xff, 0xff, 0xff])
            .await
            .expect("write");
        let mut r = FrameReader::new(b);
        assert!(matches!(
            r.recv::<Hello>().await,
            Err(CodecError::Decode { len: 3, .. })
        ));
    }

    #[tokio::test]
    async fn truncated_frame_is_an_io_error_not_a_hang() {
        let (mut a, b) = tokio::io::duplex(64);
        a.write_all(&[0, 0, 0, 10, 1, 2]).await.expect("write");
        drop(a);
        let mut r = FrameReader::new(b);
        assert!(matches!(r.recv::<Hello>().await, Err(CodecError::Io(_))));
    }

    #[test]
    fn sending_over_the_limit_is_refused() {
        let big = AgentToMaster::ExecutorMessage {
            framework_id: "f".into(),
            executor_id: "e".into(),
            data: vec![0; 100],
        };
        assert!(matches!(
            encode_frame(&big, 50),
            Err(CodecError::FrameTooLarge { .. })
        ));
    }
}

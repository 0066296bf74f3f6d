//! Length-prefixed frames of postcard-encoded serde messages.
//!
//! A frame is a 4-byte big-endian length followed by that many bytes of postcard. The length
//! is checked against a limit *before* anything is allocated, so a peer cannot make us reserve
//! gigabytes by lying in four bytes. The same codec runs over QUIC streams and over the
//! executor's Unix socket.
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

/// Most queued messages a writer takes from its queue (`recv_many`) for one
/// [`FrameWriter::send_batch`].
pub const MAX_BATCH: usize = 256;

/// A reader's buffer: many small frames per read; bigger frames bypass it.
const READ_BUFFER_BYTES: usize = 16 * 1024;

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
        self.buf.resize(len, 0);
        self.inner.read_exact(&mut self.buf).await?;
        decode_payload(&self.buf)
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

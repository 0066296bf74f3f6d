//! Length-prefixed frames of postcard-encoded serde messages.
//!
//! A frame is a 4-byte big-endian length followed by that many bytes of postcard. The length
//! is checked against a limit *before* anything is allocated, so a peer cannot make us reserve
//! gigabytes by lying in four bytes. The same codec runs over QUIC streams and over the
//! executor's Unix socket.

use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Largest control-stream frame we accept or send: generous for offers and status updates,
/// small enough that a misbehaving peer costs little.
pub const MAX_FRAME_BYTES: usize = 1 << 20;

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
    // Reserve the prefix up front and fill it in once the payload length is known.
    let mut buf = postcard::to_extend(msg, vec![0u8; 4]).map_err(CodecError::Encode)?;
    let len = buf.len() - 4;
    if len > limit {
        return Err(CodecError::FrameTooLarge { len, limit });
    }
    buf[..4].copy_from_slice(&(len as u32).to_be_bytes());
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
    inner: R,
    limit: usize,
    buf: Vec<u8>,
}

impl<R: AsyncRead + Unpin> FrameReader<R> {
    pub fn new(inner: R) -> Self {
        Self::with_limit(inner, MAX_FRAME_BYTES)
    }

    pub fn with_limit(inner: R, limit: usize) -> Self {
        Self {
            inner,
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

//! RecordIO, the framing of Mesos event streams (`docs/recordio.md`): each record is its length
//! in bytes as decimal digits, one `\n`, then exactly that many bytes, and nothing after them.
//! The stream itself is the body of a chunked HTTP response; chunk boundaries mean nothing.

use thiserror::Error;

/// Frames one record. Mesos never writes an empty record (`0\n`), and neither do we: callers
/// pass a serialized event, which is never empty.
pub fn encode(record: &[u8]) -> Vec<u8> {
    debug_assert!(!record.is_empty(), "RecordIO records are never empty");
    let mut out = Vec::with_capacity(record.len() + 8);
    out.extend_from_slice(record.len().to_string().as_bytes());
    out.push(b'\n');
    out.extend_from_slice(record);
    out
}

#[derive(Debug, Error, PartialEq, Eq)]
pub enum RecordIoError {
    #[error("record length prefix is not a decimal number: {0:?}")]
    BadLength(String),
    #[error("record of {len} bytes is larger than the {max}-byte limit")]
    TooLarge { len: usize, max: usize },
}

/// Splits a byte stream, fed in arbitrary pieces, back into records. Used by our tests and
/// by anything of ours that reads a Mesos stream.
#[derive(Debug)]
pub struct Decoder {
    buf: Vec<u8>,
    max_record: usize,
}

impl Decoder {
    pub fn new(max_record: usize) -> Self {
        Self {
            buf: Vec::new(),
            max_record,
        }
    }

    /// Adds bytes and returns every record now complete, in order.
    pub fn push(&mut self, bytes: &[u8]) -> Result<Vec<Vec<u8>>, RecordIoError> {
        self.buf.extend_from_slice(bytes);
        let mut records = Vec::new();
        loop {
            let Some(nl) = self.buf.iter().position(|&b| b == b'\n') else {
                // A length prefix longer than 20 digits cannot be a u64: garbage.
                if self.buf.len() > 20 {
                    return Err(RecordIoError::BadLength(
                        String::from_utf8_lossy(&self.buf[..20]).into_owned(),
                    ));
                }
                return Ok(records);
            };
            let prefix = &self.buf[..nl];
            let len: usize = std::str::from_utf8(prefix)
                .ok()
                .filter(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|s| s.parse().ok())
                .ok_or_else(|| {
                    RecordIoError::BadLength(String::from_utf8_lossy(prefix).into_owned())
                })?;
            if len > self.max_record {
                return Err(RecordIoError::TooLarge {
                    len,
                    max: self.max_record,
                });
            }
            if self.buf.len() < nl + 1 + len {
                return Ok(records);
            }
            records.push(self.buf[nl + 1..nl + 1 + len].to_vec());
            self.buf.drain(..nl + 1 + len);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn length_counts_bytes_and_nothing_follows_the_data() {
        assert_eq!(
            encode(br#"{"type":"HEARTBEAT"}"#),
            b"20\n{\"type\":\"HEARTBEAT\"}".to_vec()
        );
        let two = [encode(b"abc"), encode("é".as_bytes())].concat();
        assert_eq!(two, b"3\nabc2\n\xc3\xa9".to_vec());
    }

    #[test]
    fn decoder_reassembles_records_split_anywhere() {
        let stream = [
            encode(br#"{"type":"SUBSCRIBED"}"#),
            encode(br#"{"type":"HEARTBEAT"}"#),
        ]
        .concat();
        for chunk in 1..stream.len() {
            let mut d = Decoder::new(1024);
            let mut got = Vec::new();
            for piece in stream.chunks(chunk) {
                got.extend(d.push(piece).unwrap());
            }
            assert_eq!(
                got,
                vec![
                    br#"{"type":"SUBSCRIBED"}"#.to_vec(),
                    br#"{"type":"HEARTBEAT"}"#.to_vec()
                ],
                "chunk size {chunk}"
            );
        }
    }

    #[test]
    fn decoder_refuses_garbage_and_oversized_records() {
        assert!(matches!(
            Decoder::new(10).push(b"x1\nabc"),
            Err(RecordIoError::BadLength(_))
        ));
        assert_eq!(
            Decoder::new(10).push(b"11\n"),
            Err(RecordIoError::TooLarge { len: 11, max: 10 })
        );
        assert!(Decoder::new(10).push(&[b'9'; 30]).is_err());
    }
}

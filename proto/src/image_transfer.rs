//! What operator, master and agent agree on when an image travels operator → master → agents
//! (`bramble images import|load`): the chunk size, the largest image, and the digest every
//! hop checks before it uses the bytes.

use ring::digest;
use std::io::Read;
use std::path::Path;

/// Bytes per chunk. Each chunk is one frame on the control stream and is answered before the
/// next leaves, so a transfer holds at most one chunk per hop in memory and never crowds out
/// the stream's other messages for long.
pub const CHUNK_BYTES: usize = 256 * 1024;

/// The largest image the master takes (the bytes are held on the master's card while they
/// are streamed out): 2 GiB.
pub const MAX_IMAGE_BYTES: u64 = 2 << 30;

/// A running SHA-256 over what has arrived.
pub struct Digest(digest::Context);

impl Default for Digest {
    fn default() -> Self {
        Digest(digest::Context::new(&digest::SHA256))
    }
}

impl Digest {
    pub fn update(&mut self, data: &[u8]) {
        self.0.update(data);
    }

    /// Lowercase hex, as [`ImageSpec::sha256`](crate::messages::ImageSpec) carries it.
    pub fn finish(self) -> String {
        hex::encode(self.0.finish())
    }
}

/// The SHA-256 (lowercase hex) and size of a file.
pub fn file_digest(path: &Path) -> std::io::Result<(String, u64)> {
    let mut file = std::fs::File::open(path)?;
    let mut digest = Digest::default();
    let mut buf = vec![0u8; CHUNK_BYTES];
    let mut size = 0u64;
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        digest.update(&buf[..n]);
        size += n as u64;
    }
    Ok((digest.finish(), size))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_digest_is_sha256_in_hex() {
        let mut d = Digest::default();
        d.update(b"ab");
        d.update(b"c");
        assert_eq!(
            d.finish(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn a_chunk_fits_an_operator_frame() {
        use crate::messages::{ImageUpload, OperatorCall};
        let call = OperatorCall::ImageUpload(ImageUpload::Chunk {
            offset: u64::MAX,
            data: vec![0xff; CHUNK_BYTES],
        });
        let bytes = postcard::to_allocvec(&call).unwrap();
        assert!(bytes.len() <= crate::codec::MAX_INPUT_BYTES);
    }
}

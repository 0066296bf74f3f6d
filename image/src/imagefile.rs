//! Whole-image file handling: copying a base (`.img` or `.img.xz`) into a sparse output,
//! the `.sha256` next to a release file, and the `.img.xz` release.
//!
//! Pi OS images are mostly empty blocks: the copy seeks over all-zero runs instead of writing
//! them, so a 2.7 GB image takes the disk space of its contents.

use std::fs::File;
use std::io::{self, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

const CHUNK: usize = 1 << 20;
const BLOCK: usize = 64 << 10;

#[derive(Debug, thiserror::Error)]
pub enum FileError {
    #[error("{what} {}: {source}", .path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

fn ferr(what: &'static str, path: &Path) -> impl FnOnce(io::Error) -> FileError {
    let path = path.to_path_buf();
    move |source| FileError::Io { what, path, source }
}

pub fn is_xz(path: &Path) -> bool {
    path.extension().is_some_and(|e| e == "xz")
}

/// A reader over the image's bytes, decompressing `.xz`.
pub fn open_image(path: &Path) -> Result<Box<dyn Read + Send>, FileError> {
    let file = File::open(path).map_err(ferr("opening", path))?;
    let reader = BufReader::with_capacity(CHUNK, file);
    if is_xz(path) {
        Ok(Box::new(liblzma::read::XzDecoder::new_multi_decoder(
            reader,
        )))
    } else {
        Ok(Box::new(reader))
    }
}

/// Copies `src` (decompressing `.xz`) to a new sparse file `dest`; returns its length.
pub fn copy_sparse(src: &Path, dest: &Path) -> Result<u64, FileError> {
    let mut input = open_image(src)?;
    let mut out = File::create(dest).map_err(ferr("creating", dest))?;
    let mut buf = vec![0u8; CHUNK];
    let mut len: u64 = 0;
    loop {
        let n = read_full(&mut input, &mut buf).map_err(ferr("reading", src))?;
        if n == 0 {
            break;
        }
        for block in buf[..n].chunks(BLOCK) {
            if block.iter().all(|&b| b == 0) {
                out.seek(SeekFrom::Current(block.len() as i64))
                    .map_err(ferr("seeking in", dest))?;
            } else {
                out.write_all(block).map_err(ferr("writing", dest))?;
            }
            len += block.len() as u64;
        }
    }
    // Synced once, after the edits (bake.rs).
    out.set_len(len).map_err(ferr("sizing", dest))?;
    Ok(len)
}

/// Reads until `buf` is full or the input ends.
pub fn read_full(r: &mut dyn Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match r.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

/// SHA-256 of a file's bytes, streamed.
pub fn sha256_file(path: &Path) -> Result<String, FileError> {
    let mut f = File::open(path).map_err(ferr("opening", path))?;
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    let mut buf = vec![0u8; CHUNK];
    loop {
        let n = read_full(&mut f, &mut buf).map_err(ferr("reading", path))?;
        if n == 0 {
            break;
        }
        ctx.update(&buf[..n]);
    }
    Ok(hex::encode(ctx.finish()))
}

/// Writes `PATH.sha256` in `sha256sum` format (`sha256sum -c` checks it); returns the hash.
pub fn write_sha256(path: &Path) -> Result<String, FileError> {
    let hash = sha256_file(path)?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let side = sidecar(path, "sha256");
    std::fs::write(&side, format!("{hash}  {name}\n")).map_err(ferr("writing", &side))?;
    Ok(hash)
}

/// `PATH.EXT` (appended, not replacing: `bramble.img.sha256`).
pub fn sidecar(path: &Path, ext: &str) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(".");
    s.push(ext);
    PathBuf::from(s)
}

/// Compresses `src` to `src.xz` with all cores; returns the new file's path.
pub fn compress_xz(src: &Path) -> Result<PathBuf, FileError> {
    let dest = sidecar(src, "xz");
    let threads = std::thread::available_parallelism()
        .map(|n| n.get() as u32)
        .unwrap_or(1);
    let stream = liblzma::stream::MtStreamBuilder::new()
        .threads(threads)
        .preset(6)
        .check(liblzma::stream::Check::Crc64)
        .encoder()
        .map_err(|e| ferr("starting xz for", src)(io::Error::other(e)))?;
    let out = File::create(&dest).map_err(ferr("creating", &dest))?;
    let mut enc = liblzma::write::XzEncoder::new_stream(out, stream);
    let mut input = File::open(src).map_err(ferr("opening", src))?;
    io::copy(&mut input, &mut enc).map_err(ferr("compressing into", &dest))?;
    let out = enc.finish().map_err(ferr("finishing", &dest))?;
    out.sync_all().map_err(ferr("syncing", &dest))?;
    Ok(dest)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn copy_is_sparse_and_exact_for_plain_and_xz_input() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("base.img");
        let mut data = vec![0u8; 8 << 20];
        data[100] = 1;
        data[5 << 20] = 7;
        let tail = data.len() - 1;
        data[tail] = 9;
        std::fs::write(&src, &data).unwrap();
        let xz = compress_xz(&src).unwrap();
        for input in [&src, &xz] {
            let out = dir.path().join("out.img");
            assert_eq!(copy_sparse(input, &out).unwrap(), data.len() as u64);
            assert_eq!(std::fs::read(&out).unwrap(), data);
            let allocated = std::fs::metadata(&out).unwrap().blocks() * 512;
            assert!(
                allocated < 1 << 20,
                "{allocated} bytes allocated for 3 non-zero bytes"
            );
            std::fs::remove_file(&out).unwrap();
        }
        let hash = write_sha256(&src).unwrap();
        let side = std::fs::read_to_string(sidecar(&src, "sha256")).unwrap();
        assert_eq!(side, format!("{hash}  base.img\n"));
    }
}

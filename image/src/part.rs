//! The image's partition table, read with `mbrman`, and a byte window onto one partition.
//!
//! Every filesystem edit goes through a [`PartitionIo`]: a `Read + Write + Seek` view of one
//! partition of the image file that cannot reach outside it, so a filesystem library bug or
//! a wrong size cannot scribble over the neighbouring partition or the MBR. The table itself
//! is only ever read: a built image keeps the base's partition table and disk id, so the
//! `root=PARTUUID=...` in `cmdline.txt` and `/etc/fstab` stay right.

use serde::Serialize;
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::path::Path;

pub const SECTOR: u64 = 512;

#[derive(Debug, thiserror::Error)]
pub enum PartError {
    #[error("reading the partition table of {path}: {detail}")]
    Table { path: String, detail: String },
    #[error("{path}: {detail}")]
    Layout { path: String, detail: String },
}

/// One primary partition as the table describes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Partition {
    /// 1-based, as in `/dev/mmcblk0p1` and `PARTUUID=xxxxxxxx-01`.
    pub number: usize,
    /// MBR type byte: 0x0c FAT32 LBA, 0x83 Linux.
    pub kind: u8,
    pub bootable: bool,
    pub start: u64,
    pub len: u64,
}

/// The partition table: disk id and primary partitions in use.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Table {
    /// The MBR disk signature as Linux prints it (`blkid`'s PTUUID), e.g. `1234abcd`.
    pub disk_id: String,
    pub partitions: Vec<Partition>,
}

impl Table {
    pub fn read(file: &mut File, path: &Path) -> Result<Table, PartError> {
        let err = |detail: String| PartError::Table {
            path: path.display().to_string(),
            detail,
        };
        file.seek(SeekFrom::Start(0))
            .map_err(|e| err(e.to_string()))?;
        // The header alone (sector 0, boot signature checked): mbrman's full `MBR` reader
        // also walks the extended partition's EBR chain (which a hostile image can make loop
        // forever) and panics on some tables (found by fuzz/image_readers). A Pi image has
        // primary partitions only.
        let header = mbrman::MBRHeader::read_from(file).map_err(|e| {
            err(format!(
                "{e} (is this a disk image with an MBR partition table?)"
            ))
        })?;
        let partitions = header
            .iter()
            .filter(|(_, p)| p.is_used() && !p.is_extended())
            .map(|(i, p)| Partition {
                number: i,
                kind: p.sys,
                bootable: p.is_active(),
                start: u64::from(p.starting_lba) * SECTOR,
                len: u64::from(p.sectors) * SECTOR,
            })
            .collect();
        Ok(Table {
            disk_id: format!("{:08x}", u32::from_le_bytes(header.disk_signature)),
            partitions,
        })
    }

    /// The Raspberry Pi layout: a FAT boot partition 1 and a Linux root partition 2, both
    /// inside the file.
    pub fn pi_layout(
        &self,
        path: &Path,
        file_len: u64,
    ) -> Result<(Partition, Partition), PartError> {
        let layout = |detail: String| PartError::Layout {
            path: path.display().to_string(),
            detail,
        };
        let find = |n: usize| self.partitions.iter().find(|p| p.number == n).copied();
        let (Some(boot), Some(root)) = (find(1), find(2)) else {
            return Err(layout(
                "expected a Raspberry Pi OS layout: partition 1 the FAT boot partition, \
                 partition 2 the ext4 root"
                    .into(),
            ));
        };
        if !matches!(boot.kind, 0x0b | 0x0c | 0x0e | 0x06 | 0xef) {
            return Err(layout(format!(
                "partition 1 has type {:#04x}, not FAT (0x0c)",
                boot.kind
            )));
        }
        if root.kind != 0x83 {
            return Err(layout(format!(
                "partition 2 has type {:#04x}, not Linux (0x83)",
                root.kind
            )));
        }
        for p in [boot, root] {
            if p.start + p.len > file_len {
                return Err(layout(format!(
                    "partition {} ends at byte {} but the image has only {file_len} bytes \
                     (truncated download?)",
                    p.number,
                    p.start + p.len
                )));
            }
        }
        Ok((boot, root))
    }
}

/// A `Read + Write + Seek` window onto `[start, start + len)` of a file.
pub struct PartitionIo {
    file: File,
    start: u64,
    len: u64,
    pos: u64,
}

impl PartitionIo {
    pub fn new(file: &File, part: Partition) -> io::Result<PartitionIo> {
        Ok(PartitionIo {
            file: file.try_clone()?,
            start: part.start,
            len: part.len,
            pos: 0,
        })
    }

    fn remaining(&self, want: usize) -> usize {
        let left = self.len.saturating_sub(self.pos);
        want.min(usize::try_from(left).unwrap_or(usize::MAX))
    }
}

impl Read for PartitionIo {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.remaining(buf.len());
        if n == 0 {
            return Ok(0);
        }
        let got = self.file.read_at(&mut buf[..n], self.start + self.pos)?;
        self.pos += got as u64;
        Ok(got)
    }
}

impl Write for PartitionIo {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.remaining(buf.len());
        if n == 0 && !buf.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::WriteZero,
                "write past the end of the partition",
            ));
        }
        let put = self.file.write_at(&buf[..n], self.start + self.pos)?;
        self.pos += put as u64;
        Ok(put)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

impl Seek for PartitionIo {
    fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
        let target = match to {
            SeekFrom::Start(n) => Some(n),
            SeekFrom::End(d) => self.len.checked_add_signed(d),
            SeekFrom::Current(d) => self.pos.checked_add_signed(d),
        };
        match target {
            Some(t) if t <= self.len => {
                self.pos = t;
                Ok(t)
            }
            _ => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "seek outside the partition",
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_stays_inside_its_partition() {
        let mut f = tempfile::tempfile().unwrap();
        f.write_all(&[0xAA; 3000]).unwrap();
        let part = Partition {
            number: 1,
            kind: 0x0c,
            bootable: false,
            start: 1000,
            len: 1000,
        };
        let mut w = PartitionIo::new(&f, part).unwrap();
        assert_eq!(w.seek(SeekFrom::End(-10)).unwrap(), 990);
        assert_eq!(w.write(&[1u8; 50]).unwrap(), 10);
        assert!(w.write(&[1u8; 5]).is_err());
        assert!(w.seek(SeekFrom::Start(1001)).is_err());
        w.seek(SeekFrom::Start(0)).unwrap();
        let mut all = Vec::new();
        w.read_to_end(&mut all).unwrap();
        assert_eq!(all.len(), 1000);
        let mut outside = [0u8; 1];
        f.read_exact_at(&mut outside, 2000).unwrap();
        assert_eq!(outside[0], 0xAA, "byte after the partition untouched");
        f.read_exact_at(&mut outside, 1999).unwrap();
        assert_eq!(outside[0], 1);
    }

    /// An MBR sector: boot signature, disk id 0x1234abcd, and the given primary entries as
    /// (type, start LBA, sectors).
    fn mbr(entries: &[(u8, u32, u32)]) -> Vec<u8> {
        let mut sector = vec![0u8; 512];
        sector[440..444].copy_from_slice(&0x1234abcd_u32.to_le_bytes());
        for (i, &(kind, start, sectors)) in entries.iter().enumerate() {
            let e = 446 + 16 * i;
            sector[e + 4] = kind;
            sector[e + 8..e + 12].copy_from_slice(&start.to_le_bytes());
            sector[e + 12..e + 16].copy_from_slice(&sectors.to_le_bytes());
        }
        sector[510] = 0x55;
        sector[511] = 0xaa;
        sector
    }

    #[test]
    fn a_hostile_table_with_partitions_at_lba_0_is_read_without_panicking() {
        // Found by the image_readers fuzz target: mbrman's full MBR reader unwraps None
        // computing the alignment when every used partition starts at LBA 0.
        let mut f = tempfile::tempfile().unwrap();
        f.write_all(&mbr(&[(0x0c, 0, 10)])).unwrap();
        let table = Table::read(&mut f, Path::new("hostile.img")).expect("a table");
        assert_eq!(table.disk_id, "1234abcd");
        assert_eq!(table.partitions.len(), 1);
        assert_eq!(
            (table.partitions[0].start, table.partitions[0].len),
            (0, 5120)
        );
    }

    #[test]
    fn an_extended_partition_pointing_at_itself_does_not_hang_the_reader() {
        // An EBR chain is never followed: logical partitions are not part of a Pi image, and
        // a chain that loops back would keep a reader going forever.
        let mut f = tempfile::tempfile().unwrap();
        let mut image = mbr(&[(0x0c, 8, 8), (0x05, 1, 4)]);
        image.extend(mbr(&[(0x83, 1, 1), (0x05, 0, 4)]));
        image.resize(16 * 512, 0);
        f.write_all(&image).unwrap();
        let table = Table::read(&mut f, Path::new("loop.img")).expect("a table");
        let numbers: Vec<usize> = table.partitions.iter().map(|p| p.number).collect();
        assert_eq!(numbers, vec![1], "primary, non-extended only");
    }

    #[test]
    fn no_boot_signature_is_a_clear_error() {
        let mut f = tempfile::tempfile().unwrap();
        f.write_all(&[0u8; 1024]).unwrap();
        let err = Table::read(&mut f, Path::new("blank.img")).unwrap_err();
        assert!(err.to_string().contains("blank.img"), "{err}");
        assert!(err.to_string().contains("MBR partition table"), "{err}");
    }
}

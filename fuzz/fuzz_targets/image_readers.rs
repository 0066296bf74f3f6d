//! A hostile disk image given to `bramble image` (inspect, bake, flash): the MBR partition
//! table and the FAT boot partition are read from it. The input is the image; it lives in a
//! memfd so each run costs no disk I/O. Errors are fine, panics and hangs are not.
#![no_main]

use bramble_image::fat::BootFs;
use bramble_image::part::Table;
use libfuzzer_sys::fuzz_target;
use nix::sys::memfd::{memfd_create, MemFdCreateFlag};
use std::fs::File;
use std::io::Write;
use std::path::Path;

fuzz_target!(|data: &[u8]| {
    let Ok(fd) = memfd_create(c"image", MemFdCreateFlag::MFD_CLOEXEC) else {
        return;
    };
    let mut file = File::from(fd);
    if file.write_all(data).is_err() {
        return;
    }
    let Ok(table) = Table::read(&mut file, Path::new("fuzzed.img")) else {
        return;
    };
    for part in table.partitions {
        // Only partitions inside the input: beyond it every read fails at once anyway.
        if part.start.saturating_add(part.len) > data.len() as u64 {
            continue;
        }
        if let Ok(fs) = BootFs::open(&file, part) {
            let _ = fs.label();
            if let Ok(names) = fs.list() {
                for name in names.iter().take(8) {
                    let _ = fs.read(name);
                }
            }
        }
    }
    let _ = bramble_image::elf::why_not_aarch64(data);
});

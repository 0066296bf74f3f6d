//! Is this file an aarch64 Linux executable? Answered from the ELF header alone, so a
//! host-built (x86_64) binary or a 32-bit ARM one never lands on a card.

/// EM_AARCH64 in the ELF header's `e_machine`.
const EM_AARCH64: u16 = 183;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ElfInfo {
    pub class_64: bool,
    pub little_endian: bool,
    pub machine: u16,
    /// `e_type`: 2 executable, 3 shared object (PIE executables are 3).
    pub kind: u16,
}

impl ElfInfo {
    pub fn is_aarch64_executable(&self) -> bool {
        self.class_64
            && self.little_endian
            && self.machine == EM_AARCH64
            && matches!(self.kind, 2 | 3)
    }

    /// e.g. `aarch64`, `x86_64`, `arm`.
    pub fn arch(&self) -> String {
        match self.machine {
            183 => "aarch64".into(),
            62 => "x86_64".into(),
            40 => "arm".into(),
            3 => "x86".into(),
            243 => "riscv".into(),
            m => format!("ELF machine {m}"),
        }
    }
}

/// Parses the start of a file; `None` when it is not ELF at all.
pub fn parse(header: &[u8]) -> Option<ElfInfo> {
    if header.len() < 20 || &header[..4] != b"\x7fELF" {
        return None;
    }
    let little_endian = header[5] == 1;
    let half = |at: usize| {
        let b = [header[at], header[at + 1]];
        if little_endian {
            u16::from_le_bytes(b)
        } else {
            u16::from_be_bytes(b)
        }
    };
    Some(ElfInfo {
        class_64: header[4] == 2,
        little_endian,
        kind: half(16),
        machine: half(18),
    })
}

/// A one-line reason `bytes` is not an aarch64 executable, or `None` when it is one.
pub fn why_not_aarch64(bytes: &[u8]) -> Option<String> {
    match parse(bytes) {
        None => Some("not an ELF file".into()),
        Some(info) if info.is_aarch64_executable() => None,
        Some(info) => Some(format!(
            "an ELF file for {}{}, not an aarch64 executable",
            info.arch(),
            if info.class_64 { "" } else { " (32-bit)" }
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_are_told_apart() {
        let mut aarch64 = vec![0x7f, b'E', b'L', b'F', 2, 1, 1, 0];
        aarch64.resize(16, 0);
        aarch64.extend_from_slice(&3u16.to_le_bytes());
        aarch64.extend_from_slice(&183u16.to_le_bytes());
        assert_eq!(why_not_aarch64(&aarch64), None);
        let mut x86 = aarch64.clone();
        x86[18] = 62;
        assert_eq!(
            why_not_aarch64(&x86).unwrap(),
            "an ELF file for x86_64, not an aarch64 executable"
        );
        assert_eq!(why_not_aarch64(b"#!/bin/sh\n").unwrap(), "not an ELF file");
        let host = std::fs::read(std::env::current_exe().unwrap()).unwrap();
        assert!(why_not_aarch64(&host).is_some() == cfg!(not(target_arch = "aarch64")));
    }
}

//! Architecture names: the host's, and Rust's spelled the OCI (Go) way images declare them.

/// The OCI name of this machine's architecture (what images declare).
pub fn host_architecture() -> &'static str {
    oci_architecture(std::env::consts::ARCH)
}

/// Rust's architecture names as OCI's (Go's) ones.
pub fn oci_architecture(rust_arch: &str) -> &str {
    match rust_arch {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "powerpc64" => "ppc64",
        other => other,
    }
}

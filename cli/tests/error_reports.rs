//! How the CLI reports an operator's mistake (issue 22): what to do about it, the cause said
//! once, and no `Stack backtrace:` even with RUST_BACKTRACE set (that is for panics).

use std::process::Command;

#[test]
fn a_missing_cluster_says_how_to_make_one_once_and_without_a_backtrace() {
    let empty = tempfile::tempdir().expect("temp dir");
    for master in [None, Some("127.0.0.1:9")] {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_bramble"));
        cmd.arg("status")
            .env("BRAMBLE_CLUSTER", empty.path())
            .env("RUST_BACKTRACE", "1")
            .env_remove("RUST_LIB_BACKTRACE")
            .env_remove("BRAMBLE_MASTER");
        if let Some(m) = master {
            cmd.env("BRAMBLE_MASTER", m);
        }
        let out = cmd.output().expect("running bramble");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{stderr}");
        assert!(stderr.contains("bramble cluster init DIR"), "{stderr}");
        assert!(stderr.contains("BRAMBLE_CLUSTER"), "{stderr}");
        assert!(!stderr.contains("Stack backtrace"), "{stderr}");
        assert_eq!(
            stderr.matches("No such file or directory").count(),
            1,
            "the cause once: {stderr}"
        );
    }
}

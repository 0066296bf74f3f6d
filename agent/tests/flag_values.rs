//! A bad flag value is blamed on the flag, not on a config file that may not even exist
//! (issue 22: `--cpus -1` was reported as `/etc/bramble/agent.toml: key "cpus"`).

use std::process::Command;

#[test]
fn a_bad_flag_value_is_blamed_on_the_flag() {
    for (args, flag, why) in [
        (["--cpus", "-1"], "--cpus", "negative"),
        (["--mem", "0"], "--mem", "at least 1"),
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_bramble-agent"))
            .args(args)
            .args(["--config", "/nonexistent/agent.toml"])
            .output()
            .expect("running bramble-agent");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{stderr}");
        assert!(stderr.contains(flag) && stderr.contains(why), "{stderr}");
        assert!(!stderr.contains("agent.toml"), "{stderr}");
    }
}

#[test]
fn a_bad_flag_checked_with_the_config_is_blamed_on_the_flag_too() {
    // A config file that is fine (empty): only the flag can be wrong.
    let dir = tempfile::tempdir().expect("temp dir");
    let config = dir.path().join("agent.toml");
    std::fs::write(&config, "").expect("config file");
    for (args, flag, why) in [
        (
            ["--ports", "9-1"],
            "--ports \"9-1\"",
            "ends before it begins",
        ),
        (["--master", "no-port"], "--master \"no-port\"", "no-port"),
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_bramble-agent"))
            .args(args)
            .arg("--config")
            .arg(&config)
            // Errors are reported plainly even so (backtraces are for panics).
            .env("RUST_BACKTRACE", "1")
            .output()
            .expect("running bramble-agent");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{stderr}");
        assert!(stderr.contains(flag) && stderr.contains(why), "{stderr}");
        assert!(!stderr.contains("Stack backtrace"), "{stderr}");
        assert!(!stderr.contains("agent.toml"), "{stderr}");
    }
}

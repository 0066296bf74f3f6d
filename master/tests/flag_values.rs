//! A bad flag value is blamed on the flag, saying why, not on a config file that may not even
//! exist (issue 22: `--agent-timeout-secs 0` was reported as a bad key of master.toml, and
//! `-1` was taken for another argument).

use std::process::Command;

#[test]
fn a_bad_flag_value_is_blamed_on_the_flag() {
    for (value, why) in [
        ("-1", "negative"),
        ("0", "above 0"),
        ("soon", "not a number"),
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_bramble-master"))
            .args(["--agent-timeout-secs", value])
            .args(["--config", "/nonexistent/master.toml"])
            .output()
            .expect("running bramble-master");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{value}: {stderr}");
        assert!(
            stderr.contains("--agent-timeout-secs") && stderr.contains(why),
            "{value}: {stderr}"
        );
        assert!(!stderr.contains("master.toml"), "{value}: {stderr}");
    }
}

#[test]
fn an_error_is_one_plain_report_even_with_rust_backtrace_set() {
    let out = Command::new(env!("CARGO_BIN_EXE_bramble-master"))
        .args(["--config", "/nonexistent/master.toml"])
        .env("RUST_BACKTRACE", "1")
        .output()
        .expect("running bramble-master");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("/nonexistent/master.toml"), "{stderr}");
    assert!(!stderr.contains("Stack backtrace"), "{stderr}");
}

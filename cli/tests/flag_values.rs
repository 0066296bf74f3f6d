//! Bad flag values are refused by the flag, saying why, before anything is dialed (issue 22:
//! `--terms 1e30` said "not a whole number", `2^64` saturated, `run --mem 0` and `--cpus -1`
//! got through to the cluster or were taken for other arguments).

use std::process::{Command, Output};

fn bramble(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_bramble"))
        .args(args)
        // Nothing may be dialed: no master, no cluster files.
        .env("BRAMBLE_MASTER", "127.0.0.1:9")
        .env("BRAMBLE_CLUSTER", "/nonexistent/bramble-cluster")
        .output()
        .expect("running the bramble binary")
}

fn refused(args: &[&str], flag: &str, why: &str) {
    let out = bramble(args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
    assert!(
        stderr.contains(flag) && stderr.contains(why),
        "{args:?} should blame {flag} because {why}: {stderr}"
    );
}

#[test]
fn bad_values_are_refused_by_their_flag_with_the_reason() {
    refused(&["pi", "--terms", "1e30"], "--terms", "out of range");
    refused(&["pi", "--terms", "2^64"], "--terms", "out of range");
    refused(&["pi", "--tasks", "-3"], "--tasks", "negative");
    refused(&["run", "--cpus", "-1", "true"], "--cpus", "negative");
    refused(&["run", "--mem", "0", "true"], "--mem", "at least 1");
    refused(
        &["demo", "--cpus-per-agent", "0"],
        "--cpus-per-agent",
        "above 0",
    );
}

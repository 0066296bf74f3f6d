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

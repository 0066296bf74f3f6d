//! `--json` on the commands that need no cluster running (issue 22: every read command takes
//! it): one JSON object on stdout, the same facts the text shows.

use std::process::Command;

fn bramble(args: &[&std::ffi::OsStr]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_bramble"))
        .args(args)
        .output()
        .expect("running the bramble binary")
}

#[test]
fn cluster_show_json_lists_the_cluster_id_and_every_certificate() {
    let dir = tempfile::tempdir().expect("temp dir");
    let cluster = dir.path().join("cluster");
    let init = bramble(&["cluster".as_ref(), "init".as_ref(), cluster.as_os_str()]);
    assert!(
        init.status.success(),
        "{}",
        String::from_utf8_lossy(&init.stderr)
    );
    let text = bramble(&["cluster".as_ref(), "show".as_ref(), cluster.as_os_str()]);
    let text = String::from_utf8_lossy(&text.stdout).into_owned();
    let json = bramble(&[
        "cluster".as_ref(),
        "show".as_ref(),
        cluster.as_os_str(),
        "--json".as_ref(),
    ]);
    assert!(
        json.status.success(),
        "{}",
        String::from_utf8_lossy(&json.stderr)
    );
    let shown: serde_json::Value = serde_json::from_slice(&json.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&json.stdout)));
    let id = shown["cluster_id"].as_str().expect("a cluster id");
    assert!(text.contains(&format!("cluster id: {id}")), "{text}");
    let roles: Vec<&str> = shown["certificates"]
        .as_array()
        .expect("certificates")
        .iter()
        .filter_map(|c| c["role"].as_str())
        .collect();
    for role in ["ca", "node", "framework", "operator"] {
        assert!(roles.contains(&role), "{role} missing from {shown}");
    }
}

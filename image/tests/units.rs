//! The units in `systemd/` parse cleanly (`systemd-analyze verify`) and say what the design
//! needs: restart on failure, after the network, journal logs, the master unprivileged with
//! I2C access and only /var/lib/bramble writable, the agent delegated its cgroups and leaving
//! tasks running across its own restarts.

use bramble_image::payload::UNITS;
use std::collections::BTreeMap;
use std::process::Command;

/// `key -> values` of one unit file (repeated keys accumulate).
fn directives(text: &str) -> BTreeMap<String, Vec<String>> {
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for l in text.lines() {
        let l = l.trim();
        if l.starts_with('#') || l.starts_with('[') {
            continue;
        }
        if let Some((k, v)) = l.split_once('=') {
            out.entry(k.trim().to_owned())
                .or_default()
                .push(v.trim().to_owned());
        }
    }
    out
}

fn unit(name: &str) -> BTreeMap<String, Vec<String>> {
    let text = UNITS.iter().find(|(n, _)| *n == name).unwrap().1;
    directives(text)
}

fn has(u: &BTreeMap<String, Vec<String>>, key: &str, value: &str) -> bool {
    u.get(key).is_some_and(|vs| {
        vs.iter()
            .any(|v| v.split_whitespace().any(|w| w == value) || v == value)
    })
}

#[test]
fn services_restart_wait_for_the_network_and_log_to_the_journal() {
    for name in ["bramble-master.service", "bramble-agent.service"] {
        let u = unit(name);
        assert!(has(&u, "Restart", "on-failure"), "{name}");
        assert!(has(&u, "Wants", "network-online.target"), "{name}");
        assert!(has(&u, "After", "network-online.target"), "{name}");
        assert!(has(&u, "After", "bramble-firstboot.service"), "{name}");
        assert!(has(&u, "StandardError", "journal"), "{name}");
        assert!(has(&u, "NoNewPrivileges", "yes"), "{name}");
        assert!(has(&u, "ProtectSystem", "strict"), "{name}");
        assert!(has(&u, "WantedBy", "multi-user.target"), "{name}");
    }
}

#[test]
fn master_is_unprivileged_with_i2c_and_writes_only_its_state() {
    let u = unit("bramble-master.service");
    assert_eq!(u["User"], ["bramble"]);
    assert_eq!(u["SupplementaryGroups"], ["i2c"]);
    assert_eq!(u["StateDirectory"], ["bramble/master"]);
    assert_eq!(u["ReadWritePaths"], ["-/var/lib/bramble/master"]);
    assert_eq!(u["CapabilityBoundingSet"], [""]);
    assert!(has(&u, "DeviceAllow", "char-i2c"));
    assert_eq!(u["ConditionPathExists"], ["/etc/bramble/master.toml"]);
}

#[test]
fn agent_keeps_root_for_cgroups_and_its_tasks_survive_its_restart() {
    let u = unit("bramble-agent.service");
    assert_eq!(u["User"], ["root"]);
    assert_eq!(u["Delegate"], ["yes"]);
    assert_eq!(u["KillMode"], ["process"]);
    assert_eq!(u["StateDirectory"], ["bramble/agent"]);
    // Either would make /sys/fs/cgroup read-only for the agent.
    assert!(!u.contains_key("ProtectControlGroups"));
    assert!(!u.contains_key("ProtectKernelTunables"));
}

#[test]
fn first_boot_runs_once_before_the_services_and_the_network() {
    let u = unit("bramble-firstboot.service");
    assert_eq!(u["Type"], ["oneshot"]);
    assert_eq!(
        u["ConditionPathExists"],
        ["!/var/lib/bramble/firstboot.done"]
    );
    assert_eq!(u["ExecStart"], ["/usr/local/bin/bramble node firstboot"]);
    for before in [
        "bramble-master.service",
        "bramble-agent.service",
        "network-pre.target",
        "avahi-daemon.service",
    ] {
        assert!(has(&u, "Before", before), "{before}");
    }
    assert!(has(&u, "After", "systemd-modules-load.service"));
    assert_eq!(
        format!("/{}", bramble_node::DONE_MARKER),
        "/var/lib/bramble/firstboot.done"
    );
}

#[test]
fn units_pass_systemd_analyze_verify() {
    if Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("SKIP: systemd-analyze not installed");
        return;
    }
    // ExecStart must name an executable that exists: point it at stand-ins, nothing else
    // changes.
    let dir = tempfile::tempdir().unwrap();
    let bin = dir.path().join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    for b in ["bramble-master", "bramble-agent", "bramble"] {
        std::fs::write(bin.join(b), "#!/bin/sh\n").unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(bin.join(b), std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let mut paths = Vec::new();
    for (name, text) in UNITS {
        let p = dir.path().join(name);
        let text = text.replace("/usr/local/bin/", &format!("{}/", bin.display()));
        std::fs::write(&p, text).unwrap();
        paths.push(p);
    }
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .args(&paths)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    // Units the host lacks (avahi, ssh) may be named in orderings; nothing else may complain.
    let complaints: Vec<&str> = stderr
        .lines()
        .filter(|l| !l.trim().is_empty())
        .filter(|l| !(l.contains("avahi-daemon.service") || l.contains("ssh.service")))
        .collect();
    assert!(out.status.success() && complaints.is_empty(), "{stderr}");
}

#[test]
fn the_service_scheduler_runs_beside_the_master_unprivileged_restarting_always() {
    let u = unit("bramble-services.service");
    assert_eq!(u["User"], ["bramble"]);
    assert!(has(&u, "Requires", "bramble-master.service"));
    assert!(has(&u, "After", "bramble-master.service"));
    assert!(has(&u, "After", "bramble-firstboot.service"));
    assert_eq!(u["Restart"], ["always"]);
    assert_eq!(
        u["StartLimitIntervalSec"],
        ["0"],
        "never gives up restarting"
    );
    // Its framework id survives restarts: failover, not a new framework.
    assert_eq!(u["StateDirectory"], ["bramble/services"]);
    // With the node certificate: cards carry no framework key, and the master accepts a
    // node certificate as a scheduler only over loopback, only as bramble-services.
    assert!(u["ExecStart"][0]
        .ends_with("service scheduler --state-dir /var/lib/bramble/services --node-certificate"));
    assert_eq!(u["ReadWritePaths"], ["-/var/lib/bramble/services"]);
    // Only on the master node.
    assert_eq!(u["ConditionPathExists"], ["/etc/bramble/master.toml"]);
    assert!(has(&u, "Environment", "BRAMBLE_MASTER=127.0.0.1:5051"));
    assert_eq!(u["CapabilityBoundingSet"], [""]);
    assert!(has(&u, "NoNewPrivileges", "yes"));
    assert!(has(&u, "ProtectSystem", "strict"));
    assert!(has(&u, "StandardError", "journal"));
    assert!(has(&u, "WantedBy", "multi-user.target"));
    assert_eq!(
        format!("127.0.0.1:{}", bramble_proto::DEFAULT_QUIC_PORT),
        "127.0.0.1:5051",
        "the unit names the master's default port"
    );
}

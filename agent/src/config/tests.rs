use super::checks::check_host_port;
use super::*;
use bramble_proto::PortRange;

const PATH: &str = "/etc/bramble/agent.toml";

fn parse_err(text: &str) -> String {
    parse(Path::new(PATH), text).unwrap_err().to_string()
}

#[test]
fn good_file_sets_every_key() {
    let text = r#"
cluster = "/srv/cluster"
master = "pi-master.local:5051"
work_dir = "/data/agent"
cpus = 3.5
mem = 3000
disk = 20000
ports = "31000-31100, 8080"
heartbeat_interval_ms = 500
executor_registration_timeout_secs = 60
kill_grace_secs = 2
executor_idle_timeout_secs = 0
log = "info,bramble_agent=debug"

[attributes]
rack = "shelf-2"
"#;
    let c = parse(Path::new(PATH), text).unwrap();
    assert_eq!(c.cluster, PathBuf::from("/srv/cluster"));
    assert_eq!(c.master.as_deref(), Some("pi-master.local:5051"));
    assert_eq!(c.work_dir, PathBuf::from("/data/agent"));
    assert_eq!(c.cpus, Some(3.5));
    assert_eq!(c.attributes["rack"], "shelf-2");
    assert_eq!(c.heartbeat_interval(), Duration::from_millis(500));
    assert_eq!(c.kill_grace(), Duration::from_secs(2));
    let o = c.resource_overrides().unwrap();
    assert_eq!(o.mem_mib, Some(3000));
    assert_eq!(o.disk_mib, Some(20000));
    assert_eq!(
        o.ports,
        Some(vec![
            PortRange::new(31000, 31100),
            PortRange::new(8080, 8080)
        ])
    );
}

#[test]
fn empty_file_is_all_defaults_and_integer_cpus_are_accepted() {
    assert_eq!(parse(Path::new(PATH), "").unwrap(), AgentConfig::default());
    assert_eq!(parse(Path::new(PATH), "cpus = 4").unwrap().cpus, Some(4.0));
    let d = AgentConfig::default();
    assert_eq!(d.heartbeat_interval_ms, 1000);
    assert_eq!(d.executor_registration_timeout_secs, 30);
    assert_eq!(d.kill_grace_secs, 5);
    assert_eq!(d.executor_idle_timeout_secs, 10);
    assert_eq!(
        d.resource_overrides().unwrap(),
        ResourceOverrides::default()
    );
}

#[test]
fn unknown_key_names_its_line_and_the_expected_keys() {
    let err = parse_err("# agent\nwork_dir = \"/data\"\n\ncpu = 2\n");
    assert!(
        err.starts_with(r#"/etc/bramble/agent.toml: line 4: unknown key "cpu" (expected one of "cluster", "master""#),
        "{err}"
    );
    assert!(err.ends_with(')'), "{err}");
}

#[test]
fn wrong_type_names_the_key_and_line() {
    let err = parse_err("mem = 512\ncpus = \"four\"\n");
    assert!(
        err.starts_with(
            r#"/etc/bramble/agent.toml: line 2: key "cpus": invalid type: string "four""#
        ),
        "{err}"
    );
    let err = parse_err("[attributes]\nrack = 3\n");
    assert!(
        err.contains(r#"line 2: key "attributes.rack": invalid type"#),
        "{err}"
    );
}

#[test]
fn syntax_error_is_one_line_with_a_line_number() {
    let err = parse_err("mem = 512\nports = \"31000\n");
    assert!(
        err.starts_with("/etc/bramble/agent.toml: line 2: "),
        "{err}"
    );
    assert!(!err.contains('\n'), "{err}");
}

#[test]
fn bad_values_name_the_key_after_parsing() {
    assert_eq!(
        parse_err("\n\nports = \"32000-31000\"\n"),
        r#"/etc/bramble/agent.toml: line 3: key "ports": port range "32000-31000" ends before it begins"#
    );
    let err = parse_err("cpus = -1.0\n");
    assert!(
        err.contains(r#"line 1: key "cpus": must be a positive number"#),
        "{err}"
    );
    let err = parse_err("cpus = nan\n");
    assert!(err.contains(r#"key "cpus""#), "{err}");
    let err = parse_err("master = \"pi-master\"\n");
    assert!(err.contains(r#"key "master""#), "{err}");
    let err = parse_err("heartbeat_interval_ms = 0\n");
    assert!(err.contains(r#"key "heartbeat_interval_ms""#), "{err}");
    let err = parse_err("log = \"info,=[\"\n");
    assert!(err.contains(r#"key "log""#), "{err}");
}

#[test]
fn several_masters_are_a_list_or_a_comma_separated_master() {
    assert!(AgentConfig::default().master_list().is_empty());
    let c = parse(Path::new(PATH), "master = \"m:5050\"\n").unwrap();
    assert_eq!(c.master_list(), ["m:5050"]);
    let c = parse(
        Path::new(PATH),
        "masters = [\"a:5050\", \"b:5050\", \"[fd00::3]:5050\"]\n",
    )
    .unwrap();
    assert_eq!(c.master_list(), ["a:5050", "b:5050", "[fd00::3]:5050"]);
    let c = parse(Path::new(PATH), "master = \"a:5050, b:5050\"\n").unwrap();
    assert_eq!(c.master_list(), ["a:5050", "b:5050"]);
}

#[test]
fn a_bad_master_list_names_the_file_line_and_key() {
    assert_eq!(
        parse_err("\nmasters = [\"a:5050\", \"b\"]\n"),
        r#"/etc/bramble/agent.toml: line 2: key "masters": "b" is not host:port"#
    );
    let err = parse_err("master = \"a:5050\"\nmasters = [\"b:5050\"]\n");
    assert!(
        err.contains(r#"line 2: key "masters": give master or masters, not both"#),
        "{err}"
    );
    let err = parse_err("master = \" , \"\n");
    assert!(
        err.contains(r#"line 1: key "master": " , " names no master"#),
        "{err}"
    );
    let err = parse_err("master = \"a:5050,b\"\n");
    assert!(
        err.contains(r#"key "master": "b" is not host:port"#),
        "{err}"
    );
    let err = parse_err("masters = \"a:5050\"\n");
    assert!(err.contains(r#"key "masters": invalid type"#), "{err}");
}

#[test]
fn discovery_interfaces_are_optional_and_checked() {
    assert!(AgentConfig::default().discovery.interfaces.is_empty());
    let c = parse(Path::new(PATH), "[discovery]\ninterfaces = [\"eth0\"]\n").unwrap();
    assert_eq!(c.discovery.interfaces, vec!["eth0"]);
    let err = parse_err("\n[discovery]\ninterfaces = [\"no/such\"]\n");
    assert!(err.contains(r#"key "discovery.interfaces""#), "{err}");
    let err = parse_err("[discovery]\niface = []\n");
    assert!(err.contains(r#"unknown key "iface""#), "{err}");
}

#[test]
fn gc_keys_default_parse_and_are_checked() {
    let d = AgentConfig::default();
    assert_eq!(d.gc_policy(), GcPolicy::default());
    assert_eq!(d.gc.max_age_secs, 3 * 24 * 3600);
    assert_eq!(d.task_user, None);
    let c = parse(
        Path::new(PATH),
        "[gc]\nmax_age_secs = 60\ndisk_headroom = 0.2\ndisk_high_watermark = 0.8\ninterval_secs = 5\n",
    )
    .unwrap();
    let p = c.gc_policy();
    assert_eq!(p.max_age, Duration::from_secs(60));
    assert_eq!((p.disk_headroom, p.high_watermark), (0.2, 0.8));
    assert_eq!(p.interval, Duration::from_secs(5));
    let err = parse_err("[gc]\ndisk_high_watermark = 1.5\n");
    assert!(
        err.contains(r#"line 2: key "gc.disk_high_watermark": must be in (0, 1]"#),
        "{err}"
    );
    let err = parse_err("[gc]\ndisk_headroom = -0.1\n");
    assert!(err.contains(r#"key "gc.disk_headroom""#), "{err}");
    let err = parse_err("[gc]\nmax_age = 3\n");
    assert!(err.contains(r#"unknown key "max_age""#), "{err}");
}

#[test]
fn task_uids_parse_are_checked_and_exclude_task_user() {
    assert_eq!(AgentConfig::default().task_users().unwrap(), None);
    let c = parse(Path::new(PATH), "task_uids = \"70000-70999\"\n").unwrap();
    assert_eq!(
        c.task_users().unwrap(),
        Some(TaskUsers::PerFramework(
            UidRange::new(70000, 70999).unwrap()
        ))
    );
    let c = parse(Path::new(PATH), "task_user = \"root\"\n").unwrap();
    assert!(matches!(c.task_users().unwrap(), Some(TaskUsers::One(u)) if u.uid.is_root()));
    let err = parse_err("\ntask_uids = \"0-100\"\n");
    assert!(
        err.contains(r#"line 2: key "task_uids": the range may not hold uid 0 (root)"#),
        "{err}"
    );
    let err = parse_err("task_user = \"root\"\ntask_uids = \"70000-70999\"\n");
    assert!(err.contains("alternatives"), "{err}");
}

#[test]
fn container_pids_max_defaults_to_a_cap_and_can_be_lifted() {
    assert_eq!(AgentConfig::default().container_pids_max, 512);
    let c = parse(Path::new(PATH), "container_pids_max = 0\n").unwrap();
    assert_eq!(c.container_pids_max, 0);
}

#[test]
fn task_user_must_exist() {
    let c = parse(Path::new(PATH), "task_user = \"root\"\n").unwrap();
    assert!(c.task_user().unwrap().unwrap().uid.is_root());
    assert_eq!(
        parse_err("\ntask_user = \"no-such-user-bramble\"\n"),
        r#"/etc/bramble/agent.toml: line 2: key "task_user": no user "no-such-user-bramble" on this machine (see /etc/passwd)"#
    );
}

#[test]
fn recovery_section_defaults_to_leaving_tasks_running() {
    let d = AgentConfig::default();
    assert!(!d.recovery.kill_tasks_on_shutdown);
    assert_eq!(
        d.recovery.executor_reconnect_timeout(),
        Duration::from_secs(900)
    );
    let c = parse(
        Path::new(PATH),
        "[recovery]\nkill_tasks_on_shutdown = true\nexecutor_reconnect_timeout_secs = 60\n",
    )
    .unwrap();
    assert!(c.recovery.kill_tasks_on_shutdown);
    assert_eq!(c.recovery.executor_reconnect_timeout_secs, 60);
    let err = parse_err("[recovery]\nexecutor_reconnect_timeout_secs = 0\n");
    assert!(
        err.contains(r#"key "recovery.executor_reconnect_timeout_secs""#),
        "{err}"
    );
    let err = parse_err("[recovery]\nkill_tasks = true\n");
    assert!(err.contains(r#"unknown key "kill_tasks""#), "{err}");
}

#[test]
fn port_lists_parse_and_refuse_nonsense() {
    assert_eq!(
        parse_ports("31000-32000,8080"),
        Ok(vec![
            PortRange::new(31000, 32000),
            PortRange::new(8080, 8080)
        ])
    );
    assert_eq!(parse_ports(" 80 - 81 "), Ok(vec![PortRange::new(80, 81)]));
    assert_eq!(parse_ports(""), Ok(vec![]));
    assert!(parse_ports("70000")
        .unwrap_err()
        .contains("not a port number"));
    assert!(parse_ports("0-10").is_err());
    assert!(parse_ports("80,,90").unwrap_err().contains("empty entry"));
    assert!(parse_ports("a-b").is_err());
    assert!(parse_ports("90-80")
        .unwrap_err()
        .contains("ends before it begins"));
}

#[test]
fn host_port_accepts_names_and_bracketed_ipv6() {
    assert!(check_host_port("pi-master.local:5051").is_ok());
    assert!(check_host_port("[fd00::1]:5051").is_ok());
    assert!(check_host_port("fd00::1:5051").is_err());
    assert!(check_host_port(":5051").is_err());
    assert!(check_host_port("host:0").is_err());
}

#[test]
fn missing_explicit_file_is_an_error_but_missing_default_is_defaults() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("agent.toml");
    let err = load_optional(&missing, true).unwrap_err();
    assert!(matches!(err, ConfigError::Read { .. }));
    assert!(err
        .to_string()
        .starts_with(&format!("{}: ", missing.display())));
    assert_eq!(
        load_optional(&missing, false).unwrap(),
        AgentConfig::default()
    );
    // `load` treats any path but the default one as explicit.
    assert!(load(&missing).is_err());
}

#[test]
fn load_reads_and_validates_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("agent.toml");
    std::fs::write(&path, "mem = 300\n").unwrap();
    assert_eq!(load(&path).unwrap().mem, Some(300));
    std::fs::write(&path, "mem = 0\n").unwrap();
    let err = load(&path).unwrap_err().to_string();
    assert_eq!(
        err,
        format!(
            "{}: line 1: key \"mem\": must be at least 1 (MiB)",
            path.display()
        )
    );
}

#[test]
fn generic_loader_works_for_other_config_types() {
    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Other {
        #[allow(dead_code)]
        port: u16,
    }
    let err = load_toml::<Other>(Path::new("master.toml"), "port = 99999\n")
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with(r#"master.toml: line 1: key "port": "#),
        "{err}"
    );
}

use super::*;

const WEB: &str = r#"
name = "web"
instances = 3
cmd = "exec sleep 100"
cpus = 0.1
mem = 32
ports = 2
[env]
GREETING = "hi"
[constraints]
unique_hostname = true
hostname_like = "pi-*"
max_per_agent = 1
attributes = { rack = "a" }
[restart]
backoff_secs = 0.5
"#;

#[test]
fn a_full_spec_reads_and_round_trips_through_its_stored_form() {
    let spec = Spec::parse("web.toml", WEB).expect("valid");
    assert_eq!(spec.instances, 3);
    assert_eq!(spec.ports, 2);
    assert_eq!(spec.constraints.hostname_like.as_deref(), Some("pi-*"));
    assert_eq!(spec.restart.backoff_secs, 0.5);
    assert_eq!(spec.restart.max_backoff_secs, 60.0, "defaults fill in");
    let again = Spec::parse("stored", &spec.to_toml()).expect("stored form reads back");
    assert_eq!(again, spec);
}

#[test]
fn errors_name_the_file_and_the_key() {
    let cases = [
        (
            WEB.replace("max_per_agent = 1", "max_per_agent = 0"),
            "constraints.max_per_agent",
        ),
        (WEB.replace("name = \"web\"", "name = \"Web_1\""), "name"),
        (WEB.replace("cpus = 0.1", "cpus = 0.0"), "cpus"),
        (WEB.replace("GREETING", "PORT0"), "env"),
        (
            WEB.replace("backoff_secs = 0.5", "backoff_secs = -1.0"),
            "restart.backoff_secs",
        ),
        (WEB.replace("ports = 2", "ports = 99"), "ports"),
        (
            WEB.replace("ports = 2", "ports = 2\nservice_type = \"http\""),
            "service_type",
        ),
    ];
    for (text, key) in cases {
        let e = Spec::parse("web.toml", &text).expect_err(key);
        assert_eq!(e.key, key, "{e}");
        let shown = e.to_string();
        assert!(shown.starts_with("web.toml: key \""), "{shown}");
    }
    // An unknown key is a parse error that names it and its line.
    let e = Spec::parse("web.toml", &WEB.replace("cpus =", "cpu =")).expect_err("unknown");
    let shown = e.to_string();
    assert!(shown.starts_with("web.toml: "), "{shown}");
    assert!(shown.contains("cpu"), "{shown}");
    assert!(shown.contains("line"), "{shown}");
    let e = Spec::parse("web.toml", "name = \"web\"").expect_err("missing keys");
    assert!(e.to_string().contains("instances"), "{e}");
}

#[test]
fn an_executor_stands_in_for_cmd_and_is_checked_key_by_key() {
    let base = "name = \"web\"\ninstances = 2\ncpus = 0.1\nmem = 16\nports = 1\n";
    let ok = format!("{base}[executor]\ncmd = \"exec ./serve\"\ndata = \".\"\n");
    let spec = Spec::parse("web.toml", &ok).expect("valid");
    let e = spec.executor.as_ref().expect("an executor");
    assert_eq!((e.cpus, e.mem), (0.05, 32), "defaults fill in");
    assert_eq!(e.data, ".");
    assert!(spec.cmd.is_empty());
    let stored = spec.to_toml();
    assert!(
        !stored.contains("\ncmd = \"\""),
        "no empty cmd stored: {stored}"
    );
    assert_eq!(Spec::parse("stored", &stored).expect("round trip"), spec);
    let mut other = spec.clone();
    other.executor.as_mut().unwrap().data = "docs".into();
    assert_ne!(
        spec.fingerprint(),
        other.fingerprint(),
        "the executor is what runs"
    );
    let cases = [
        (base.to_string(), "cmd"),
        (
            format!("cmd = \"x\"\n{base}[executor]\ncmd = \"y\"\n"),
            "cmd",
        ),
        (format!("{base}[executor]\ncmd = \" \"\n"), "executor.cmd"),
        (
            format!("{base}[executor]\ncmd = \"y\"\ncpus = 0.0\n"),
            "executor.cpus",
        ),
        (
            format!("{base}[executor]\ncmd = \"y\"\nmem = 0\n"),
            "executor.mem",
        ),
        (
            format!(
                "{base}[executor]\ncmd = \"y\"\ndata = \"{}\"\n",
                "x".repeat(MAX_EXECUTOR_DATA + 1)
            ),
            "executor.data",
        ),
        (
            format!("image = \"busybox\"\n{base}[executor]\ncmd = \"y\"\n"),
            "image",
        ),
    ];
    for (text, key) in cases {
        let e = Spec::parse("web.toml", &text).expect_err(key);
        assert_eq!(e.key, key, "{e}");
        assert!(e.to_string().starts_with("web.toml: key \""), "{e}");
    }
    // An unknown key inside [executor] is a parse error naming it.
    let e = Spec::parse(
        "web.toml",
        &format!("{base}[executor]\ncmd = \"y\"\ncpu = 1\n"),
    )
    .expect_err("unknown key");
    assert!(e.to_string().contains("cpu"), "{e}");
}

#[test]
fn a_spec_stored_before_executors_reads_back_with_the_same_fingerprint() {
    // Stored by the scheduler of the release before `[executor]`: this exact text and its
    // fingerprint, so no instance is replaced by an upgrade.
    let stored = "name = \"web\"\ninstances = 2\ncmd = \"exec sleep 100\"\ncpus = 0.1\nmem = 32\nports = 0\nrestart_generation = 0\n";
    let spec = Spec::parse("stored", stored).expect("old stored spec");
    assert!(spec.executor.is_none());
    assert!(spec.to_toml().starts_with(stored), "{}", spec.to_toml());
}

#[test]
fn the_fingerprint_ignores_the_instance_count_only() {
    let spec = Spec::parse("web.toml", WEB).expect("valid");
    let mut scaled = spec.clone();
    scaled.instances = 7;
    assert_eq!(spec.fingerprint(), scaled.fingerprint());
    let mut restarted = spec.clone();
    restarted.restart_generation += 1;
    assert_ne!(spec.fingerprint(), restarted.fingerprint());
    let mut changed = spec.clone();
    changed.cmd = "exec sleep 200".into();
    assert_ne!(spec.fingerprint(), changed.fingerprint());
    // How it is advertised is not what runs: no rollout for it.
    let typed = WEB.replace("ports = 2", "ports = 2\nservice_type = \"_ipp._tcp\"");
    let typed = Spec::parse("web.toml", &typed).expect("valid");
    assert_eq!(typed.service_type.as_deref(), Some("_ipp._tcp"));
    assert_eq!(spec.fingerprint(), typed.fingerprint());
}

#[test]
fn backoff_grows_by_its_factor_up_to_its_cap() {
    let policy = RestartPolicy {
        backoff_secs: 1.0,
        backoff_factor: 2.0,
        max_backoff_secs: 5.0,
        min_uptime_secs: 10.0,
    };
    let secs: Vec<f64> = (1..=5).map(|n| policy.delay(n).as_secs_f64()).collect();
    assert_eq!(secs, [1.0, 2.0, 4.0, 5.0, 5.0]);
    assert!(policy.delay(u32::MAX).as_secs_f64() <= 5.0);
}

#[test]
fn the_shipped_examples_are_valid() {
    let text = include_str!("../../../../examples/services/web.toml");
    let spec = Spec::parse("examples/services/web.toml", text).expect("valid example");
    assert_eq!(spec.name, "web");
    assert!(spec.constraints.unique_hostname);
    let text = include_str!("../../../../examples/services/served.toml");
    let spec = Spec::parse("examples/services/served.toml", text).expect("valid example");
    assert!(spec.executor.is_some() && spec.cmd.is_empty());
}

#[test]
fn artifacts_read_with_mesos_defaults_and_are_checked() {
    let base = "name = \"web\"\ninstances = 1\ncmd = \"./run.sh\"\ncpus = 0.1\nmem = 16\n";
    let ok = format!(
        "{base}[[artifacts]]\nuri = \"http://10.0.0.1/app.tgz\"\n[[artifacts]]\nuri = \"master:tools/run.sh\"\nexecutable = true\ncache = true\nsha256 = \"{}\"\n",
        "AB".repeat(32)
    );
    let spec = Spec::parse("web.toml", &ok).expect("valid");
    let tasks = spec.task_artifacts();
    assert_eq!(tasks.len(), 2);
    assert!(tasks[0].extract && !tasks[0].executable && !tasks[0].cache);
    assert!(tasks[1].executable && tasks[1].cache);
    assert_eq!(
        tasks[1].sha256.as_deref(),
        Some("ab".repeat(32).as_str()),
        "stored lowercase, as digests are compared"
    );
    assert_eq!(
        Spec::parse("again", &spec.to_toml()).expect("round trip"),
        spec
    );
    let mut changed = spec.clone();
    changed.artifacts[0].uri = "http://10.0.0.1/app-2.tgz".into();
    assert_ne!(
        changed.fingerprint(),
        spec.fingerprint(),
        "other artifacts are another version"
    );
    let cases = [
        ("uri = \"file:///etc/passwd\"\n", "artifacts.uri"),
        ("uri = \"master:../secret\"\n", "artifacts.uri"),
        ("uri = \"http://h/\"\n", "artifacts.uri"),
        (
            "uri = \"http://h/x\"\nsha256 = \"12\"\n",
            "artifacts.sha256",
        ),
        (
            "uri = \"http://h/x\"\noutput = \"../x\"\n",
            "artifacts.output",
        ),
        (
            "uri = \"http://h/x\"\n[[artifacts]]\nuri = \"http://g/x\"\n",
            "artifacts.output",
        ),
    ];
    for (extra, key) in cases {
        let text = format!("{base}[[artifacts]]\n{extra}");
        let e = Spec::parse("web.toml", &text).expect_err(key);
        assert_eq!(e.key, key, "{e}");
        assert!(
            e.to_string().starts_with("web.toml: key \"artifacts."),
            "{e}"
        );
    }
    let e = Spec::parse(
        "web.toml",
        &format!("{base}[[artifacts]]\nuri = \"http://h/x\"\nunpack = true\n"),
    )
    .expect_err("unknown key");
    assert!(e.to_string().contains("unpack"), "{e}");
}

#[test]
fn globs_match_hostnames() {
    assert!(glob_matches("bramble-*", "bramble-1a2b"));
    assert!(glob_matches("*-a?", "rack-a1"));
    assert!(!glob_matches("bramble-*", "pi-1"));
    assert!(glob_matches("*", ""));
    assert!(glob_matches("a*b*c", "axxbyyc"));
    assert!(!glob_matches("a*b*c", "axxbyy"));
    assert!(glob_matches("pi-1", "pi-1"));
}
#[test]
fn health_checks_and_rollouts_are_checked() {
    let base = "name = \"web\"\ninstances = 2\ncmd = \"x\"\ncpus = 0.1\nmem = 16\nports = 1\n";
    let ok = format!("{base}[[health]]\nprotocol = \"tcp\"\n[[health]]\nprotocol = \"command\"\ncommand = \"true\"\n[rollout]\nmin_healthy = 1\nmax_surge = 0\n");
    let spec = Spec::parse("web.toml", &ok).expect("valid");
    assert_eq!(spec.health.len(), 2);
    assert_eq!(spec.health[0].max_failures, 3, "defaults fill in");
    assert_eq!(spec.rollout.min_healthy, MinHealthy::Count(1));
    assert_eq!(
        Spec::parse("again", &spec.to_toml()).expect("round trip"),
        spec
    );
    let mut rolled = spec.clone();
    rolled.rollout.max_surge = 2;
    assert_eq!(
        rolled.fingerprint(),
        spec.fingerprint(),
        "how to roll out is not what runs"
    );
    let cases = [
        (
            "[[health]]\nprotocol = \"http\"\nport_index = 1\n",
            "health.port_index",
        ),
        ("[[health]]\nprotocol = \"command\"\n", "health.command"),
        (
            "[[health]]\nprotocol = \"tcp\"\npath = \"/\"\n",
            "health.path",
        ),
        (
            "[[health]]\nprotocol = \"http\"\npath = \"x\"\n",
            "health.path",
        ),
        (
            "[[health]]\nprotocol = \"http\"\nmax_failures = 0\n",
            "health.max_failures",
        ),
        (
            "[[health]]\nprotocol = \"http\"\ninterval_secs = 0.0\n",
            "health.interval_secs",
        ),
        ("[rollout]\nmin_healthy = 1.5\n", "rollout.min_healthy"),
        (
            "[rollout]\nmin_healthy = 1.0\nmax_surge = 0\n",
            "rollout.max_surge",
        ),
        ("[rollout]\nrollback_after = 0\n", "rollout.rollback_after"),
    ];
    for (extra, key) in cases {
        let e = Spec::parse("web.toml", &format!("{base}{extra}")).expect_err(key);
        assert_eq!(e.key, key, "{e}");
    }
    let e = Spec::parse("web.toml", &format!("image = \"a b\"\n{base}")).expect_err("image");
    assert_eq!(e.key, "image");
    assert_eq!(Rollout::default().min_healthy_count(3), 3);
    let half = Rollout {
        min_healthy: MinHealthy::Fraction(0.5),
        ..Rollout::default()
    };
    assert_eq!(half.min_healthy_count(3), 2);
}

use super::*;

#[test]
fn mountinfo_finds_v1_controllers_and_v2_mount() {
    let text = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw,relatime shared:9 - cgroup cgroup rw,cpu,cpuacct
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw,nsdelegate
50 31 0:40 / /mnt/with\\040space rw - ext4 /dev/sda1 rw
garbage line
";
    let mounts = parse_mountinfo(text);
    assert_eq!(mounts.len(), 5);
    assert_eq!(
        mounts[1].mount_point,
        PathBuf::from("/sys/fs/cgroup/cpu,cpuacct")
    );
    assert!(mounts[1].super_options.iter().any(|o| o == "cpu"));
    assert_eq!(mounts[3].fstype, "cgroup2");
    assert_eq!(mounts[4].mount_point, PathBuf::from("/mnt/with space"));
}

#[test]
fn proc_cgroup_parses_v1_and_v2_entries() {
    let v1 = "4:memory:/process_api/abc\n1:cpu,cpuacct:/\n0::/\n";
    let entries = parse_proc_cgroup(v1);
    assert_eq!(
        cgroup_path_of(&entries, Some("memory")).as_deref(),
        Some("/process_api/abc")
    );
    assert_eq!(
        cgroup_path_of(&entries, Some("cpuacct")).as_deref(),
        Some("/")
    );
    assert_eq!(cgroup_path_of(&entries, None).as_deref(), Some("/"));
    assert_eq!(cgroup_path_of(&entries, Some("pids")), None);

    let v2 = "0::/system.slice/bramble-agent.service\n";
    let entries = parse_proc_cgroup(v2);
    assert_eq!(
        cgroup_path_of(&entries, None).as_deref(),
        Some("/system.slice/bramble-agent.service")
    );
    assert_eq!(cgroup_path_of(&entries, Some("memory")), None);
}

#[test]
fn controllers_and_keyed_files_parse() {
    let c = parse_controllers("cpuset cpu io memory pids\n");
    assert!(c.contains("memory") && c.contains("cpu") && !c.contains("hugetlb"));
    assert!(parse_controllers("\n").is_empty());

    let events = "low 0\nhigh 0\nmax 12\noom 1\noom_kill 1\noom_group_kill 0\n";
    assert_eq!(parse_keyed(events, "oom_kill"), Some(1));
    assert_eq!(parse_keyed(events, "oom"), Some(1));
    let oom_control = "oom_kill_disable 0\nunder_oom 0\noom_kill 0\n";
    assert_eq!(parse_keyed(oom_control, "oom_kill"), Some(0));
    assert_eq!(parse_keyed("under_oom 0\n", "oom_kill"), None);
}

#[test]
fn cpu_limits_convert_to_kernel_units() {
    assert_eq!(cpu_max(1.0), "100000 100000");
    assert_eq!(cpu_max(0.5), "50000 100000");
    assert_eq!(cpu_max(2.25), "225000 100000");
    assert_eq!(
        cpu_max(0.001),
        "1000 100000",
        "clamped to the kernel minimum quota"
    );
    assert_eq!(cfs_quota(1.5), (150_000, 100_000));
    // (cpus, v2 weight clamped to 1..=10000, v1 shares at least 2)
    for (cpus, weight, shares) in [
        (1.0, 100, 1024),
        (0.5, 50, 512),
        (0.001, 1, 2),
        (0.0001, 1, 2),
        (1000.0, 10_000, 1_024_000),
    ] {
        assert_eq!(cpu_weight(cpus), weight, "weight of {cpus} cpus");
        assert_eq!(cpu_shares(cpus), shares, "shares of {cpus} cpus");
    }
}

/// Drives the v2 setup against a directory laid out like a v2 root, so the v2 path is
/// exercised on v1 machines too.
#[test]
fn v2_setup_enables_controllers_and_writes_limits() {
    let root = tempfile::tempdir().expect("tempdir");
    let root = root.path();
    fs::write(
        root.join("cgroup.controllers"),
        "cpuset cpu io memory pids\n",
    )
    .unwrap();
    fs::write(root.join("cgroup.subtree_control"), "memory\n").unwrap();

    // The fake kernel: a new cgroup dir has these files.
    let parent = root.join("bramble");
    fs::create_dir(&parent).unwrap();
    fs::write(parent.join("cgroup.subtree_control"), "").unwrap();

    let got = v2::setup_parent(root, "bramble", true, true, true).expect("setup");
    assert_eq!(got, parent);
    // A real kernel turns "+pids" into a list; the fake file keeps the last write.
    assert_eq!(
        fs::read_to_string(root.join("cgroup.subtree_control")).unwrap(),
        "+pids"
    );
    assert_eq!(
        fs::read_to_string(parent.join("cgroup.subtree_control")).unwrap(),
        "+pids"
    );

    let backend = Backend::V2 {
        parent: parent.clone(),
        memory: true,
        cpu: true,
        pids: true,
    };
    let limits = CgroupLimits {
        cpus: 0.5,
        mem_mib: 64,
        pids_max: 512,
    };
    let cg = backend
        .create("task-1", &limits)
        .expect("create")
        .expect("some cgroup");
    let dir = parent.join("task-1");
    assert_eq!(cg.dirs(), std::slice::from_ref(&dir));
    assert_eq!(
        fs::read_to_string(dir.join("memory.max")).unwrap(),
        (64u64 << 20).to_string()
    );
    assert_eq!(
        fs::read_to_string(dir.join("cpu.max")).unwrap(),
        "50000 100000"
    );
    assert_eq!(fs::read_to_string(dir.join("pids.max")).unwrap(), "512");
    assert!(
        !dir.join("memory.swap.max").exists(),
        "absent knobs are not created"
    );

    fs::write(dir.join("memory.events"), "oom 1\noom_kill 1\n").unwrap();
    assert!(cg.memory_limit_exceeded(None));
    fs::write(dir.join("memory.events"), "oom 0\noom_kill 0\n").unwrap();
    assert!(!cg.memory_limit_exceeded(Some(9)));
}

#[test]
fn v2_setup_reports_the_path_that_failed() {
    let root = tempfile::tempdir().expect("tempdir");
    // No cgroup.subtree_control: like a read-only or foreign tree.
    let err = v2::setup_parent(root.path(), "bramble", true, false, false).expect_err("must fail");
    assert!(err.path.ends_with("cgroup.subtree_control"), "{err}");
    assert!(err.to_string().starts_with("reading "), "{err}");
}

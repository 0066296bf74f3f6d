//! The image pipeline end to end on a small synthetic Raspberry Pi OS image made here with
//! mkfs.vfat and mke2fs (MBR, FAT32 `bootfs`, ext4 `rootfs` with a Pi OS-like tree), read
//! back without mounting: build twice, inspect, fsck, first boot on the result, flash to a
//! file standing in for a card, and the refusals (old base, wrong architecture, unsafe
//! devices).
//!
//! The aarch64 binaries are the real cross-built ones when
//! `target/aarch64-unknown-linux-gnu/release` (or `$BRAMBLE_AARCH64_BIN`) has them;
//! otherwise small stand-in files with an aarch64 ELF header, and the test says so.

use bramble_image::bake::{self, BuildOptions};
use bramble_image::devices::{self, HostView, Refusal, Target};
use bramble_image::ext4::RootFs;
use bramble_image::fat::BootFs;
use bramble_image::flash::{self, FlashOptions};
use bramble_image::part::{Partition, Table};
use bramble_image::{elf, inspect, payload, BuildError};
use bramble_node::{self as node, RoleSetting};
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::Command;

const MIB: u64 = 1 << 20;
const BOOT_START: u64 = 4 * MIB;
const BOOT_LEN: u64 = 40 * MIB;
const ROOT_LEN: u64 = 112 * MIB;
const DISK_ID: [u8; 4] = [0xcd, 0xab, 0x34, 0x12];

/// Raspberry Pi OS Bookworm's `config.txt`, as shipped (shared with the unit tests in
/// `src/edits.rs`).
const PI_OS_CONFIG: &str = include_str!("data/pi-os-config.txt");
const PI_OS_CMDLINE: &str = "console=serial0,115200 console=tty1 root=PARTUUID=1234abcd-02 rootfstype=ext4 fsck.repair=yes rootwait quiet init=/usr/lib/raspberrypi-sys-mods/firstboot\n";
const BOOKWORM: &str = "PRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\nNAME=\"Debian GNU/Linux\"\nVERSION_ID=\"12\"\nVERSION=\"12 (bookworm)\"\nVERSION_CODENAME=bookworm\nID=debian\n";
const BULLSEYE: &str = "PRETTY_NAME=\"Raspbian GNU/Linux 11 (bullseye)\"\nNAME=\"Raspbian GNU/Linux\"\nVERSION_ID=\"11\"\nVERSION_CODENAME=bullseye\nID=raspbian\nID_LIKE=debian\n";
const SSH_KEY: &str =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBrambleTestKeyOnlyForTheImageTests test@laptop\n";

fn have_tools() -> bool {
    let missing: Vec<&str> = [
        "mkfs.vfat",
        "fsck.vfat",
        "mke2fs",
        "debugfs",
        "e2fsck",
        "dumpe2fs",
    ]
    .into_iter()
    .filter(|t| {
        Command::new("sh")
            .args(["-c", &format!("command -v {t}")])
            .output()
            .map(|o| !o.status.success())
            .unwrap_or(true)
    })
    .collect();
    if !missing.is_empty() {
        eprintln!("SKIP image tests: missing {missing:?} (apt-get install e2fsprogs dosfstools)");
    }
    missing.is_empty()
}

fn run(cmd: &mut Command) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn write(path: &Path, contents: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, contents).unwrap();
}

/// Copies `src` into `dest` at `offset`, skipping all-zero chunks (dest is sparse).
fn splice(src: &Path, dest: &File, offset: u64) {
    let mut f = File::open(src).unwrap();
    let mut buf = vec![0u8; MIB as usize];
    let mut at = offset;
    loop {
        let n = f.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        if buf[..n].iter().any(|&b| b != 0) {
            dest.write_all_at(&buf[..n], at).unwrap();
        }
        at += n as u64;
    }
}

fn boot_part() -> Partition {
    Partition {
        number: 1,
        kind: 0x0c,
        bootable: false,
        start: BOOT_START,
        len: BOOT_LEN,
    }
}

/// The base root's files besides its release file, as (path under `/`, contents).
const BASE_FILES: &[(&str, &str)] = &[
    ("usr/lib/aarch64-linux-gnu/libc.so.6", "stand-in\n"),
    (
        "etc/fstab",
        "proc /proc proc defaults 0 0\nPARTUUID=1234abcd-01 /boot/firmware vfat defaults 0 2\nPARTUUID=1234abcd-02 / ext4 defaults,noatime 0 1\n",
    ),
    ("etc/hostname", "raspberrypi\n"),
    (
        "etc/hosts",
        "127.0.0.1\tlocalhost\n::1\t\tlocalhost ip6-localhost ip6-loopback\n\n127.0.1.1\t\traspberrypi\n",
    ),
    ("etc/passwd", "root:x:0:0:root:/root:/bin/bash\n"),
    ("etc/group", "root:x:0:\ni2c:x:998:\n"),
    ("etc/machine-id", "4f9d0c2b8e4a4d6f9c1b2a3d4e5f6071\n"),
    (
        "usr/lib/systemd/system/ssh.service",
        "[Service]\nExecStart=/usr/sbin/sshd -D\n",
    ),
    (
        "usr/lib/systemd/system/cron.service",
        "[Service]\nExecStart=/usr/sbin/cron -f\n",
    ),
];

/// A Raspberry Pi OS Lite-like image with `os_release` as the root's release file.
fn make_base(dir: &Path, os_release: &str) -> PathBuf {
    let tree = dir.join("tree");
    write(&tree.join("usr/lib/os-release"), os_release);
    std::fs::create_dir_all(tree.join("etc")).unwrap();
    std::os::unix::fs::symlink("../usr/lib/os-release", tree.join("etc/os-release")).unwrap();
    for (path, text) in BASE_FILES {
        write(&tree.join(path), text);
    }
    std::fs::create_dir_all(tree.join("etc/systemd/system/multi-user.target.wants")).unwrap();
    std::os::unix::fs::symlink(
        "/usr/lib/systemd/system/cron.service",
        tree.join("etc/systemd/system/multi-user.target.wants/cron.service"),
    )
    .unwrap();
    std::fs::create_dir_all(tree.join("boot/firmware")).unwrap();
    std::fs::create_dir_all(tree.join("root")).unwrap();

    let root_fs = dir.join("root.fs");
    File::create(&root_fs).unwrap().set_len(ROOT_LEN).unwrap();
    run(Command::new("mke2fs")
        .args(["-q", "-F", "-t", "ext4", "-L", "rootfs", "-d"])
        .arg(&tree)
        .arg(&root_fs));
    let boot_fs = dir.join("boot.fs");
    File::create(&boot_fs).unwrap().set_len(BOOT_LEN).unwrap();
    run(Command::new("mkfs.vfat")
        .args(["-F", "32", "-s", "1", "-n", "bootfs"])
        .arg(&boot_fs));

    let image = dir.join("base.img");
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&image)
        .unwrap();
    f.set_len(BOOT_START + BOOT_LEN + ROOT_LEN).unwrap();
    let mut mbr = mbrman::MBR::new_from(&mut f, 512, DISK_ID).unwrap();
    let entry = |sys: u8, start: u64, len: u64| mbrman::MBRPartitionEntry {
        boot: 0,
        first_chs: mbrman::CHS::empty(),
        sys,
        last_chs: mbrman::CHS::empty(),
        starting_lba: (start / 512) as u32,
        sectors: (len / 512) as u32,
    };
    mbr[1] = entry(0x0c, BOOT_START, BOOT_LEN);
    mbr[2] = entry(0x83, BOOT_START + BOOT_LEN, ROOT_LEN);
    mbr.write_into(&mut f).unwrap();
    splice(&boot_fs, &f, BOOT_START);
    splice(&root_fs, &f, BOOT_START + BOOT_LEN);
    std::fs::remove_file(&boot_fs).unwrap();
    std::fs::remove_file(&root_fs).unwrap();

    let boot = BootFs::open(&f, boot_part()).unwrap();
    boot.write("config.txt", PI_OS_CONFIG.as_bytes()).unwrap();
    boot.write("cmdline.txt", PI_OS_CMDLINE.as_bytes()).unwrap();
    boot.write("kernel8.img", b"stand-in kernel").unwrap();
    boot.close().unwrap();
    image
}

/// The aarch64 binaries: real cross builds when there are some, else ELF-headed stand-ins.
fn binaries(dir: &Path) -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"));
    let candidates = [
        std::env::var_os("BRAMBLE_AARCH64_BIN").map(PathBuf::from),
        Some(target.join("aarch64-unknown-linux-gnu/release")),
    ];
    for c in candidates.into_iter().flatten() {
        let all_real = payload::BINARIES.iter().all(|b| {
            std::fs::read(c.join(b))
                .map(|bytes| elf::why_not_aarch64(&bytes).is_none())
                .unwrap_or(false)
        });
        if all_real {
            eprintln!("using cross-built aarch64 binaries from {}", c.display());
            return c;
        }
    }
    eprintln!(
        "NOTE: no cross-built aarch64 binaries found; using stand-ins with an aarch64 ELF header \
         (cargo build --release --target aarch64-unknown-linux-gnu -p bramble-master -p bramble-agent -p bramble)"
    );
    let out = dir.join("fake-bin");
    std::fs::create_dir_all(&out).unwrap();
    for (i, b) in payload::BINARIES.iter().enumerate() {
        let mut elf = vec![0x7f, b'E', b'L', b'F', 2, 1, 1, 0];
        elf.resize(16, 0);
        elf.extend_from_slice(&3u16.to_le_bytes());
        elf.extend_from_slice(&183u16.to_le_bytes());
        elf.resize(64, 0);
        elf.extend(std::iter::repeat_n(i as u8 + 1, 200_000));
        std::fs::write(out.join(b), elf).unwrap();
    }
    out
}

struct Fixture {
    dir: tempfile::TempDir,
    base: PathBuf,
    cluster: PathBuf,
    cluster_id: String,
    bins: PathBuf,
    ssh_key: PathBuf,
}

fn fixture(os_release: &str) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let base = make_base(dir.path(), os_release);
    let cluster = dir.path().join("cluster");
    let cluster_id = bramble_proto::identity::init_cluster(&cluster, "testshelf").unwrap();
    let bins = binaries(dir.path());
    let ssh_key = dir.path().join("id_ed25519.pub");
    std::fs::write(&ssh_key, SSH_KEY).unwrap();
    Fixture {
        dir,
        base,
        cluster,
        cluster_id,
        bins,
        ssh_key,
    }
}

impl Fixture {
    fn options(&self, base: &Path, out: &str) -> BuildOptions {
        BuildOptions {
            cluster: self.cluster.clone(),
            out: self.dir.path().join(out),
            base: Some(base.to_path_buf()),
            debian: false,
            ssh_key: Some(self.ssh_key.clone()),
            role: None,
            xz: false,
            binaries: Some(self.bins.clone()),
            workspace: PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".."),
        }
    }
}

/// The image opened, with its boot and root partitions.
fn layout(image: &Path) -> (File, Partition, Partition) {
    let mut f = File::open(image).unwrap();
    let len = f.metadata().unwrap().len();
    let table = Table::read(&mut f, image).unwrap();
    let (boot, root) = table.pi_layout(image, len).unwrap();
    (f, boot, root)
}

fn open_parts(image: &Path) -> (File, Partition, RootFs) {
    let (f, boot, root) = layout(image);
    let rootfs = RootFs::open(image, root).unwrap();
    (f, boot, rootfs)
}

/// Asserts that `text` (an error or a log) says each of `parts`.
fn assert_says(text: &str, parts: &[&str]) {
    for part in parts {
        assert!(text.contains(part), "{part:?} missing from: {text}");
    }
}

fn boot_text(f: &File, part: Partition, name: &str) -> Option<String> {
    let boot = BootFs::open(f, part).unwrap();
    let t = boot
        .read(name)
        .unwrap()
        .map(|b| String::from_utf8(b).unwrap());
    boot.close().unwrap();
    t
}

fn root_text(root: &RootFs, path: &str) -> Option<String> {
    root.read(path)
        .unwrap()
        .map(|b| String::from_utf8(b).unwrap())
}

fn fsck_vfat(image: &Path, part: Partition, scratch: &Path) {
    let mut src = File::open(image).unwrap();
    src.seek(SeekFrom::Start(part.start)).unwrap();
    let out_path = scratch.join("boot-check.fs");
    let mut out = File::create(&out_path).unwrap();
    std::io::copy(&mut src.take(part.len), &mut out).unwrap();
    run(Command::new("fsck.vfat").arg("-n").arg(&out_path));
    std::fs::remove_file(out_path).unwrap();
}

#[test]
fn building_twice_onto_a_pi_os_image_adds_everything_exactly_once() {
    if !have_tools() {
        return;
    }
    let fx = fixture(BOOKWORM);
    let first = bake::build(&fx.options(&fx.base, "once.img")).unwrap();
    let twice = bake::build(&fx.options(&first.out, "twice.img")).unwrap();
    let img = &twice.out;

    // Partition table and disk id exactly as in the base.
    let mbr = |p: &Path| {
        let mut b = vec![0u8; 512];
        File::open(p).unwrap().read_exact(&mut b).unwrap();
        b
    };
    assert_eq!(mbr(img), mbr(&fx.base));

    let (f, boot, root) = open_parts(img);
    // Boot partition: each edit once, nothing else touched.
    let config = boot_text(&f, boot, "config.txt").unwrap();
    assert!(config.starts_with(PI_OS_CONFIG), "{config}");
    let active: Vec<&str> = config
        .lines()
        .filter(|l| l.trim() == "dtparam=i2c_arm=on")
        .collect();
    assert_eq!(active.len(), 1, "{config}");
    let after_all = &config[config.rfind("[all]").unwrap()..];
    assert!(after_all.contains("\ndtparam=i2c_arm=on\n"), "{config}");
    assert_eq!(
        boot_text(&f, boot, "cmdline.txt").unwrap(),
        format!(
            "{} cgroup_enable=memory cgroup_memory=1\n",
            PI_OS_CMDLINE.trim_end()
        )
    );
    assert_eq!(boot_text(&f, boot, "ssh").as_deref(), Some(""));
    let settings_text = boot_text(&f, boot, node::SETTINGS_FILE).unwrap();
    let settings = node::parse_settings(Path::new("bramble.toml"), &settings_text).unwrap();
    assert_eq!(settings.role, RoleSetting::Auto);
    assert_eq!(settings.cluster_name, "testshelf");
    assert_eq!(
        boot_text(&f, boot, "kernel8.img").as_deref(),
        Some("stand-in kernel")
    );
    // The first build's boot files are identical to the second's: nothing added twice.
    let (f1, boot1, root1) = open_parts(&first.out);
    for name in ["config.txt", "cmdline.txt", node::SETTINGS_FILE] {
        assert_eq!(
            boot_text(&f1, boot1, name),
            boot_text(&f, boot, name),
            "{name}"
        );
    }

    // Binaries: aarch64 ELF, executable, the bytes given.
    let bin_dir = root.list("/usr/local/bin").unwrap().unwrap();
    for name in payload::BINARIES {
        let entry = bin_dir.iter().find(|e| e.name == name).unwrap();
        assert_eq!(entry.mode & 0o7777, 0o755, "{name}");
        let bytes = root
            .read(&format!("/usr/local/bin/{name}"))
            .unwrap()
            .unwrap();
        assert_eq!(elf::why_not_aarch64(&bytes), None, "{name}");
        assert_eq!(bytes, std::fs::read(fx.bins.join(name)).unwrap(), "{name}");
    }
    assert_eq!(bin_dir.len(), 3);

    // Units, and the links that enable them (first boot enables the master where needed).
    assert!(
        payload::UNITS
            .iter()
            .any(|(name, _)| *name == "bramble-services.service"),
        "the service scheduler's unit is on every card"
    );
    for (name, text) in payload::UNITS {
        assert_eq!(
            root_text(&root, &format!("/etc/systemd/system/{name}")).as_deref(),
            Some(text)
        );
    }
    let wants = "/etc/systemd/system/multi-user.target.wants";
    let mut linked: Vec<(String, Option<String>)> = root
        .list(wants)
        .unwrap()
        .unwrap()
        .into_iter()
        .map(|e| {
            assert!(e.is_symlink(), "{}", e.name);
            let target = root.read_link(&format!("{wants}/{}", e.name)).unwrap();
            (e.name, target)
        })
        .collect();
    linked.sort();
    let expect = |n: &str, t: &str| (n.to_owned(), Some(t.to_owned()));
    assert_eq!(
        linked,
        vec![
            expect(
                "bramble-agent.service",
                "/etc/systemd/system/bramble-agent.service"
            ),
            expect(
                "bramble-firstboot.service",
                "/etc/systemd/system/bramble-firstboot.service"
            ),
            expect("cron.service", "/usr/lib/systemd/system/cron.service"),
            expect("ssh.service", "/usr/lib/systemd/system/ssh.service"),
        ]
    );

    // Certificates: CA certificate and node certificate and key, nothing else.
    let cluster_dir = root.list("/etc/bramble/cluster").unwrap().unwrap();
    let mut names: Vec<&str> = cluster_dir.iter().map(|e| e.name.as_str()).collect();
    names.sort();
    assert_eq!(names, ["ca.pem", "node.key", "node.pem"]);
    let key = cluster_dir.iter().find(|e| e.name == "node.key").unwrap();
    assert_eq!(key.mode & 0o7777, 0o600);
    // No file under /etc carries the CA key or the operator's or framework's credentials.
    let etc_dump = fx.dir.path().join("etc-dump");
    std::fs::create_dir_all(&etc_dump).unwrap();
    let (_, _, root_part) = layout(img);
    run(Command::new("debugfs")
        .arg("-R")
        .arg(format!("rdump /etc {}", etc_dump.display()))
        .arg(format!("{}?offset={}", img.display(), root_part.start)));
    let secrets: Vec<Vec<u8>> = ["ca.key", "operator.key", "operator.pem", "framework.key"]
        .iter()
        .map(|n| std::fs::read(fx.cluster.join(n)).unwrap())
        .collect();
    let mut checked = 0;
    for entry in walk(&etc_dump) {
        let bytes = std::fs::read(&entry).unwrap_or_default();
        for s in &secrets {
            assert!(
                !bytes.windows(s.len()).any(|w| w == s.as_slice()),
                "{} carries a secret",
                entry.display()
            );
        }
        assert_ne!(entry.file_name().unwrap(), "ca.key");
        checked += 1;
    }
    assert!(checked > 10, "walked {checked} files");

    // Configs, modules, users.
    let agent: toml::Table =
        toml::from_str(&root_text(&root, "/etc/bramble/agent.toml").unwrap()).unwrap();
    assert_eq!(agent["task_uids"].as_str(), Some("70000-70999"));
    let master: toml::Table =
        toml::from_str(&root_text(&root, "/etc/bramble/master.toml").unwrap()).unwrap();
    assert_eq!(master["name"].as_str(), Some("testshelf"));
    let modules = root_text(&root, "/etc/modules-load.d/bramble.conf").unwrap();
    // A Pi without network time starts its clock here, after the certificates were made.
    assert_eq!(
        root_text(&root, "/usr/lib/clock-epoch").as_deref(),
        Some("")
    );
    assert_eq!(modules.lines().filter(|l| l.trim() == "i2c-dev").count(), 1);
    assert_eq!(
        root_text(&root, "/usr/lib/sysusers.d/bramble.conf").as_deref(),
        Some(node::SYSUSERS_CONF)
    );
    assert_eq!(
        root_text(&root, "/etc/bramble/ssh_authorized_keys").as_deref(),
        Some(SSH_KEY)
    );
    // Untouched: the base's own files.
    assert!(root_text(&root, "/etc/fstab")
        .unwrap()
        .contains("PARTUUID=1234abcd-02 / ext4"));
    // Same tree after one build and after two.
    for p in [
        "/etc/bramble/agent.toml",
        "/etc/modules-load.d/bramble.conf",
        "/etc/bramble/image.toml",
    ] {
        assert_eq!(root_text(&root1, p), root_text(&root, p), "{p}");
    }

    // Both filesystems are clean.
    root.fsck().unwrap();
    fsck_vfat(img, boot, fx.dir.path());

    // inspect, as a library and as the command.
    let i = inspect::inspect(img).unwrap();
    assert_eq!(i.disk_id, "1234abcd");
    assert_eq!(i.partitions.len(), 2);
    assert_eq!(i.partitions[0].label, "bootfs");
    assert_eq!(i.partitions[1].label, "rootfs");
    assert_eq!(i.base.as_deref(), Some("Debian GNU/Linux 12 (bookworm)"));
    let b = i.bramble.as_ref().unwrap();
    assert_eq!(b.version.as_deref(), Some(env!("CARGO_PKG_VERSION")));
    assert_eq!(b.route.as_deref(), Some("raspios"));
    assert_eq!(b.binaries.len(), 3);
    assert!(
        b.binaries.iter().all(|x| x.arch == "aarch64"),
        "{:?}",
        b.binaries
    );
    assert_eq!(b.cluster_id.as_deref(), Some(fx.cluster_id.as_str()));
    assert_eq!(b.cluster_name.as_deref(), Some("testshelf"));
    assert!(b.ssh_key_installed);
    assert_eq!(i.settings.as_ref().unwrap().role, RoleSetting::Auto);
    assert_eq!(
        i.enabled_units,
        [
            "bramble-agent.service",
            "bramble-firstboot.service",
            "cron.service",
            "ssh.service"
        ]
    );
    assert!(i.boot.i2c_enabled && i.boot.memory_cgroup && i.boot.ssh_marker);
    let out = Command::new(env!("CARGO_BIN_EXE_bramble-image"))
        .args(["inspect", "--json"])
        .arg(img)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["bramble"]["cluster_id"], fx.cluster_id.as_str());
    assert_eq!(json["settings"]["role"], "auto");
    assert_eq!(json["disk_id"], "1234abcd");
    let human = Command::new(env!("CARGO_BIN_EXE_bramble-image"))
        .arg("inspect")
        .arg(img)
        .output()
        .unwrap();
    let human = String::from_utf8_lossy(&human.stdout);
    assert!(human.contains("role auto, cluster testshelf"), "{human}");

    // The release checksum is the image's.
    let side = std::fs::read_to_string(bramble_image::imagefile::sidecar(img, "sha256")).unwrap();
    assert_eq!(side, format!("{}  twice.img\n", twice.sha256));
    assert_eq!(
        bramble_image::imagefile::sha256_file(img).unwrap(),
        twice.sha256
    );

    first_boot_on_the_built_root(&fx, img, root_part);
}

/// Runs `bramble node firstboot` against the built root partition, extracted to a directory.
fn first_boot_on_the_built_root(fx: &Fixture, img: &Path, root_part: Partition) {
    if !nix_is_root() {
        eprintln!("SKIP first boot on the built image: needs root (chown to the bramble group)");
        return;
    }
    if Command::new("systemd-sysusers")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("SKIP first boot on the built image: systemd-sysusers missing");
        return;
    }
    let root = fx.dir.path().join("node-root");
    std::fs::create_dir_all(&root).unwrap();
    run(Command::new("debugfs")
        .arg("-R")
        .arg(format!("rdump / {}", root.display()))
        .arg(format!("{}?offset={}", img.display(), root_part.start)));
    let (f, boot, _) = open_parts(img);
    let boot_dir = root.join("boot/firmware");
    std::fs::write(
        boot_dir.join("bramble.toml"),
        boot_text(&f, boot, node::SETTINGS_FILE).unwrap(),
    )
    .unwrap();
    let opts = node::FirstbootOptions::for_root(&root);
    assert_eq!(opts.boot_dir, boot_dir);
    assert!(!opts.live);
    let mut asked = 0;
    let mut panel = |_: &bramble_firmware::DisplayConfig| {
        asked += 1;
        true
    };
    let report = node::firstboot(&opts, &mut panel).unwrap().unwrap();
    assert_eq!(asked, 1, "role auto asks the panel probe once");
    assert_eq!(report.role, "master");
    assert_eq!(report.hostname, "bramble-6071", "from the machine id");
    assert_eq!(report.ssh_keys_added, 1);
    assert_eq!(
        std::fs::read_to_string(root.join("etc/hostname")).unwrap(),
        "bramble-6071\n"
    );
    assert!(std::fs::read_to_string(root.join("etc/hosts"))
        .unwrap()
        .contains("127.0.1.1\tbramble-6071\n"));
    let wants = root.join("etc/systemd/system/multi-user.target.wants");
    for unit in ["bramble-master.service", "bramble-services.service"] {
        assert_eq!(
            std::fs::read_link(wants.join(unit)).unwrap(),
            Path::new("/etc/systemd/system").join(unit),
            "{unit} enabled on the master"
        );
    }
    assert_eq!(
        report.enabled_units,
        [
            "bramble-agent.service",
            "bramble-master.service",
            "bramble-services.service"
        ]
    );
    assert!(root.join("etc/bramble/master.toml").exists());
    let passwd = std::fs::read_to_string(root.join("etc/passwd")).unwrap();
    assert!(
        passwd.lines().any(|l| l.starts_with("bramble:")),
        "{passwd}"
    );
    // Tasks run as uids from task_uids, which no account may hold.
    assert!(
        !passwd.lines().any(|l| l.starts_with("bramble-task:")),
        "{passwd}"
    );
    let group = std::fs::read_to_string(root.join("etc/group")).unwrap();
    let i2c = group.lines().find(|l| l.starts_with("i2c:")).unwrap();
    assert!(i2c.ends_with(":bramble"), "{i2c}");
    assert_eq!(
        i2c.split(':').nth(2),
        Some("998"),
        "the base's i2c group is kept"
    );
    use std::os::unix::fs::MetadataExt;
    let key = std::fs::metadata(root.join("etc/bramble/cluster/node.key")).unwrap();
    assert_eq!(key.mode() & 0o777, 0o640);
    assert_eq!(Some(key.gid()), node::id_in(&group, "bramble"));
    assert_eq!(
        std::fs::read_to_string(root.join("root/.ssh/authorized_keys")).unwrap(),
        SSH_KEY
    );
    // Once only.
    assert!(node::firstboot(&opts, &mut |_| true).unwrap().is_none());

    // An agent node: role from bramble.toml, no probe, no master.
    std::fs::remove_file(root.join(node::DONE_MARKER)).unwrap();
    std::fs::write(
        boot_dir.join("bramble.toml"),
        node::settings_template("testshelf", RoleSetting::Agent, "shelf-3"),
    )
    .unwrap();
    let report = node::firstboot(&opts, &mut |_| panic!("role is given"))
        .unwrap()
        .unwrap();
    assert_eq!(
        (report.role.as_str(), report.hostname.as_str()),
        ("agent", "shelf-3")
    );
    assert_eq!(report.ssh_keys_added, 0, "the key is there already");
    // Links point at absolute paths inside the card: look at the links, not through them.
    assert!(std::fs::symlink_metadata(wants.join("bramble-master.service")).is_err());
    assert!(
        std::fs::symlink_metadata(wants.join("bramble-services.service")).is_err(),
        "no service scheduler on an agent node"
    );
    assert_eq!(report.enabled_units, ["bramble-agent.service"]);
    assert!(!root.join("etc/bramble/master.toml").exists());
    assert!(std::fs::symlink_metadata(wants.join("bramble-agent.service")).is_ok());
}

fn nix_is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|e| e == "0"))
        })
        .unwrap_or(false)
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let ft = e.file_type().unwrap();
        if ft.is_dir() {
            out.extend(walk(&e.path()));
        } else if ft.is_file() {
            out.push(e.path());
        }
    }
    out
}

#[test]
fn flashing_to_a_file_writes_verifies_and_sets_that_cards_settings() {
    if !have_tools() {
        return;
    }
    let fx = fixture(BOOKWORM);
    let built = bake::build(&fx.options(&fx.base, "bramble.img")).unwrap();
    let card = fx.dir.path().join("card.bin");
    let report = flash::flash(&FlashOptions {
        image: built.out.clone(),
        device: card.clone(),
        role: Some(RoleSetting::Agent),
        hostname: Some("shelf-2".into()),
        force: false,
        progress: false,
    })
    .unwrap();
    assert_eq!(report.bytes, built.bytes);
    assert_eq!(report.sha256, built.sha256);

    let (f, boot, root) = open_parts(&card);
    let settings = node::parse_settings(
        Path::new("bramble.toml"),
        &boot_text(&f, boot, node::SETTINGS_FILE).unwrap(),
    )
    .unwrap();
    assert_eq!(settings.role, RoleSetting::Agent);
    assert_eq!(settings.hostname, "shelf-2");
    assert_eq!(settings.cluster_name, "testshelf");
    fsck_vfat(&card, boot, fx.dir.path());
    root.fsck().unwrap();
    // Everything outside the boot partition is byte for byte the image.
    let a = std::fs::read(&built.out).unwrap();
    let c = std::fs::read(&card).unwrap();
    assert_eq!(a.len(), c.len());
    let boot_range = boot.start as usize..(boot.start + boot.len) as usize;
    assert_eq!(a[..boot_range.start], c[..boot_range.start]);
    assert_eq!(a[boot_range.end..], c[boot_range.end..]);

    // A bad hostname is refused before anything is written.
    let untouched = fx.dir.path().join("untouched.bin");
    let err = flash::flash(&FlashOptions {
        image: built.out.clone(),
        device: untouched.clone(),
        role: None,
        hostname: Some("bad name".into()),
        force: false,
        progress: false,
    })
    .unwrap_err();
    assert_says(&err.to_string(), &["not a hostname"]);
    assert!(!untouched.exists());
}

/// The block device holding `/`, from /proc/mounts (None in a container without one).
fn root_block_device() -> Option<PathBuf> {
    let mounts = std::fs::read_to_string("/proc/mounts").ok()?;
    mounts.lines().find_map(|l| {
        let mut f = l.split_whitespace();
        let (src, at) = (f.next()?, f.next()?);
        let p = PathBuf::from(src);
        use std::os::unix::fs::FileTypeExt;
        (at == "/" && std::fs::metadata(&p).ok()?.file_type().is_block_device()).then_some(p)
    })
}

#[test]
fn flash_refuses_the_mounted_root_disk_even_when_forced() {
    let Some(dev) = root_block_device() else {
        eprintln!("SKIP: / is not on a block device here");
        return;
    };
    let view = HostView::system();
    for force in [false, true] {
        let err = flash::check_device(&dev, force, &view)
            .unwrap_err()
            .to_string();
        assert_says(
            &err,
            &[
                "refusing to write",
                "in use",
                "mounted at /",
                "holds this machine's root filesystem",
            ],
        );
    }
}

#[test]
fn flash_refuses_a_non_removable_disk_unless_forced() {
    let view = HostView::system();
    // An idle fixed disk: not mounted, not root, removable=0 (loop devices qualify).
    let candidate = std::fs::read_dir("/sys/block")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let path = PathBuf::from("/dev").join(&name);
            (devices::refusals(&name, &view) == vec![Refusal::NotRemovable] && path.exists())
                .then_some(path)
        })
        .next();
    let Some(dev) = candidate else {
        eprintln!("SKIP: no idle non-removable block device here");
        return;
    };
    let err = flash::check_device(&dev, false, &view)
        .unwrap_err()
        .to_string();
    assert_says(&err, &["not a removable disk", "--force"]);
    // Forced, it passes the checks (nothing is written here).
    assert!(matches!(
        flash::check_device(&dev, true, &view),
        Ok(Target::Block { .. })
    ));
}

#[test]
fn a_base_older_than_bookworm_is_refused_with_the_reason_and_no_output() {
    if !have_tools() {
        return;
    }
    let fx = fixture(BULLSEYE);
    let opts = fx.options(&fx.base, "old.img");
    let err = bake::build(&opts).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, BuildError::Base(_)), "{msg}");
    assert_says(&msg, &["Debian 11 (bullseye)", "glibc 2.34", "Bookworm"]);
    assert!(!opts.out.exists(), "the half-built output is removed");
    let out = Command::new(env!("CARGO_BIN_EXE_bramble-image"))
        .arg("build")
        .arg("--cluster")
        .arg(&fx.cluster)
        .arg("--base")
        .arg(&fx.base)
        .arg("--binaries")
        .arg(&fx.bins)
        .arg("--out")
        .arg(&opts.out)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_says(&stderr, &["Bookworm (Debian 12) or newer"]);
}

#[test]
fn host_binaries_and_secrets_are_refused_before_the_base_is_touched() {
    if !have_tools() {
        return;
    }
    let fx = fixture(BOOKWORM);
    let x86 = fx.dir.path().join("x86-bin");
    std::fs::create_dir_all(&x86).unwrap();
    let host = std::fs::read(env!("CARGO_BIN_EXE_bramble-image")).unwrap();
    for b in payload::BINARIES {
        std::fs::write(x86.join(b), &host[..4096]).unwrap();
    }
    let mut opts = fx.options(&fx.base, "x86.img");
    opts.binaries = Some(x86);
    let err = bake::build(&opts).unwrap_err().to_string();
    assert_says(&err, &["not an aarch64 executable"]);
    assert!(!opts.out.exists());

    // The secret check compares contents, whatever the path.
    let ca_key = std::fs::read(fx.cluster.join("ca.key")).unwrap();
    let sneaky = [bramble_image::ext4::Edit::file(
        "/etc/bramble/extra.pem",
        ca_key,
        0o644,
    )];
    let err = payload::check_no_secrets(&sneaky, &fx.cluster)
        .unwrap_err()
        .to_string();
    assert_says(&err, &["ca.key"]);
    let op = std::fs::read(fx.cluster.join("operator.pem")).unwrap();
    let err = payload::check_no_secrets(
        &[bramble_image::ext4::Edit::file("/x", op, 0o644)],
        &fx.cluster,
    )
    .unwrap_err()
    .to_string();
    assert_says(&err, &["operator.pem"]);

    // The base is only ever read.
    let before = bramble_image::imagefile::sha256_file(&fx.base).unwrap();
    bake::build(&fx.options(&fx.base, "ok.img")).unwrap();
    assert_eq!(
        bramble_image::imagefile::sha256_file(&fx.base).unwrap(),
        before
    );
    let mut same = fx.options(&fx.base, "x");
    same.out = fx.base.clone();
    assert!(bake::build(&same)
        .unwrap_err()
        .to_string()
        .contains("base image itself"));
}

#[test]
fn debian_route_without_its_recipe_says_what_is_missing() {
    let fx_dir = tempfile::tempdir().unwrap();
    let cluster = fx_dir.path().join("cluster");
    bramble_proto::identity::init_cluster(&cluster, "c").unwrap();
    let bins = binaries(fx_dir.path());
    let workspace = fx_dir.path().join("ws");
    std::fs::create_dir_all(&workspace).unwrap();
    let err = bake::build(&BuildOptions {
        cluster,
        out: fx_dir.path().join("d.img"),
        base: None,
        debian: true,
        ssh_key: None,
        role: Some(RoleSetting::Master),
        xz: false,
        binaries: Some(bins),
        workspace,
    })
    .unwrap_err()
    .to_string();
    assert_says(&err, &["image/debian/mkbase.sh", "missing"]);
}

#[test]
fn debian_route_puts_firmware_settings_where_raspi_firmware_keeps_them() {
    if !have_tools() {
        return;
    }
    let fx = fixture(BOOKWORM);
    // A stand-in for image/debian/mkbase.sh: the recipe's contract is "write a Pi-like
    // base image to $1"; the real one (mmdebstrap) is exercised by the QEMU boot test.
    let workspace = fx.dir.path().join("ws");
    let script = workspace.join("image/debian/mkbase.sh");
    write(
        &script,
        &format!("#!/bin/sh\nset -e\ncp {} \"$1\"\n", fx.base.display()),
    );
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    let mut opts = fx.options(&fx.base, "debian.img");
    opts.base = None;
    opts.debian = true;
    opts.workspace = workspace;
    opts.role = Some(RoleSetting::Master);
    let built = bake::build(&opts).unwrap();
    // Again, with a recipe whose "base" is the first result: nothing may be added twice.
    write(
        &script,
        &format!("#!/bin/sh\nset -e\ncp {} \"$1\"\n", built.out.display()),
    );
    opts.out = fx.dir.path().join("debian2.img");
    let rebuilt = bake::build(&opts).unwrap();
    let (_, _, root_first) = open_parts(&built.out);
    let first_custom = root_text(&root_first, "/etc/default/raspi-firmware-custom");
    let (f_first, boot_first, _) = open_parts(&built.out);
    let first_config = boot_text(&f_first, boot_first, "config.txt");

    let (f, boot, root) = open_parts(&rebuilt.out);
    assert_eq!(boot_text(&f, boot, "config.txt"), first_config);
    let custom = root_text(&root, "/etc/default/raspi-firmware-custom").unwrap();
    assert_eq!(
        custom,
        "\n[all]\n# Bramble: the I2C bus on the header, for the front panel (SSD1306)\ndtparam=i2c_arm=on\n"
    );
    assert_eq!(
        root_text(&root, "/etc/default/raspi-extra-cmdline").as_deref(),
        Some("cgroup_enable=memory cgroup_memory=1\n")
    );
    assert_eq!(first_custom.as_deref(), Some(custom.as_str()));
    // Until the first kernel update regenerates them, the boot files carry the settings too.
    let i = inspect::inspect(&rebuilt.out).unwrap();
    assert!(i.boot.i2c_enabled && i.boot.memory_cgroup);
    assert_eq!(i.bramble.unwrap().route.as_deref(), Some("debian"));
    assert_eq!(i.settings.unwrap().role, RoleSetting::Master);
    let settings = boot_text(&f, boot, node::SETTINGS_FILE).unwrap();
    assert!(settings.contains("role = \"master\""), "{settings}");
}

//! The text edits an image needs, as pure functions: each returns the new text, and applied
//! to its own output returns it unchanged (building on a built image adds nothing twice).
//!
//! `config.txt` is read by the Pi's firmware top to bottom; a `[filter]` line (`[pi4]`,
//! `[cm5]`, ...) makes the lines after it apply only to matching boards until the next one,
//! and `[all]` resets. Lines before the first filter apply to every board. `cmdline.txt` is
//! one line of kernel arguments; Pi OS's own first boot rewrites its `root=` and resize parts,
//! so we only ever append tokens and leave every other byte as it was.

/// The device-tree setting that enables the I2C bus on the header (the OLED panel).
pub const I2C_DTPARAM: &str = "dtparam=i2c_arm=on";
/// Kernel arguments enabling the memory cgroup (the agent limits task memory with it).
pub const CGROUP_ARGS: [&str; 2] = ["cgroup_enable=memory", "cgroup_memory=1"];

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EditError {
    #[error(
        "cmdline.txt has {0} lines; the firmware reads only the first, so Bramble's kernel \
         arguments would be lost: join it into one line"
    )]
    CmdlineLines(usize),
    #[error("cmdline.txt is empty; refusing to guess the kernel arguments of this base")]
    CmdlineEmpty,
}

/// Whether `line` (trimmed) sets `setting` (`dtparam=i2c_arm=on`, also inside a comma list
/// such as `dtparam=i2c_arm=on,spi=on`).
fn sets(line: &str, setting: &str) -> bool {
    let line = line.trim();
    let Some((key, value)) = setting.split_once('=') else {
        return line == setting;
    };
    let Some(values) = line.strip_prefix(key).and_then(|r| r.strip_prefix('=')) else {
        return false;
    };
    values.split(',').any(|v| v.trim() == value)
}

/// `config` with `setting` in force for every board: present already under `[all]` (or
/// before any filter, when `top_is_all`), else appended under `[all]`. `top_is_all` is false
/// for fragments appended to a generated file (Debian's `raspi-firmware-custom`).
pub fn ensure_config_setting(config: &str, setting: &str, why: &str, top_is_all: bool) -> String {
    let mut in_all = top_is_all;
    let mut last_filter_all = top_is_all;
    for line in config.lines() {
        let t = line.trim();
        if t.starts_with('[') && t.ends_with(']') {
            in_all = t.eq_ignore_ascii_case("[all]");
            last_filter_all = in_all;
            continue;
        }
        if in_all && !t.starts_with('#') && sets(t, setting) {
            return config.to_owned();
        }
    }
    let mut out = config.to_owned();
    if !out.is_empty() && !out.ends_with('\n') {
        out.push('\n');
    }
    if !last_filter_all {
        out.push_str("\n[all]\n");
    }
    out.push_str(&format!("# {why}\n{setting}\n"));
    out
}

/// `cmdline` (one line) with each of `args` appended unless a token already equals it.
pub fn ensure_cmdline_args(cmdline: &str, args: &[&str]) -> Result<String, EditError> {
    let lines: Vec<&str> = cmdline.lines().filter(|l| !l.trim().is_empty()).collect();
    match lines.len() {
        0 => return Err(EditError::CmdlineEmpty),
        1 => {}
        n => return Err(EditError::CmdlineLines(n)),
    }
    let missing = missing_args(lines[0], args);
    if missing.is_empty() {
        return Ok(cmdline.to_owned());
    }
    // Insert before the line's end, keeping whatever followed it (usually one '\n').
    let end = cmdline
        .find(lines[0])
        .map(|start| start + lines[0].trim_end().len())
        .unwrap_or(cmdline.len());
    let (head, tail) = cmdline.split_at(end);
    Ok(format!("{head} {}{tail}", missing.join(" ")))
}

/// Debian's `/etc/default/raspi-extra-cmdline`: arguments the raspi-firmware hook adds to the
/// `cmdline.txt` it regenerates on every kernel update. May be empty or absent.
pub fn ensure_extra_cmdline(text: &str, args: &[&str]) -> String {
    let missing = missing_args(text, args);
    if missing.is_empty() {
        return text.to_owned();
    }
    let body = text.trim_end();
    if body.is_empty() {
        format!("{}\n", missing.join(" "))
    } else {
        format!("{body} {}\n", missing.join(" "))
    }
}

/// The `args` that are not already a whitespace-separated token of `text`, in order.
fn missing_args<'a>(text: &str, args: &[&'a str]) -> Vec<&'a str> {
    let present: Vec<&str> = text.split_whitespace().collect();
    args.iter()
        .copied()
        .filter(|a| !present.contains(a))
        .collect()
}

/// A one-name-per-line list (`/etc/modules-load.d/*.conf`) with `item` in it.
pub fn ensure_line(text: &str, item: &str) -> String {
    if text.lines().any(|l| l.trim() == item) {
        return text.to_owned();
    }
    let mut out = text.to_owned();
    if !out.is_empty() && !out.ends_with('\n') {
        out.push('\n');
    }
    out.push_str(item);
    out.push('\n');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Raspberry Pi OS Bookworm's `config.txt`, as shipped.
    const PI_OS_CONFIG: &str = include_str!("../tests/data/pi-os-config.txt");

    const WHY: &str = "Bramble: I2C for the front panel";

    #[test]
    fn i2c_goes_under_the_final_all_section_once() {
        let once = ensure_config_setting(PI_OS_CONFIG, I2C_DTPARAM, WHY, true);
        assert!(once.starts_with(PI_OS_CONFIG), "nothing before is touched");
        assert!(once.ends_with("[all]\n# Bramble: I2C for the front panel\ndtparam=i2c_arm=on\n"));
        assert_eq!(ensure_config_setting(&once, I2C_DTPARAM, WHY, true), once);
    }

    #[test]
    fn i2c_in_a_board_filter_does_not_count() {
        let text = "[pi4]\ndtparam=i2c_arm=on\n";
        let out = ensure_config_setting(text, I2C_DTPARAM, WHY, true);
        assert!(
            out.ends_with("\n[all]\n# Bramble: I2C for the front panel\ndtparam=i2c_arm=on\n"),
            "{out}"
        );
        assert_eq!(out.matches("[all]").count(), 1);
        assert_eq!(ensure_config_setting(&out, I2C_DTPARAM, WHY, true), out);
    }

    #[test]
    fn i2c_already_on_for_all_boards_is_left_alone() {
        for text in [
            "dtparam=i2c_arm=on\n[pi4]\nx=1\n",
            "[pi4]\nx=1\n[all]\ndtparam=audio=on,i2c_arm=on\n",
        ] {
            assert_eq!(ensure_config_setting(text, I2C_DTPARAM, WHY, true), text);
        }
    }

    #[test]
    fn fragment_for_a_generated_file_opens_its_own_all_section() {
        let out = ensure_config_setting("", I2C_DTPARAM, WHY, false);
        assert_eq!(
            out,
            "\n[all]\n# Bramble: I2C for the front panel\ndtparam=i2c_arm=on\n"
        );
        assert_eq!(ensure_config_setting(&out, I2C_DTPARAM, WHY, false), out);
    }

    #[test]
    fn cmdline_gets_cgroup_args_appended_once_and_nothing_else_changes() {
        let pi = "console=serial0,115200 console=tty1 root=PARTUUID=1234abcd-02 rootfstype=ext4 fsck.repair=yes rootwait quiet init=/usr/lib/raspberrypi-sys-mods/firstboot\n";
        let once = ensure_cmdline_args(pi, &CGROUP_ARGS).unwrap();
        assert_eq!(
            once,
            format!("{} cgroup_enable=memory cgroup_memory=1\n", pi.trim_end())
        );
        assert_eq!(ensure_cmdline_args(&once, &CGROUP_ARGS).unwrap(), once);
        let no_newline = "root=PARTUUID=1-02 rootwait";
        assert_eq!(
            ensure_cmdline_args(no_newline, &CGROUP_ARGS).unwrap(),
            "root=PARTUUID=1-02 rootwait cgroup_enable=memory cgroup_memory=1"
        );
        let half = "root=x cgroup_memory=1\n";
        assert_eq!(
            ensure_cmdline_args(half, &CGROUP_ARGS).unwrap(),
            "root=x cgroup_memory=1 cgroup_enable=memory\n"
        );
    }

    #[test]
    fn cmdline_with_two_lines_or_none_is_refused() {
        assert_eq!(
            ensure_cmdline_args("a\nb\n", &CGROUP_ARGS),
            Err(EditError::CmdlineLines(2))
        );
        assert_eq!(
            ensure_cmdline_args(" \n", &CGROUP_ARGS),
            Err(EditError::CmdlineEmpty)
        );
    }

    #[test]
    fn extra_cmdline_and_module_lists_are_idempotent() {
        let once = ensure_extra_cmdline("", &CGROUP_ARGS);
        assert_eq!(once, "cgroup_enable=memory cgroup_memory=1\n");
        assert_eq!(ensure_extra_cmdline(&once, &CGROUP_ARGS), once);
        assert_eq!(
            ensure_extra_cmdline("quiet", &CGROUP_ARGS),
            "quiet cgroup_enable=memory cgroup_memory=1\n"
        );
        let m = ensure_line("", "i2c-dev");
        assert_eq!(m, "i2c-dev\n");
        assert_eq!(ensure_line(&m, "i2c-dev"), m);
        assert_eq!(ensure_line("snd\n", "i2c-dev"), "snd\ni2c-dev\n");
    }
}

//! The ext4 root partition, read and edited with e2fsprogs (`debugfs`, `dumpe2fs`,
//! `e2fsck`) addressing the partition inside the image as `IMAGE?offset=N`: no mount, no
//! loop device, no copy of a multi-gigabyte partition.
//!
//! `debugfs -w` exits 0 even when a command of its batch fails, and a failed command can
//! leave the filesystem inconsistent (a refused `symlink` over an existing name leaks an
//! inode). So edits are planned against a listing of the directories involved and issued
//! only when they cannot fail (`rm` before `write`, `mkdir` only for missing directories);
//! any error line on stderr fails the edit, and `e2fsck -fn` must find the result clean.

use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::part::Partition;

#[derive(Debug, thiserror::Error)]
pub enum Ext4Error {
    #[error("running {tool}: {source} (install e2fsprogs)")]
    Spawn {
        tool: &'static str,
        source: std::io::Error,
    },
    #[error("{tool} on the root partition: {detail}")]
    Tool { tool: &'static str, detail: String },
    #[error("root partition: {0}")]
    Layout(String),
    #[error("root partition: staging {path}: {source}")]
    Stage {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "root partition: {need_mib} MiB needed but only {free_mib} MiB free; use a base image \
         whose root partition has more room"
    )]
    NoSpace { need_mib: u64, free_mib: u64 },
    #[error("root partition: e2fsck -fn finds errors after editing (exit {code}):\n{output}")]
    Fsck { code: i32, output: String },
}

/// Facts from the superblock.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FsInfo {
    pub label: String,
    pub block_size: u64,
    pub blocks: u64,
    pub free_blocks: u64,
}

impl FsInfo {
    pub fn free_bytes(&self) -> u64 {
        self.free_blocks * self.block_size
    }
}

/// One directory entry from `ls -p`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub name: String,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub size: u64,
}

impl Entry {
    pub fn is_dir(&self) -> bool {
        self.mode & 0o170000 == 0o040000
    }
    pub fn is_symlink(&self) -> bool {
        self.mode & 0o170000 == 0o120000
    }
    pub fn is_file(&self) -> bool {
        self.mode & 0o170000 == 0o100000
    }
}

/// A wanted state of one path. Applying the same edits twice gives the same tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Edit {
    Dir {
        path: String,
        mode: u32,
    },
    File {
        path: String,
        contents: Vec<u8>,
        mode: u32,
        uid: u32,
        gid: u32,
    },
    Symlink {
        path: String,
        target: String,
    },
    Remove {
        path: String,
    },
}

impl Edit {
    pub fn path(&self) -> &str {
        match self {
            Edit::Dir { path, .. }
            | Edit::File { path, .. }
            | Edit::Symlink { path, .. }
            | Edit::Remove { path } => path,
        }
    }

    /// A root-owned file.
    pub fn file(path: &str, contents: impl Into<Vec<u8>>, mode: u32) -> Edit {
        Edit::File {
            path: path.to_owned(),
            contents: contents.into(),
            mode,
            uid: 0,
            gid: 0,
        }
    }
}

/// The root partition of one image file.
pub struct RootFs {
    spec: String,
    info: FsInfo,
}

impl RootFs {
    /// Opens partition `part` of `image`, checking it is ext2/3/4 and fits its partition.
    pub fn open(image: &Path, part: Partition) -> Result<RootFs, Ext4Error> {
        let spec = format!("{}?offset={}", image.display(), part.start);
        if spec.chars().any(char::is_whitespace) {
            return Err(Ext4Error::Layout(format!(
                "image path {} contains whitespace, which debugfs cannot take",
                image.display()
            )));
        }
        let out = run("dumpe2fs", &["-h", &spec])?;
        if !out.status.success() {
            return Err(Ext4Error::Layout(format!(
                "partition {} is not an ext4 filesystem: {}",
                part.number,
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
        let text = String::from_utf8_lossy(&out.stdout);
        let field = |name: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
                .map(|v| v.trim().to_owned())
        };
        let num = |name: &str| {
            field(name)
                .and_then(|v| v.parse::<u64>().ok())
                .ok_or_else(|| Ext4Error::Layout(format!("dumpe2fs shows no {name:?}")))
        };
        let info = FsInfo {
            label: field("Filesystem volume name")
                .filter(|l| l != "<none>")
                .unwrap_or_default(),
            block_size: num("Block size")?,
            blocks: num("Block count")?,
            free_blocks: num("Free blocks")?,
        };
        if info.blocks * info.block_size > part.len {
            return Err(Ext4Error::Layout(format!(
                "the filesystem ({} bytes) is larger than its partition ({} bytes)",
                info.blocks * info.block_size,
                part.len
            )));
        }
        Ok(RootFs { spec, info })
    }

    pub fn info(&self) -> &FsInfo {
        &self.info
    }

    /// The contents of the file at `path`, `None` when there is none.
    pub fn read(&self, path: &str) -> Result<Option<Vec<u8>>, Ext4Error> {
        check_path(path)?;
        let out = run_debugfs(&["-R", &format!("cat {path}"), &self.spec])?;
        let errors = error_lines(&out.stderr);
        if errors.iter().any(|l| l.contains("File not found")) {
            return Ok(None);
        }
        if !errors.is_empty() {
            return Err(tool_err(
                "debugfs",
                format!("cat {path}: {}", errors.join("; ")),
            ));
        }
        Ok(Some(out.stdout))
    }

    /// Like [`RootFs::read`], following symlinks (absolute or relative) at the last
    /// component, as Debian's `/etc/os-release -> ../usr/lib/os-release`.
    pub fn read_resolving(&self, path: &str) -> Result<Option<Vec<u8>>, Ext4Error> {
        let mut path = path.to_owned();
        for _ in 0..8 {
            let (parent, name) = split(&path);
            let entry = self
                .list(&parent)?
                .and_then(|entries| entries.into_iter().find(|e| e.name == name));
            match entry {
                None => return Ok(None),
                Some(e) if e.is_symlink() => {
                    let Some(target) = self.read_link(&path)? else {
                        return Ok(None);
                    };
                    path = resolve(&parent, &target);
                }
                Some(_) => return self.read(&path),
            }
        }
        Err(Ext4Error::Layout(format!(
            "{path}: too many levels of symlinks"
        )))
    }

    /// The entries of directory `dir` (without `.` and `..`), `None` when it does not exist.
    pub fn list(&self, dir: &str) -> Result<Option<Vec<Entry>>, Ext4Error> {
        Ok(self.list_many(&[dir.to_owned()])?.remove(dir).flatten())
    }

    /// Lists several directories in one debugfs run.
    pub fn list_many(
        &self,
        dirs: &[String],
    ) -> Result<BTreeMap<String, Option<Vec<Entry>>>, Ext4Error> {
        let mut script = String::new();
        for d in dirs {
            check_path(d)?;
            script.push_str(&format!("ls -p {d}\n"));
        }
        let out = run_batch(&self.spec, &script, false)?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        // debugfs echoes each command as "debugfs: CMD"; a missing directory prints nothing
        // on stdout (its error goes to stderr), an existing one at least "." and "..".
        let mut sections: BTreeMap<String, Option<Vec<Entry>>> = BTreeMap::new();
        let mut current: Option<String> = None;
        for line in stdout.lines() {
            if let Some(cmd) = line.strip_prefix("debugfs: ls -p ") {
                current = Some(cmd.trim().to_owned());
                sections.insert(cmd.trim().to_owned(), None);
                continue;
            }
            let (Some(dir), Some(entry)) = (current.as_ref(), parse_ls_line(line)) else {
                continue;
            };
            let list = sections
                .entry(dir.clone())
                .or_default()
                .get_or_insert_with(Vec::new);
            if entry.name != "." && entry.name != ".." {
                list.push(entry);
            }
        }
        for d in dirs {
            sections.entry(d.clone()).or_insert(None);
        }
        let errors: Vec<String> = error_lines(&out.stderr)
            .into_iter()
            .filter(|l| !l.contains("File not found"))
            .collect();
        if !errors.is_empty() {
            return Err(tool_err("debugfs", errors.join("; ")));
        }
        Ok(sections)
    }

    /// The target of the symlink at `path`.
    pub fn read_link(&self, path: &str) -> Result<Option<String>, Ext4Error> {
        check_path(path)?;
        let out = run_debugfs(&["-R", &format!("stat {path}"), &self.spec])?;
        let text = String::from_utf8_lossy(&out.stdout);
        Ok(text.lines().find_map(|l| {
            let v = l.trim().strip_prefix("Fast link dest:")?.trim();
            Some(v.trim_matches('"').to_owned())
        }))
    }

    /// Brings the tree to the state `edits` describe, then checks it with `e2fsck -fn`.
    pub fn apply(&self, edits: &[Edit]) -> Result<(), Ext4Error> {
        let staging = tempfile::tempdir().map_err(|source| Ext4Error::Stage {
            path: std::env::temp_dir(),
            source,
        })?;
        let script = self.plan(edits, staging.path())?;
        if !script.is_empty() {
            run_batch(&self.spec, &script, true)?;
        }
        self.fsck()
    }

    /// `e2fsck -fn`: a full, read-only check.
    pub fn fsck(&self) -> Result<(), Ext4Error> {
        let out = run("e2fsck", &["-fn", &self.spec])?;
        if out.status.success() {
            return Ok(());
        }
        Err(Ext4Error::Fsck {
            code: out.status.code().unwrap_or(-1),
            output: format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        })
    }

    /// The debugfs script for `edits`, staging file contents under `staging`.
    fn plan(&self, edits: &[Edit], staging: &Path) -> Result<String, Ext4Error> {
        if staging.to_string_lossy().chars().any(char::is_whitespace) {
            return Err(Ext4Error::Layout(format!(
                "temp dir {} contains whitespace; set TMPDIR",
                staging.display()
            )));
        }
        let mut dirs: BTreeSet<String> = BTreeSet::new();
        for e in edits {
            check_path(e.path())?;
            for a in ancestors(e.path()) {
                dirs.insert(a);
            }
            if let Edit::Dir { path, .. } = e {
                dirs.insert(path.clone());
            }
        }
        let dirs: Vec<String> = dirs.into_iter().collect();
        let listing = self.list_many(&dirs)?;
        let entry_of = |path: &str| -> Option<&Entry> {
            let (parent, name) = split(path);
            listing
                .get(&parent)?
                .as_ref()?
                .iter()
                .find(|e| e.name == name)
        };

        // Room: every file written takes whole blocks; those it replaces are freed first.
        let blocks = |len: u64| len.div_ceil(self.info.block_size) + 1;
        let (mut need, mut freed) = (0u64, 0u64);
        for e in edits {
            if let Edit::File { contents, .. } = e {
                need += blocks(contents.len() as u64);
                if let Some(old) = entry_of(e.path()).filter(|o| o.is_file()) {
                    freed += blocks(old.size);
                }
            }
        }
        if need > self.info.free_blocks + freed {
            let mib = |b: u64| (b * self.info.block_size).div_ceil(1 << 20);
            return Err(Ext4Error::NoSpace {
                need_mib: mib(need),
                free_mib: mib(self.info.free_blocks + freed),
            });
        }

        let mut script = String::new();
        // Directories shallowest first, so parents exist before children.
        let mut by_depth = dirs.clone();
        by_depth.sort_by_key(|d| (d.matches('/').count(), d.clone()));
        for d in &by_depth {
            if d == "/" {
                continue;
            }
            match entry_of(d) {
                Some(e) if e.is_dir() => {}
                Some(_) => {
                    return Err(Ext4Error::Layout(format!(
                        "{d} exists and is not a directory (a symlink in the base?)"
                    )))
                }
                None => script.push_str(&format!("mkdir {d}\n")),
            }
        }
        for (i, e) in edits.iter().enumerate() {
            let existing = entry_of(e.path());
            if existing.is_some_and(Entry::is_dir) && !matches!(e, Edit::Dir { .. }) {
                return Err(Ext4Error::Layout(format!(
                    "{} is a directory in the base; refusing to replace it",
                    e.path()
                )));
            }
            match e {
                Edit::Dir { path, mode } => {
                    script.push_str(&format!("sif {path} mode 0{:o}\n", 0o040000 | mode));
                }
                Edit::File {
                    path,
                    contents,
                    mode,
                    uid,
                    gid,
                } => {
                    let local = staging.join(format!("f{i}"));
                    std::fs::write(&local, contents).map_err(|source| Ext4Error::Stage {
                        path: local.clone(),
                        source,
                    })?;
                    if existing.is_some() {
                        script.push_str(&format!("rm {path}\n"));
                    }
                    let (parent, name) = split(path);
                    script.push_str(&format!("cd {parent}\n"));
                    script.push_str(&format!("write {} {name}\n", local.display()));
                    script.push_str(&format!("sif {path} mode 0{:o}\n", 0o100000 | mode));
                    script.push_str(&format!("sif {path} uid {uid}\nsif {path} gid {gid}\n"));
                }
                Edit::Symlink { path, target } => {
                    check_path(target)?;
                    if existing.is_some() {
                        script.push_str(&format!("rm {path}\n"));
                    }
                    script.push_str(&format!("symlink {path} {target}\n"));
                }
                Edit::Remove { path } => {
                    if existing.is_some() {
                        script.push_str(&format!("rm {path}\n"));
                    }
                }
            }
        }
        Ok(script)
    }
}

/// `/a/b/c` → `["/", "/a", "/a/b"]`.
fn ancestors(path: &str) -> Vec<String> {
    let mut out = vec!["/".to_owned()];
    let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
    for i in 1..parts.len() {
        out.push(format!("/{}", parts[..i].join("/")));
    }
    out
}

/// `target` of a symlink in directory `dir`, as an absolute normalised path.
fn resolve(dir: &str, target: &str) -> String {
    let joined = if target.starts_with('/') {
        target.to_owned()
    } else {
        format!("{dir}/{target}")
    };
    let mut parts: Vec<&str> = Vec::new();
    for p in joined.split('/') {
        match p {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            p => parts.push(p),
        }
    }
    format!("/{}", parts.join("/"))
}

fn split(path: &str) -> (String, String) {
    match path.rsplit_once('/') {
        Some(("", name)) => ("/".to_owned(), name.to_owned()),
        Some((parent, name)) => (parent.to_owned(), name.to_owned()),
        None => ("/".to_owned(), path.to_owned()),
    }
}

/// Paths go into a debugfs script unquoted: absolute, plain, no whitespace or `..`.
fn check_path(path: &str) -> Result<(), Ext4Error> {
    let ok = path.starts_with('/')
        && !path
            .chars()
            .any(|c| c.is_whitespace() || c == '"' || c.is_control())
        && !path.split('/').any(|p| p == "..");
    if ok {
        Ok(())
    } else {
        Err(Ext4Error::Layout(format!("unsupported path {path:?}")))
    }
}

/// `/inode/mode/uid/gid/name/size/` (debugfs `ls -p`).
fn parse_ls_line(line: &str) -> Option<Entry> {
    let fields: Vec<&str> = line.strip_prefix('/')?.split('/').collect();
    if fields.len() < 6 {
        return None;
    }
    Some(Entry {
        mode: u32::from_str_radix(fields[1], 8).ok()?,
        uid: fields[2].parse().ok()?,
        gid: fields[3].parse().ok()?,
        name: fields[4].to_owned(),
        size: fields[5].parse().unwrap_or(0),
    })
}

fn tool_err(tool: &'static str, detail: String) -> Ext4Error {
    Ext4Error::Tool { tool, detail }
}

/// Stderr lines that are not debugfs's version banner.
fn error_lines(stderr: &[u8]) -> Vec<String> {
    String::from_utf8_lossy(stderr)
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with("debugfs ") && !l.starts_with("dumpe2fs "))
        .map(str::to_owned)
        .collect()
}

fn run(tool: &'static str, args: &[&str]) -> Result<std::process::Output, Ext4Error> {
    Command::new(tool)
        .args(args)
        .env("DEBUGFS_PAGER", "__none__")
        .env("PAGER", "__none__")
        .output()
        .map_err(|source| Ext4Error::Spawn { tool, source })
}

fn run_debugfs(args: &[&str]) -> Result<std::process::Output, Ext4Error> {
    run("debugfs", args)
}

/// Runs `script` through debugfs (`-w` when `write`); any error line fails it.
fn run_batch(spec: &str, script: &str, write: bool) -> Result<std::process::Output, Ext4Error> {
    let mut file = tempfile::NamedTempFile::new().map_err(|source| Ext4Error::Stage {
        path: std::env::temp_dir(),
        source,
    })?;
    std::io::Write::write_all(&mut file, script.as_bytes()).map_err(|source| Ext4Error::Stage {
        path: file.path().to_path_buf(),
        source,
    })?;
    let cmd_path = file.path().display().to_string();
    let mut args = vec![];
    if write {
        args.push("-w");
    }
    args.extend(["-f", &cmd_path, spec]);
    let out = run_debugfs(&args)?;
    if write {
        let errors = error_lines(&out.stderr);
        if !errors.is_empty() {
            return Err(tool_err(
                "debugfs -w",
                format!("{} (the output image is not usable)", errors.join("; ")),
            ));
        }
        if !out.status.success() {
            return Err(tool_err("debugfs -w", format!("exited {}", out.status)));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ls_lines_parse() {
        let e = parse_ls_line("/15/100600/0/0/hn/3/").unwrap();
        assert_eq!((e.name.as_str(), e.mode, e.size), ("hn", 0o100600, 3));
        assert!(e.is_file());
        assert!(parse_ls_line("/16/120777/0/0/link/4/")
            .unwrap()
            .is_symlink());
        assert!(parse_ls_line("/12/040755/0/0/.//").unwrap().is_dir());
        assert!(parse_ls_line("debugfs: ls -p /etc").is_none());
    }

    #[test]
    fn paths_split_into_ancestors() {
        assert_eq!(ancestors("/etc/bramble/x"), ["/", "/etc", "/etc/bramble"]);
        assert_eq!(split("/etc/x"), ("/etc".to_owned(), "x".to_owned()));
        assert_eq!(split("/x"), ("/".to_owned(), "x".to_owned()));
        assert!(check_path("/etc/a b").is_err());
        assert!(check_path("/etc/../x").is_err());
        assert!(check_path("etc").is_err());
        assert_eq!(
            resolve("/etc", "../usr/lib/os-release"),
            "/usr/lib/os-release"
        );
        assert_eq!(resolve("/etc", "/x/./y"), "/x/y");
    }
}

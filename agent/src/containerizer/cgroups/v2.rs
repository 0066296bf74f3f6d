//! cgroup v2 (the unified hierarchy): the parent under the root with `memory`, `cpu` and
//! `pids` delegated down to it, and one leaf per container with its limits. Raspberry Pi OS Bookworm
//! and newer run this; `tests.rs` drives it against a fake tree so v1 machines test it too.

use super::{
    cpu_max, cpu_weight, make_fresh_dir, mib_to_bytes, mkdir_existing_ok, parse_controllers,
    write_file, write_if_present, CgroupError, CgroupLimits, ContainerCgroup,
};
use bramble_proto::durable::FileError;
use std::fs;
use std::path::{Path, PathBuf};

/// Which controllers the parent hands down to containers.
pub(super) struct Controllers {
    pub memory: bool,
    pub cpu: bool,
    pub pids: bool,
}

/// v2: make `<root>/<parent_name>` and let memory/cpu/pids flow from the root down to it.
pub(super) fn setup_parent(
    root: &Path,
    parent_name: &str,
    memory: bool,
    cpu: bool,
    pids: bool,
) -> Result<PathBuf, CgroupError> {
    let wanted: Vec<&str> = [("memory", memory), ("cpu", cpu), ("pids", pids)]
        .iter()
        .filter(|(_, on)| *on)
        .map(|(c, _)| *c)
        .collect();
    enable_controllers(root, &wanted)?;
    let parent = root.join(parent_name);
    mkdir_existing_ok(&parent)?;
    enable_controllers(&parent, &wanted)?;
    Ok(parent)
}

/// Adds each controller not yet in `dir/cgroup.subtree_control`.
fn enable_controllers(dir: &Path, controllers: &[&str]) -> Result<(), CgroupError> {
    let file = dir.join("cgroup.subtree_control");
    let enabled = fs::read_to_string(&file)
        .map(|t| parse_controllers(&t))
        .map_err(FileError::at("reading", &file))?;
    for c in controllers.iter().filter(|c| !enabled.contains(**c)) {
        write_file(&file, &format!("+{c}"))?;
    }
    Ok(())
}

/// Makes the leaf of `container_id` under `parent` with its limits; on failure removes it.
pub(super) fn create(
    parent: &Path,
    controllers: &Controllers,
    container_id: &str,
    limits: &CgroupLimits,
) -> Result<ContainerCgroup, CgroupError> {
    let Controllers { memory, cpu, pids } = *controllers;
    let CgroupLimits {
        cpus,
        mem_mib,
        pids_max,
    } = *limits;
    let dir = parent.join(container_id);
    make_fresh_dir(&dir)?;
    let cg = ContainerCgroup {
        v2: true,
        dirs: vec![dir.clone()],
        memory_dir: memory.then(|| dir.clone()),
        mem_mib: mem_mib.into(),
    };
    let apply = || -> Result<(), CgroupError> {
        if memory && mem_mib > 0 {
            write_file(&dir.join("memory.max"), &mib_to_bytes(mem_mib).to_string())?;
            write_if_present(&dir.join("memory.swap.max"), "0")?;
        }
        if memory {
            // The whole container dies together on OOM, like a v1 memcg OOM would leave it
            // unusable anyway; the agent reports it once.
            write_if_present(&dir.join("memory.oom.group"), "1")?;
        }
        if cpu && cpus > 0.0 {
            write_file(&dir.join("cpu.max"), &cpu_max(cpus))?;
            write_if_present(&dir.join("cpu.weight"), &cpu_weight(cpus).to_string())?;
        }
        if pids && pids_max > 0 {
            write_file(&dir.join("pids.max"), &pids_max.to_string())?;
        }
        Ok(())
    };
    match apply() {
        Ok(()) => Ok(cg),
        Err(e) => {
            let _ = fs::remove_dir(&dir);
            Err(e)
        }
    }
}

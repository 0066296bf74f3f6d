//! cgroup v1: separate `memory` and `cpu` hierarchies, each with its own parent, and one
//! directory per container in each (a hierarchy that is not mounted is skipped).

use super::{
    cfs_quota, cpu_shares, make_fresh_dir, mib_to_bytes, mkdir_existing_ok, write_file,
    write_if_present, CgroupError, ContainerCgroup,
};
use std::fs;
use std::path::{Path, PathBuf};

/// Makes `<root>/<parent_name>` in each mounted hierarchy: `(memory parent, cpu parent)`.
pub(super) fn setup_parents(
    memory_root: Option<&Path>,
    cpu_root: Option<&Path>,
    parent_name: &str,
) -> Result<(Option<PathBuf>, Option<PathBuf>), CgroupError> {
    let make = |root: Option<&Path>| -> Result<Option<PathBuf>, CgroupError> {
        match root {
            Some(root) => {
                let parent = root.join(parent_name);
                mkdir_existing_ok(&parent)?;
                Ok(Some(parent))
            }
            None => Ok(None),
        }
    };
    Ok((make(memory_root)?, make(cpu_root)?))
}

/// Makes the directories of `container_id` under each parent with their limits; on failure
/// removes those it made.
pub(super) fn create(
    memory_parent: Option<&Path>,
    cpu_parent: Option<&Path>,
    container_id: &str,
    cpus: f64,
    mem_mib: u64,
) -> Result<ContainerCgroup, CgroupError> {
    let mut cg = ContainerCgroup {
        v2: false,
        dirs: Vec::new(),
        memory_dir: None,
        mem_mib,
    };
    let apply = |cg: &mut ContainerCgroup| -> Result<(), CgroupError> {
        if let Some(parent) = memory_parent {
            let dir = parent.join(container_id);
            make_fresh_dir(&dir)?;
            cg.dirs.push(dir.clone());
            cg.memory_dir = Some(dir.clone());
            if mem_mib > 0 {
                let bytes = mib_to_bytes(mem_mib).to_string();
                // memsw must stay >= the memory limit, so set memory first.
                write_file(&dir.join("memory.limit_in_bytes"), &bytes)?;
                write_if_present(&dir.join("memory.memsw.limit_in_bytes"), &bytes)?;
            }
        }
        if let Some(parent) = cpu_parent {
            let dir = parent.join(container_id);
            make_fresh_dir(&dir)?;
            cg.dirs.push(dir.clone());
            if cpus > 0.0 {
                let (quota, period) = cfs_quota(cpus);
                write_file(&dir.join("cpu.cfs_period_us"), &period.to_string())?;
                write_file(&dir.join("cpu.cfs_quota_us"), &quota.to_string())?;
                write_if_present(&dir.join("cpu.shares"), &cpu_shares(cpus).to_string())?;
            }
        }
        Ok(())
    };
    match apply(&mut cg) {
        Ok(()) => Ok(cg),
        Err(e) => {
            for dir in &cg.dirs {
                let _ = fs::remove_dir(dir);
            }
            Err(e)
        }
    }
}

//! cgroup v1: separate `memory`, `cpu` and `pids` hierarchies, each with its own parent, and
//! one directory per container in each (a hierarchy that is not mounted is skipped).

use super::{
    cfs_quota, cpu_shares, make_fresh_dir, mib_to_bytes, mkdir_existing_ok, write_file,
    write_if_present, CgroupError, CgroupLimits, ContainerCgroup,
};
use std::fs;
use std::path::{Path, PathBuf};

/// Where each hierarchy is mounted (`None`: not mounted).
pub(super) struct Roots<'a> {
    pub memory: Option<&'a Path>,
    pub cpu: Option<&'a Path>,
    pub pids: Option<&'a Path>,
}

/// The agent's parent cgroup in each mounted hierarchy.
pub(super) struct Parents {
    pub memory: Option<PathBuf>,
    pub cpu: Option<PathBuf>,
    pub pids: Option<PathBuf>,
}

/// Makes `<root>/<parent_name>` in each mounted hierarchy.
pub(super) fn setup_parents(roots: &Roots<'_>, parent_name: &str) -> Result<Parents, CgroupError> {
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
    Ok(Parents {
        memory: make(roots.memory)?,
        cpu: make(roots.cpu)?,
        pids: make(roots.pids)?,
    })
}

/// Makes the directories of `container_id` under each parent with their limits; on failure
/// removes those it made.
pub(super) fn create(
    parents: &Parents,
    container_id: &str,
    limits: &CgroupLimits,
) -> Result<ContainerCgroup, CgroupError> {
    let CgroupLimits {
        cpus,
        mem_mib,
        pids_max,
    } = *limits;
    let mut cg = ContainerCgroup {
        v2: false,
        dirs: Vec::new(),
        memory_dir: None,
        mem_mib: mem_mib.into(),
    };
    let apply = |cg: &mut ContainerCgroup| -> Result<(), CgroupError> {
        if let Some(parent) = &parents.memory {
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
        if let Some(parent) = &parents.cpu {
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
        if let Some(parent) = &parents.pids {
            let dir = parent.join(container_id);
            make_fresh_dir(&dir)?;
            cg.dirs.push(dir.clone());
            if pids_max > 0 {
                write_file(&dir.join("pids.max"), &pids_max.to_string())?;
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

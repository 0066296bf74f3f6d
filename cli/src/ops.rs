//! Operator views and actions: `status`, `agents`, `frameworks`, `tasks`, `kill`, `logs`.
//! Each fetches what it needs over one operator connection and prints a table, or one JSON
//! object with `--json`.

use crate::operator::OperatorClient;
use anyhow::{bail, Context};
use bramble_proto::messages::ClusterState;
use bramble_proto::{FrameworkId, Resources, TaskId};
use std::io::Write;
use std::time::Duration;

fn pct(used: f64, total: f64) -> String {
    if total > 0.0 {
        format!("{:.0}%", 100.0 * used / total)
    } else {
        "-".into()
    }
}

fn sum<'a>(it: impl Iterator<Item = &'a Resources>) -> Resources {
    let mut total = Resources::default();
    for r in it {
        total.add(&Resources {
            ports: Vec::new(),
            ..r.clone()
        });
    }
    total
}

pub fn print_status(state: &ClusterState) {
    let up = state.agents.iter().filter(|a| a.connected).count();
    let total = sum(state
        .agents
        .iter()
        .filter(|a| a.connected)
        .map(|a| &a.total));
    let used = sum(state
        .agents
        .iter()
        .filter(|a| a.connected)
        .map(|a| &a.allocated));
    println!("cluster   {}", state.cluster_id);
    println!("agents    {up} up / {} known", state.agents.len());
    println!(
        "cpus      {:.1} / {:.1} allocated ({})",
        used.cpus(),
        total.cpus(),
        pct(used.cpus(), total.cpus())
    );
    println!(
        "memory    {} / {} MiB allocated ({})",
        used.mem_mib,
        total.mem_mib,
        pct(used.mem_mib as f64, total.mem_mib as f64)
    );
    println!("frameworks {}", state.frameworks.len());
    let live = state
        .tasks
        .iter()
        .filter(|t| !t.state.is_terminal())
        .count();
    println!("tasks     {live} live, {} listed", state.tasks.len());
    for job in &state.jobs {
        let p = &job.progress;
        let estimate = p
            .estimate
            .map(|e| {
                format!(
                    ", estimate {e:.12} ({} digits)",
                    p.correct_digits.unwrap_or(0)
                )
            })
            .unwrap_or_default();
        println!(
            "job       {} ({}): {}/{} {} ({}){estimate}{}",
            p.job,
            job.framework_name,
            p.done,
            p.total,
            p.unit,
            pct(p.done as f64, p.total as f64),
            if p.finished { ", finished" } else { "" }
        );
    }
}

pub fn print_agents(state: &ClusterState) {
    println!(
        "{:<40} {:<16} {:<6} {:>12} {:>16}",
        "ID", "HOSTNAME", "UP", "CPUS", "MEM (MiB)"
    );
    for a in &state.agents {
        println!(
            "{:<40} {:<16} {:<6} {:>12} {:>16}",
            a.id,
            a.hostname,
            if a.connected { "yes" } else { "no" },
            format!("{:.1}/{:.1}", a.allocated.cpus(), a.total.cpus()),
            format!("{}/{}", a.allocated.mem_mib, a.total.mem_mib),
        );
    }
}

pub fn print_frameworks(state: &ClusterState) {
    println!(
        "{:<40} {:<16} {:<10} {:>8} {:>10}",
        "ID", "NAME", "CONNECTED", "CPUS", "MEM (MiB)"
    );
    for f in &state.frameworks {
        println!(
            "{:<40} {:<16} {:<10} {:>8.1} {:>10}",
            f.id,
            f.name,
            if f.connected { "yes" } else { "no" },
            f.allocated.cpus(),
            f.allocated.mem_mib
        );
    }
}

pub fn print_tasks(state: &ClusterState) {
    println!(
        "{:<24} {:<16} {:<14} {:<24} MESSAGE",
        "TASK", "FRAMEWORK", "STATE", "AGENT"
    );
    for t in &state.tasks {
        let fw = state
            .frameworks
            .iter()
            .find(|f| f.id == t.framework_id)
            .map(|f| f.name.as_str())
            .unwrap_or(t.framework_id.as_str());
        let agent = state
            .agents
            .iter()
            .find(|a| a.id == t.agent_id)
            .map(|a| a.hostname.as_str())
            .unwrap_or(t.agent_id.as_str());
        println!(
            "{:<24} {:<16} {:<14} {:<24} {}",
            t.id,
            fw,
            t.state.name(),
            agent,
            t.message
        );
    }
}

/// Finds which framework owns `task` (the task must be known to the master), or uses the
/// one given.
pub fn owner_of(
    state: &ClusterState,
    task: &TaskId,
    framework: Option<&FrameworkId>,
) -> anyhow::Result<FrameworkId> {
    if let Some(f) = framework {
        return Ok(f.clone());
    }
    let owners: Vec<&FrameworkId> = state
        .tasks
        .iter()
        .filter(|t| &t.id == task)
        .map(|t| &t.framework_id)
        .collect();
    match owners.as_slice() {
        [one] => Ok((*one).clone()),
        [] => bail!(
            "no live task {task} is known to the master (pass --framework for a finished one)"
        ),
        _ => bail!("several frameworks have a task {task}: pass --framework"),
    }
}

/// Prints a sandbox file (`stdout` or `stderr`), following it while the task runs when asked.
pub async fn logs(
    client: &mut OperatorClient,
    framework: &FrameworkId,
    task: &TaskId,
    file: &str,
    follow: bool,
) -> anyhow::Result<()> {
    let mut offset = 0;
    let mut out = std::io::stdout();
    loop {
        let chunk = client
            .read_sandbox(framework, task, file, offset)
            .await
            .with_context(|| format!("reading {file} of task {task}"))?;
        out.write_all(&chunk.data)?;
        out.flush()?;
        offset += chunk.data.len() as u64;
        let more_now = offset < chunk.size;
        if more_now {
            continue;
        }
        if !follow || chunk.task_ended {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

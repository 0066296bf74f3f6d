//! `bramble status|agents|frameworks|tasks` print the master's picture of the cluster (as a
//! table, or JSON with `--json`); `bramble kill|logs` act on one task of it, `bramble
//! framework teardown` on one framework, `bramble agent drain|undrain` on one agent.

use super::{print_json, Target};
use anyhow::Context;
use bramble::{ops, summary};
use bramble_client::{owner_of, OperatorClient};
use bramble_proto::messages::{AgentSummary, ClusterState, TaskSummary};
use bramble_proto::{AgentId, FrameworkId, TaskId};

/// Which part of the cluster's state to print.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum View {
    Status,
    Agents,
    Frameworks,
    /// `all`: finished tasks too.
    Tasks {
        all: bool,
    },
    /// Every agent, however many (`bramble agents --all`).
    AllAgents,
}

/// Prints `view` of the master's state.
pub async fn show(target: &Target<'_>, view: View, json: bool) -> anyhow::Result<()> {
    let mut op =
        OperatorClient::connect_as(target.cluster, target.principal, target.master).await?;
    // Summaries first: the status and the first agents from one small page, whatever the
    // cluster's size; the rest (and every `--json`) from the whole state, fetched in pages.
    match (view, json) {
        (View::Status, false) => {
            let page = op.state_page(None, 0).await?;
            // A replicated group's masters; a single master answers that it has none (and
            // prints as before).
            let group = op.masters().await.ok();
            op.close();
            let head = head(page.head)?;
            print!("{}", summary::status_text(&page.counts, &head));
            if let Some(group) = group {
                print!("{}", bramble::masters::status_lines(&group));
            }
            return Ok(());
        }
        (View::Agents, false) => {
            let page = op.state_page(None, summary::AGENTS_SHOWN).await?;
            op.close();
            let mut head = head(page.head)?;
            head.agents = page.agents;
            ops::print_agents(&head);
            if let Some(note) = summary::agents_left_out(head.agents.len(), &page.counts) {
                println!("{note}");
            }
            return Ok(());
        }
        _ => {}
    }
    let state = op.state().await?;
    op.close();
    match (view, json) {
        (View::Status, true) => print_json(&state)?,
        (View::Status, false) => ops::print_status(&state),
        (View::Agents | View::AllAgents, true) => print_json(&state.agents)?,
        (View::Agents | View::AllAgents, false) => ops::print_agents(&state),
        (View::Frameworks, true) => print_json(&state.frameworks)?,
        (View::Frameworks, false) => ops::print_frameworks(&state),
        (View::Tasks { all }, true) => print_json(&ops::tasks_json(&state, all))?,
        (View::Tasks { all }, false) => ops::print_tasks(&state, all),
    }
    Ok(())
}

/// The rest of the state, which the master sends with the first page.
fn head(head: Option<ClusterState>) -> anyhow::Result<ClusterState> {
    head.ok_or_else(|| anyhow::anyhow!("the master's first state page came without its head"))
}

/// Connects as the operator and finds whose `task` it is (`framework` settles an ambiguous
/// or older task's id); the master's picture comes along.
async fn owned_task(
    target: &Target<'_>,
    task: String,
    framework: Option<String>,
) -> anyhow::Result<(OperatorClient, ClusterState, FrameworkId, TaskId)> {
    let mut op =
        OperatorClient::connect_as(target.cluster, target.principal, target.master).await?;
    let state = op.state().await?;
    let task = TaskId(task);
    let fw = owner_of(&state, &task, framework.map(FrameworkId).as_ref())?;
    Ok((op, state, fw, task))
}

/// The latest the master knows of `task` of `fw`: live first, then recently finished.
fn summary<'a>(
    state: &'a ClusterState,
    fw: &FrameworkId,
    task: &TaskId,
) -> Option<&'a TaskSummary> {
    let matches = |t: &&TaskSummary| &t.id == task && &t.framework_id == fw;
    state
        .tasks
        .iter()
        .find(matches)
        .or_else(|| state.completed_tasks.iter().rev().find(matches))
}

/// Asks the master to kill `task`; one that has already ended is an error saying how it
/// ended (nothing was sent).
pub async fn kill(
    target: &Target<'_>,
    task: String,
    framework: Option<String>,
    json: bool,
) -> anyhow::Result<()> {
    let (mut op, state, fw, task) = owned_task(target, task, framework).await?;
    if let Some(done) = summary(&state, &fw, &task).filter(|t| t.state.is_terminal()) {
        op.close();
        let how = if done.message.is_empty() {
            String::new()
        } else {
            format!(": {}", done.message)
        };
        anyhow::bail!(
            "task {task} of framework {fw} had already ended ({}{how}); nothing to kill",
            done.state.name()
        );
    }
    op.kill(fw.clone(), task.clone()).await?;
    op.close();
    if json {
        print_json(&serde_json::json!({ "task": task, "framework": fw, "kill": "sent" }))?;
    } else {
        eprintln!("kill sent to {task}");
    }
    Ok(())
}

/// Prints `task`'s stdout (or stderr) from its sandbox, following it while it runs if asked.
/// With `json`, one object instead: the task's framework, agent and state, and the file's
/// text (decoded lossily).
pub async fn logs(
    target: &Target<'_>,
    task: String,
    stderr: bool,
    follow: bool,
    framework: Option<String>,
    json: bool,
) -> anyhow::Result<()> {
    let (mut op, state, fw, task) = owned_task(target, task, framework).await?;
    let file = if stderr { "stderr" } else { "stdout" };
    if !json {
        op.copy_sandbox_file(&fw, &task, file, follow, &mut std::io::stdout())
            .await?;
        op.close();
        return Ok(());
    }
    let mut data = Vec::new();
    op.copy_sandbox_file(&fw, &task, file, false, &mut data)
        .await?;
    op.close();
    let known = summary(&state, &fw, &task);
    print_json(&serde_json::json!({
        "task": task,
        "framework": fw,
        "agent": known.map(|t| &t.agent_id),
        "state": known.map(|t| t.state.name()),
        "file": file,
        "bytes": data.len(),
        "text": String::from_utf8_lossy(&data),
    }))
}

/// Drains (`drain`) or undrains the agents `host` names: an agent id, else every agent on
/// that hostname; a name matching no agent the master knows is taken as an id (a drained
/// agent the master has removed meanwhile can still be undrained).
pub async fn drain(target: &Target<'_>, host: &str, drain: bool) -> anyhow::Result<()> {
    let mut op =
        OperatorClient::connect_as(target.cluster, target.principal, target.master).await?;
    let state = op.state().await?;
    let by_id: Vec<&AgentSummary> = state
        .agents
        .iter()
        .filter(|a| a.id.as_str() == host)
        .collect();
    let chosen: Vec<&AgentSummary> = if by_id.is_empty() {
        state.agents.iter().filter(|a| a.hostname == host).collect()
    } else {
        by_id
    };
    let targets: Vec<(AgentId, String)> = if chosen.is_empty() {
        vec![(AgentId(host.to_string()), host.to_string())]
    } else {
        chosen
            .iter()
            .map(|a| (a.id.clone(), format!("{} ({})", a.id, a.hostname)))
            .collect()
    };
    for (id, name) in targets {
        op.drain_agent(id, drain)
            .await
            .with_context(|| format!("{} {name}", if drain { "draining" } else { "undraining" }))?;
        if drain {
            println!("agent {name} drained: offered nothing more; frameworks move what runs there");
        } else {
            println!("agent {name} undrained: offered again");
        }
    }
    op.close();
    Ok(())
}

/// Asks the master to end framework `id` now.
pub async fn teardown(target: &Target<'_>, id: String, json: bool) -> anyhow::Result<()> {
    let mut op =
        OperatorClient::connect_as(target.cluster, target.principal, target.master).await?;
    op.teardown(FrameworkId(id.clone())).await?;
    op.close();
    if json {
        print_json(&serde_json::json!({ "framework": id, "teardown": "done" }))?;
    } else {
        eprintln!("framework {id} torn down: its tasks are being killed");
    }
    Ok(())
}

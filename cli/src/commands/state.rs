//! `bramble status|agents|frameworks|tasks` print the master's picture of the cluster (as a
//! table, or JSON with `--json`); `bramble kill|logs` act on one task of it.

use super::{print_json, Target};
use bramble::{ops, summary};
use bramble_client::{owner_of, OperatorClient};
use bramble_proto::messages::ClusterState;
use bramble_proto::{FrameworkId, TaskId};

/// Which part of the cluster's state to print.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum View {
    Status,
    Agents,
    Frameworks,
    Tasks,
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
            op.close();
            let head = head(page.head)?;
            print!("{}", summary::status_text(&page.counts, &head));
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
        (View::Tasks, true) => print_json(&state.tasks)?,
        (View::Tasks, false) => ops::print_tasks(&state),
    }
    Ok(())
}

/// The rest of the state, which the master sends with the first page.
fn head(head: Option<ClusterState>) -> anyhow::Result<ClusterState> {
    head.ok_or_else(|| anyhow::anyhow!("the master's first state page came without its head"))
}

/// Connects as the operator and finds whose `task` it is (`framework` settles an ambiguous
/// or finished task's id).
async fn owned_task(
    target: &Target<'_>,
    task: String,
    framework: Option<String>,
) -> anyhow::Result<(OperatorClient, FrameworkId, TaskId)> {
    let mut op =
        OperatorClient::connect_as(target.cluster, target.principal, target.master).await?;
    let state = op.state().await?;
    let task = TaskId(task);
    let fw = owner_of(&state, &task, framework.map(FrameworkId).as_ref())?;
    Ok((op, fw, task))
}

/// Asks the master to kill `task`.
pub async fn kill(
    target: &Target<'_>,
    task: String,
    framework: Option<String>,
) -> anyhow::Result<()> {
    let (mut op, fw, task) = owned_task(target, task, framework).await?;
    op.kill(fw, task.clone()).await?;
    op.close();
    eprintln!("kill sent to {task}");
    Ok(())
}

/// Prints `task`'s stdout (or stderr) from its sandbox, following it while it runs if asked.
pub async fn logs(
    target: &Target<'_>,
    task: String,
    stderr: bool,
    follow: bool,
    framework: Option<String>,
) -> anyhow::Result<()> {
    let (mut op, fw, task) = owned_task(target, task, framework).await?;
    let file = if stderr { "stderr" } else { "stdout" };
    op.copy_sandbox_file(&fw, &task, file, follow, &mut std::io::stdout())
        .await?;
    op.close();
    Ok(())
}

//! Printing the operator views: `status`, `agents`, `frameworks`, `tasks` (tables through
//! `table.rs`). What is printed comes from `bramble-client` (one operator connection per
//! command); `--json` prints the same data as JSON instead (`commands/state.rs`).

use crate::table::Table;
use bramble_proto::messages::{AgentSummary, ClusterState, FrameworkSummary, TaskSummary};
use bramble_proto::Resources;

/// `used` as a whole percentage of `total`, `-` when there is no total.
pub(crate) fn pct(used: f64, total: f64) -> String {
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
    print!("{}", status_text(state));
}

/// What `bramble status` prints.
pub fn status_text(state: &ClusterState) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    // Writing into a String cannot fail.
    macro_rules! println {
        ($($arg:tt)*) => {{ let _ = writeln!(out, $($arg)*); }};
    }
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
    for a in state.agents.iter().filter(|a| a.connected) {
        if let Some(why) = &a.unhealthy {
            println!("unhealthy {} ({}): {why}", a.hostname, a.id);
        }
    }
    for a in state.agents.iter().filter(|a| a.draining) {
        println!(
            "drained   {} ({}): offered nothing until `bramble agent undrain`",
            a.hostname, a.id
        );
    }
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
        println!("{}", crate::summary::job_line(job));
    }
    out
}

pub fn print_agents(state: &ClusterState) {
    print!("{}", agents_text(state));
}

/// What `bramble agents` prints.
pub fn agents_text(state: &ClusterState) -> String {
    let mut t = Table::new(&["ID", "HOSTNAME", "UP", "CPUS", "MEM (MiB)"])
        .right(3)
        .right(4);
    for a in &state.agents {
        t.row(vec![
            a.id.to_string(),
            a.hostname.clone(),
            agent_up(a),
            format!("{:.1}/{:.1}", a.allocated.cpus(), a.total.cpus()),
            format!("{}/{}", a.allocated.mem_mib, a.total.mem_mib),
        ]);
    }
    t.render()
}

pub fn print_frameworks(state: &ClusterState) {
    print!("{}", frameworks_text(state));
}

/// What `bramble frameworks` prints.
pub fn frameworks_text(state: &ClusterState) -> String {
    let mut t = Table::new(&[
        "ID",
        "NAME",
        "API",
        "CONNECTED",
        "CPUS",
        "MEM (MiB)",
        "WEB UI",
    ])
    .right(4)
    .right(5);
    for f in &state.frameworks {
        t.row(framework_row(f));
    }
    t.render()
}

fn framework_row(f: &FrameworkSummary) -> Vec<String> {
    vec![
        f.id.to_string(),
        f.name.clone(),
        f.api.name().to_string(),
        yes_no(f.connected),
        format!("{:.1}", f.allocated.cpus()),
        f.allocated.mem_mib.to_string(),
        // The master keeps no control characters in it; printed as published.
        f.webui_url.clone().unwrap_or_else(|| "-".into()),
    ]
}

/// The tasks `bramble tasks` lists: the live ones, and with `all` the finished ones the master
/// still remembers after them (oldest first).
pub fn listed_tasks(state: &ClusterState, all: bool) -> Vec<&TaskSummary> {
    let finished = state.completed_tasks.iter().filter(move |_| all);
    state.tasks.iter().chain(finished).collect()
}

/// What `bramble tasks [--all] --json` prints: each listed task as the master describes it,
/// its state spelled as the table spells it (`TASK_RUNNING`).
pub fn tasks_json(state: &ClusterState, all: bool) -> Vec<serde_json::Value> {
    listed_tasks(state, all)
        .into_iter()
        .map(|task| {
            let mut value = serde_json::to_value(task).unwrap_or_default();
            if let Some(fields) = value.as_object_mut() {
                fields.insert("state".into(), task.state.name().into());
            }
            value
        })
        .collect()
}

pub fn print_tasks(state: &ClusterState, all: bool) {
    print!("{}", tasks_text(state, all));
}

/// What `bramble tasks [--all]` prints. A framework the master no longer lists (torn down) is
/// shown by its id.
pub fn tasks_text(state: &ClusterState, all: bool) -> String {
    let mut t = Table::new(&["TASK", "FRAMEWORK", "STATE", "AGENT", "MESSAGE"]);
    for task in listed_tasks(state, all) {
        let fw = state
            .frameworks
            .iter()
            .find(|f| f.id == task.framework_id)
            .map(|f| f.name.as_str())
            .unwrap_or(task.framework_id.as_str());
        let agent = state
            .agents
            .iter()
            .find(|a| a.id == task.agent_id)
            .map(|a| a.hostname.as_str())
            .unwrap_or(task.agent_id.as_str());
        t.row(vec![
            task.id.to_string(),
            fw.to_owned(),
            task.state.name().to_owned(),
            agent.to_owned(),
            task.message.clone(),
        ]);
    }
    t.render()
}

/// "yes", "no", or why an agent that is up gets no offers: "unhealthy", "drained" (a
/// drained agent that is down says "no, drained").
fn agent_up(a: &AgentSummary) -> String {
    match (a.connected, &a.unhealthy, a.draining) {
        (true, _, true) => "drained".into(),
        (false, _, true) => "no, drained".into(),
        (true, Some(_), false) => "unhealthy".into(),
        (up, _, false) => yes_no(up),
    }
}

fn yes_no(b: bool) -> String {
    if b { "yes" } else { "no" }.to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use bramble_proto::TaskState;

    fn agent(id: &str, unhealthy: Option<&str>) -> AgentSummary {
        AgentSummary {
            id: bramble_proto::AgentId(id.into()),
            hostname: format!("host-{id}"),
            address: "127.0.0.1:1".into(),
            connected: true,
            total: Resources::new(4.0, 1024),
            allocated: Resources::default(),
            attributes: Default::default(),
            last_heartbeat: 0.0,
            executors: Vec::new(),
            unhealthy: unhealthy.map(str::to_string),
            draining: false,
        }
    }

    /// Issue 22: an agent that is up but gets no offers was shown as plain "up".
    #[test]
    fn status_and_agents_name_an_unhealthy_agent_and_why() {
        let state = ClusterState {
            agents: vec![
                agent("a1", None),
                agent("a2", Some("3 executors in a row failed to register")),
            ],
            cluster_id: "c".into(),
            frameworks: Vec::new(),
            tasks: Vec::new(),
            jobs: Vec::new(),
            offers_outstanding: 0,
            completed_tasks: Vec::new(),
            offers: Vec::new(),
        };
        let status = status_text(&state);
        assert!(
            status.contains("unhealthy host-a2 (a2): 3 executors in a row failed to register"),
            "{status}"
        );
        assert!(!status.contains("host-a1 (a1)"), "{status}");
        assert_eq!(agent_up(&state.agents[0]), "yes");
        assert_eq!(agent_up(&state.agents[1]), "unhealthy");
        let mut drained = agent("a3", Some("x"));
        drained.draining = true;
        assert_eq!(agent_up(&drained), "drained");
        drained.connected = false;
        assert_eq!(agent_up(&drained), "no, drained");
        let state = ClusterState {
            agents: vec![drained],
            ..state
        };
        assert!(
            status_text(&state).contains("drained   host-a3 (a3)"),
            "{}",
            status_text(&state)
        );
    }

    fn task(id: &str, fw: &str, agent: &str, state: TaskState, message: &str) -> TaskSummary {
        TaskSummary {
            id: id.into(),
            name: id.into(),
            framework_id: fw.into(),
            agent_id: agent.into(),
            state,
            message: message.into(),
            resources: Resources::default(),
            reason: None,
            launched_at: 0.0,
            started_at: None,
            ended_at: None,
        }
    }

    /// Ids of very different lengths: the columns still line up (issue 22's tables).
    fn long_ids() -> ClusterState {
        let long_agent = "3f9a2c7e-1b4d-4e8f-a6c5-9d0e7b2a1f34-S12";
        let long_fw = "8c2d1e7a-5b3f-4a9e-9d1c-0f7e6b5a4c3d-0007";
        let mut short = agent("a1", None);
        short.total = Resources::new(4.0, 3796);
        short.allocated = Resources::new(1.5, 512);
        ClusterState {
            agents: vec![
                short,
                agent(long_agent, Some("3 executors in a row failed to register")),
            ],
            cluster_id: "c".into(),
            frameworks: vec![FrameworkSummary {
                id: long_fw.into(),
                name: "pi".into(),
                role: "*".into(),
                connected: true,
                allocated: Resources::new(1.5, 512),
                tasks_by_state: Default::default(),
                api: Default::default(),
                user: String::new(),
                principal: None,
                webui_url: None,
                failover_timeout_secs: 60.0,
            }],
            tasks: vec![
                task("pi-3", long_fw, "a1", TaskState::Running, ""),
                task(
                    "a-task-with-a-much-longer-id-than-usual",
                    long_fw,
                    long_agent,
                    TaskState::Staging,
                    "",
                ),
            ],
            jobs: Vec::new(),
            offers_outstanding: 0,
            completed_tasks: vec![task(
                "pi-0",
                "gone-framework",
                "a1",
                TaskState::Finished,
                "chunk 0 done",
            )],
            offers: Vec::new(),
        }
    }

    #[test]
    fn tables_with_long_ids_line_up() {
        let state = long_ids();
        insta::assert_snapshot!("agents", agents_text(&state));
        insta::assert_snapshot!("frameworks", frameworks_text(&state));
        insta::assert_snapshot!("tasks", tasks_text(&state, false));
        insta::assert_snapshot!("tasks_all", tasks_text(&state, true));
    }

    #[test]
    fn tasks_all_adds_the_finished_ones_with_their_framework() {
        let state = long_ids();
        assert_eq!(listed_tasks(&state, false).len(), 2);
        let all = listed_tasks(&state, true);
        assert_eq!(all.len(), 3);
        let text = tasks_text(&state, true);
        let finished = text
            .lines()
            .find(|l| l.starts_with("pi-0"))
            .expect("the finished task is listed");
        assert!(finished.contains("gone-framework") && finished.contains("TASK_FINISHED"));
        assert!(!tasks_text(&state, false).contains("pi-0"));
    }

    #[test]
    fn tasks_json_spells_states_as_the_table_does() {
        let state = long_ids();
        let text = tasks_text(&state, true);
        let json = tasks_json(&state, true);
        assert_eq!(json.len(), 3);
        for task in &json {
            let spelled = task["state"].as_str().expect("a state");
            assert!(spelled.starts_with("TASK_"), "{task}");
            let line = text
                .lines()
                .find(|l| task["id"].as_str().is_some_and(|id| l.starts_with(id)))
                .expect("listed in the table");
            assert!(line.contains(spelled), "{line} vs {task}");
        }
    }

    #[test]
    fn frameworks_show_their_web_ui_or_a_dash() {
        let mut f = FrameworkSummary {
            id: "fw-1".into(),
            name: "http".into(),
            role: "*".into(),
            connected: true,
            allocated: Resources::new(0.1, 32),
            tasks_by_state: Default::default(),
            api: Default::default(),
            user: String::new(),
            principal: None,
            webui_url: Some("http://pi-a:31000/".into()),
            failover_timeout_secs: 60.0,
        };
        let row = framework_row(&f);
        assert_eq!(row.last().map(String::as_str), Some("http://pi-a:31000/"));
        assert_eq!(row[1], "http");
        f.webui_url = None;
        assert_eq!(framework_row(&f).last().map(String::as_str), Some("-"));
    }
}

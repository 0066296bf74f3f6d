//! Printing the operator views: `status`, `agents`, `frameworks`, `tasks`. What is printed
//! comes from `bramble-client` (one operator connection per command); `--json` prints the
//! same data as one JSON object instead (in `main.rs`).

use bramble_proto::messages::{AgentSummary, ClusterState, FrameworkSummary};
use bramble_proto::Resources;

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
    out
}

pub fn print_agents(state: &ClusterState) {
    let columns = [
        Column::left("ID", 40),
        Column::left("HOSTNAME", 16),
        Column::left("UP", 9),
        Column::right("CPUS", 12),
        Column::right("MEM (MiB)", 16),
    ];
    print_table(
        &columns,
        state.agents.iter().map(|a| {
            vec![
                a.id.to_string(),
                a.hostname.clone(),
                agent_up(a),
                format!("{:.1}/{:.1}", a.allocated.cpus(), a.total.cpus()),
                format!("{}/{}", a.allocated.mem_mib, a.total.mem_mib),
            ]
        }),
    );
}

pub fn print_frameworks(state: &ClusterState) {
    let columns = [
        Column::left("ID", 40),
        Column::left("NAME", 16),
        Column::left("API", 9),
        Column::left("CONNECTED", 10),
        Column::right("CPUS", 8),
        Column::right("MEM (MiB)", 10),
        Column::left("WEB UI", 0),
    ];
    print_table(&columns, state.frameworks.iter().map(framework_row));
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

pub fn print_tasks(state: &ClusterState) {
    let columns = [
        Column::left("TASK", 24),
        Column::left("FRAMEWORK", 16),
        Column::left("STATE", 14),
        Column::left("AGENT", 24),
        Column::left("MESSAGE", 0),
    ];
    print_table(
        &columns,
        state.tasks.iter().map(|t| {
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
            vec![
                t.id.to_string(),
                fw.to_owned(),
                t.state.name().to_owned(),
                agent.to_owned(),
                t.message.clone(),
            ]
        }),
    );
}

/// "yes", "no", or "unhealthy" for an agent that is up but gets no offers.
fn agent_up(a: &AgentSummary) -> String {
    match (a.connected, &a.unhealthy) {
        (true, Some(_)) => "unhealthy".into(),
        (up, _) => yes_no(up),
    }
}

fn yes_no(b: bool) -> String {
    if b { "yes" } else { "no" }.to_owned()
}

/// A table column: its header, its width, and which side it is aligned to.
struct Column {
    header: &'static str,
    width: usize,
    right: bool,
}

impl Column {
    fn left(header: &'static str, width: usize) -> Self {
        Column {
            header,
            width,
            right: false,
        }
    }

    fn right(header: &'static str, width: usize) -> Self {
        Column {
            header,
            width,
            right: true,
        }
    }
}

/// The header, then one line per row, each cell padded to its column.
fn print_table(columns: &[Column], rows: impl Iterator<Item = Vec<String>>) {
    let header: Vec<String> = columns.iter().map(|c| c.header.to_owned()).collect();
    println!("{}", table_line(columns, &header));
    for row in rows {
        println!("{}", table_line(columns, &row));
    }
}

fn table_line(columns: &[Column], cells: &[String]) -> String {
    columns
        .iter()
        .zip(cells)
        .map(|(c, cell)| {
            if c.right {
                format!("{cell:>w$}", w = c.width)
            } else {
                format!("{cell:<w$}", w = c.width)
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

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
    }

    #[test]
    fn table_cells_are_padded_to_their_columns() {
        let columns = [
            Column::left("ID", 4),
            Column::right("CPUS", 6),
            Column::left("MESSAGE", 0),
        ];
        let header: Vec<String> = ["ID", "CPUS", "MESSAGE"].map(String::from).into();
        assert_eq!(table_line(&columns, &header), "ID     CPUS MESSAGE");
        let row: Vec<String> = ["a1", "0.5", "done"].map(String::from).into();
        assert_eq!(table_line(&columns, &row), "a1      0.5 done");
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

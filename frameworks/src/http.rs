//! `bramble http`: a long-running service on a port the offer gave us — the Mesos tutorial's
//! Java framework whose executor starts a web server, done the Bramble way: a command task
//! running `bramble serve-dir --port P --dir .`, which lists (and serves) the task's sandbox.
//!
//! The port is the first one of the offer's `ports` ranges, and the task's resources name it,
//! so the master accounts for it and no other task on that agent is given it while ours runs.
//! It reaches the server both as `--port` and as `PORT` in the environment (the Mesos habit).
//!
//! RUNNING means the process started, not that it listens yet: a client should retry its
//! first connection for a moment.

use crate::service::{command_task, Launch, ServiceOutcome, ServiceSpec};
use bramble_proto::task::CommandInfo;
use bramble_proto::PortRange;
use bramble_sdk::{Offer, Resources, TaskId};

pub use crate::dir_server::{serve_dir, serve_dir_on};

/// How the http service ended; [`ServiceOutcome::url`] says where it was served.
pub type HttpOutcome = ServiceOutcome;

/// The http service: how agents start the server, and what to serve.
#[derive(Debug, Clone)]
pub struct HttpJob {
    /// The server program and its leading arguments, e.g. `/usr/bin/bramble serve-dir`;
    /// `--port P --dir D` are appended.
    pub serve: CommandInfo,
    /// Served directory, relative to the task's sandbox (or absolute on the agent).
    pub dir: String,
    /// Resources besides the port.
    pub resources: Resources,
}

impl HttpJob {
    /// Serves the task's own sandbox with the default resources.
    pub fn new(serve: CommandInfo) -> Self {
        Self {
            serve,
            dir: ".".into(),
            resources: Resources::new(0.1, 32),
        }
    }

    /// The server task for `offer` on its first offered port, or why the offer cannot take it.
    pub fn task_for(&self, offer: &Offer, task_id: TaskId) -> Result<Launch, String> {
        let Some(port) = offer.resources.ports.iter().find(|r| !r.is_empty()) else {
            return Err(format!("{} offers no ports", offer.hostname));
        };
        let port = port.begin;
        let resources = self
            .resources
            .clone()
            .with_ports([PortRange::new(port, port)]);
        let task = command_task(
            offer,
            task_id,
            "http",
            "the http server",
            resources,
            self.command(port),
        )?;
        Ok(Launch {
            task,
            port: Some(port),
        })
    }

    fn command(&self, port: u16) -> CommandInfo {
        let mut cmd = self.serve.clone();
        if cmd.shell {
            cmd.value = format!(
                "{} --port {port} --dir {}",
                cmd.value,
                shell_quote(&self.dir)
            );
        } else {
            cmd.arguments.extend([
                "--port".into(),
                port.to_string(),
                "--dir".into(),
                self.dir.clone(),
            ]);
        }
        cmd.environment.insert("PORT".into(), port.to_string());
        cmd
    }
}

/// `'…'` with embedded quotes escaped, for `/bin/sh`.
fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// The directory server as a service: launched on the first offer with a port.
impl From<HttpJob> for ServiceSpec {
    fn from(job: HttpJob) -> Self {
        ServiceSpec {
            name: "http".into(),
            build: Box::new(move |offer, task_id| job.task_for(offer, task_id)),
        }
    }
}

/// `run_http(config, job, until, report)` launches the directory server on the first offer
/// with a port, reports each step to `report` (RUNNING carries the port: the URL is
/// `http://<agent hostname>:<port>/`), and when `until` resolves kills the task, waits for
/// KILLED and tears the framework down: [`run_service`](crate::service::run_service) for an [`HttpJob`].
pub use crate::service::run_service as run_http;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::offer;

    fn job() -> HttpJob {
        HttpJob::new(CommandInfo::program(
            "/usr/bin/bramble",
            vec!["serve-dir".into()],
        ))
    }

    #[test]
    fn the_task_takes_the_first_offered_port_and_accounts_for_it() {
        let have = Resources::new(1.0, 256)
            .with_ports([PortRange::new(31000, 31010), PortRange::new(32000, 32000)]);
        let launch = job().task_for(&offer(have), "http-1".into()).unwrap();
        assert_eq!(launch.port, Some(31000));
        assert_eq!(
            launch.task.resources.ports,
            vec![PortRange::new(31000, 31000)]
        );
        let cmd = launch.task.command.expect("a command task");
        assert_eq!(cmd.value, "/usr/bin/bramble");
        assert_eq!(
            cmd.arguments,
            ["serve-dir", "--port", "31000", "--dir", "."]
        );
        assert_eq!(
            cmd.environment.get("PORT").map(String::as_str),
            Some("31000")
        );
    }

    #[test]
    fn offers_without_ports_or_room_are_refused_with_a_reason() {
        let no_ports = job()
            .task_for(&offer(Resources::new(1.0, 256)), "http-1".into())
            .unwrap_err();
        assert_eq!(no_ports, "pi-a offers no ports");
        let small = Resources::new(1.0, 8).with_ports([PortRange::new(80, 80)]);
        let too_small = job().task_for(&offer(small), "http-1".into()).unwrap_err();
        assert!(too_small.contains("mem"), "{too_small}");
    }

    #[test]
    fn shell_servers_get_quoted_arguments() {
        let mut job = HttpJob::new(CommandInfo::shell("exec bramble serve-dir"));
        job.dir = "it's here".into();
        let have = Resources::new(1.0, 256).with_ports([PortRange::new(8080, 8080)]);
        let cmd = job
            .task_for(&offer(have), "http-1".into())
            .unwrap()
            .task
            .command
            .unwrap();
        assert_eq!(
            cmd.value,
            r"exec bramble serve-dir --port 8080 --dir 'it'\''s here'"
        );
    }
}

/// The http scheduler driven by the SDK's test kit.
#[cfg(test)]
mod kit_tests {
    use super::*;
    use crate::service::kit::service;
    use bramble_sdk::testing::{offer, update};
    use bramble_sdk::{Filters, TaskReason, TaskState};

    fn with_ports(id: &str, agent: &str, first: u16) -> bramble_sdk::Offer {
        offer(
            id,
            agent,
            Resources::new(1.0, 256).with_ports([PortRange::new(first, first + 10)]),
        )
    }

    #[tokio::test]
    async fn the_server_runs_on_an_offered_port_and_publishes_its_url_as_the_web_ui() {
        let job = HttpJob::new(CommandInfo::program(
            "/usr/bin/bramble",
            vec!["serve-dir".into()],
        ));
        let mut s = service(job.into()).await;
        s.t.offers(vec![offer("no-ports", "a0", Resources::new(1.0, 256))])
            .await;
        assert_eq!(
            s.t.declines(),
            vec![(
                "no-ports".into(),
                Filters {
                    refuse_seconds: 5.0
                }
            )]
        );
        s.t.offers(vec![with_ports("o1", "a1", 31000)]).await;
        let task = s.t.launched().remove(0);
        assert_eq!(task.resources.ports, vec![PortRange::new(31000, 31000)]);
        assert_eq!(s.t.webui_url(), None, "not before it runs");
        s.t.update(update("http-1", "a1", TaskState::Running)).await;
        assert_eq!(s.t.webui_url(), Some(Some("http://a1:31000/".into())));
        // Its agent lost: the link is withdrawn, and the relaunch publishes the new one.
        let mut lost = update("http-1", "a1", TaskState::Lost);
        lost.reason = Some(TaskReason::AgentRemoved);
        s.t.update(lost).await;
        assert_eq!(s.t.webui_url(), Some(None));
        s.t.offers(vec![with_ports("o2", "a2", 32000)]).await;
        s.t.update(update("http-2", "a2", TaskState::Running)).await;
        assert_eq!(s.t.webui_url(), Some(Some("http://a2:32000/".into())));
    }
}

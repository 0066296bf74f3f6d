//! The built-in service framework's services as the master shows them: `/api/v1/services`,
//! the web UI's Services page, `bramble_service_instances` on `/metrics`, and the mDNS
//! adverts of healthy instances (`crate::service_adverts`).
//!
//! The service scheduler keeps a `status/<name>` record per service in its own key/value
//! state (`bramble_proto::service_status`). Each record written by a framework named
//! [`SERVICES_FRAMEWORK`] is parsed once, when it lands (or is recovered), and kept here;
//! after every burst the view is rebuilt from those records and what the master itself knows,
//! and published on the feed only when it changed. The master's own knowledge wins over the
//! record: an instance whose task is no longer RUNNING here (it ended, or its agent was lost)
//! is not healthy whatever the scheduler last wrote, so it is withdrawn at once even while the
//! scheduler is away, and each instance's address is its agent's as this master sees it.

use super::Master;
use bramble_proto::identity::Role;
use bramble_proto::service_status::{
    check_service_type, ServiceStatus, DEFAULT_SERVICE_TYPE, SERVICES_FRAMEWORK, STATUS_PREFIX,
};
use bramble_proto::{FrameworkId, TaskId, TaskState};
use serde::Serialize;
use std::net::IpAddr;
use std::time::{Duration, Instant};
use tracing::warn;

/// How often at most the view is rebuilt.
pub const SERVICES_EVERY: Duration = Duration::from_millis(100);

/// Every service the service framework reports, sorted by name then framework.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ServicesView {
    pub services: Vec<ServiceView>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ServiceView {
    pub name: String,
    pub framework_id: FrameworkId,
    /// Whether the scheduler is connected; while it is not, health is the last it reported
    /// (instances that ended since are still shown as ended).
    pub scheduler_connected: bool,
    /// The mDNS service type its healthy instances are advertised under (`_http._tcp`).
    pub service_type: String,
    /// Sorted by task id.
    pub instances: Vec<InstanceView>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct InstanceView {
    pub task_id: String,
    pub agent_id: String,
    /// The agent's hostname.
    pub host: String,
    /// The agent's address as this master sees its connection (`None`: agent unknown).
    pub address: Option<IpAddr>,
    pub ports: Vec<u16>,
    pub health: Health,
    /// The last failure of a check that is not passing.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_failure: Option<String>,
}

/// An instance's health, for people and for `/metrics`' `health` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Health {
    /// Launched, or RUNNING with its checks not yet passed (in its grace period).
    Starting,
    /// RUNNING and passing every check.
    Healthy,
    /// Passed its checks, failing one now but not (yet) often enough to be killed: still an
    /// endpoint, as the scheduler counts it (one slow answer neither hides nor replaces it).
    Failing,
    /// RUNNING, failing a check it never passed.
    Unhealthy,
    /// No longer running (ended, lost with its agent) though the record still lists it.
    Gone,
}

impl Health {
    pub const ALL: [Health; 5] = [
        Health::Starting,
        Health::Healthy,
        Health::Failing,
        Health::Unhealthy,
        Health::Gone,
    ];

    /// Whether the instance is an endpoint (shown by `bramble service endpoints`, advertised
    /// on mDNS).
    pub fn serving(self) -> bool {
        matches!(self, Health::Healthy | Health::Failing)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Health::Starting => "starting",
            Health::Healthy => "healthy",
            Health::Failing => "failing",
            Health::Unhealthy => "unhealthy",
            Health::Gone => "gone",
        }
    }
}

impl ServiceView {
    pub fn count(&self, health: Health) -> usize {
        self.instances.iter().filter(|i| i.health == health).count()
    }
}

impl Master {
    /// A scheduler holding a node certificate (admitted only over loopback: the service
    /// scheduler beside the master, see [`Master::admits`]) may subscribe or campaign only as
    /// the service framework. Every card carries the node key; without this, anything on the
    /// master's host that can read it could register a framework of any name.
    pub(super) fn node_scheduler_may_call(
        &self,
        conn: super::ConnId,
        call: &bramble_proto::messages::SchedulerCall,
    ) -> Result<(), String> {
        use bramble_proto::messages::SchedulerCall;
        let Some(c) = self.conns.get(&conn) else {
            return Ok(());
        };
        if c.identity.role != Role::Node {
            return Ok(());
        }
        match call {
            SchedulerCall::Subscribe(info) | SchedulerCall::Campaign(info)
                if info.name != SERVICES_FRAMEWORK =>
            {
                Err(format!(
                    "a node certificate may subscribe only the service scheduler ({SERVICES_FRAMEWORK}), not {:?}",
                    info.name
                ))
            }
            _ => Ok(()),
        }
    }

    /// Whether `fw` is the service framework: named so (as the CLI finds it) *and* registered
    /// with a shared role certificate (`framework` or `operator`, or `node`: the scheduler on
    /// the master node, over loopback). A tenant's principal (`bramble cluster add-principal`) may take the
    /// name but not the job: its records would put mDNS adverts on the LAN under names other
    /// tenants' services own. Tenant principals can never be called after a role.
    fn is_services_framework(&mut self, fw: &FrameworkId) -> bool {
        let Some(info) = self.frameworks.get(fw).map(|f| &f.info) else {
            return false;
        };
        if info.name != SERVICES_FRAMEWORK {
            return false;
        }
        let trusted = info
            .principal
            .as_deref()
            .is_some_and(|p| Role::parse(p).is_some());
        if !trusted && self.service_impostors.insert(fw.clone()) {
            warn!(
                framework = %fw,
                principal = info.principal.as_deref().unwrap_or("none"),
                "a framework named {SERVICES_FRAMEWORK} registered by a tenant principal; its service records are ignored (run the service scheduler with the cluster's framework certificate)"
            );
        }
        trusted
    }

    /// Takes in a write (or recovery) of `key` in `fw`'s state; `None` deleted it.
    pub(super) fn service_record_written(
        &mut self,
        fw: &FrameworkId,
        key: &str,
        value: Option<&[u8]>,
    ) {
        let Some(name) = key.strip_prefix(STATUS_PREFIX) else {
            return;
        };
        if !self.is_services_framework(fw) {
            return;
        }
        let id = (fw.clone(), name.to_string());
        match value.map(ServiceStatus::parse) {
            Some(Some(status)) => {
                self.service_records.insert(id, status);
            }
            Some(None) => {
                warn!(framework = %fw, key, "a service status record that does not parse; ignored");
                self.service_records.remove(&id);
            }
            None => {
                self.service_records.remove(&id);
            }
        }
    }

    /// A removed framework's services go with it.
    pub(super) fn forget_service_records(&mut self, fw: &FrameworkId) {
        self.service_records.retain(|(f, _), _| f != fw);
        self.service_impostors.remove(fw);
    }

    /// The services as they are now (see the module header).
    pub fn services_view(&self) -> ServicesView {
        let mut services: Vec<ServiceView> = self
            .service_records
            .iter()
            .map(|((fw, name), status)| {
                let framework = self.frameworks.get(fw);
                let mut instances: Vec<InstanceView> = status
                    .instances
                    .iter()
                    .map(|i| {
                        let live = framework
                            .and_then(|f| f.tasks.get(&TaskId::from(i.task_id.as_str())))
                            .map(|t| t.state);
                        let health = match live {
                            Some(TaskState::Running) if !i.running => Health::Starting,
                            Some(TaskState::Running) if i.healthy && i.last_failure.is_some() => {
                                Health::Failing
                            }
                            Some(TaskState::Running) if i.healthy => Health::Healthy,
                            Some(TaskState::Running) if i.last_failure.is_some() => {
                                Health::Unhealthy
                            }
                            Some(TaskState::Running) => Health::Starting,
                            Some(s) if !s.is_terminal() => Health::Starting,
                            _ => Health::Gone,
                        };
                        let agent = self
                            .agents
                            .get(&bramble_proto::AgentId::from(i.agent_id.as_str()));
                        InstanceView {
                            task_id: i.task_id.clone(),
                            agent_id: i.agent_id.clone(),
                            host: i.host.clone(),
                            // An IPv4 agent on a dual-stack socket is seen as ::ffff:a.b.c.d.
                            address: agent.map(|a| a.address.ip().to_canonical()),
                            ports: i.ports.clone(),
                            health,
                            last_failure: i.last_failure.clone(),
                        }
                    })
                    .collect();
                instances.sort_by(|a, b| a.task_id.cmp(&b.task_id));
                let service_type = status
                    .service_type
                    .as_deref()
                    .filter(|t| check_service_type(t).is_ok())
                    .unwrap_or(DEFAULT_SERVICE_TYPE)
                    .to_string();
                ServiceView {
                    name: name.clone(),
                    framework_id: fw.clone(),
                    scheduler_connected: framework.is_some_and(|f| f.conn.is_some()),
                    service_type,
                    instances,
                }
            })
            .collect();
        services.sort_by(|a, b| {
            a.name
                .cmp(&b.name)
                .then(a.framework_id.cmp(&b.framework_id))
        });
        ServicesView { services }
    }

    /// After a burst: the view, published if it changed, at most every [`SERVICES_EVERY`]
    /// (the master's tick ends a burst too, so the last change is never left unpublished).
    /// Free without a service framework.
    pub(super) fn publish_services(&mut self, now: Instant) {
        if now < self.next_services
            || (self.service_records.is_empty() && self.feed.services_empty())
        {
            return;
        }
        self.next_services = now + SERVICES_EVERY;
        self.feed.publish_services(self.services_view());
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;
    use super::*;
    use bramble_proto::messages::FrameworkInfo;
    use bramble_proto::service_status::ServiceStatus;

    fn services_info(principal: Option<&str>) -> FrameworkInfo {
        FrameworkInfo {
            name: SERVICES_FRAMEWORK.into(),
            principal: principal.map(str::to_string),
            ..framework_info(Some("svc"))
        }
    }

    /// A tenant registering a framework called `bramble-services` must not publish services
    /// (and with them mDNS adverts); the shared framework and operator certificates may.
    #[test]
    fn only_a_shared_role_certificate_publishes_service_records() {
        let record = ServiceStatus::default().to_bytes();
        for (principal, published) in [
            (Some("mallory"), false),
            (None, false),
            (Some("framework"), true),
            (Some("operator"), true),
        ] {
            let now = Instant::now();
            let mut m = master(now);
            let identity = identity_of(Role::Framework, principal);
            let _fw = connect_scheduler(&mut m, 2, identity, services_info(principal), now);
            settle(&mut m, now);
            let fw = FrameworkId("svc".into());
            assert!(m.frameworks.contains_key(&fw), "{principal:?} subscribed");
            m.service_record_written(&fw, "status/web", Some(&record));
            let names: Vec<String> = m
                .services_view()
                .services
                .into_iter()
                .map(|s| s.name)
                .collect();
            let expected: Vec<String> = if published {
                vec!["web".into()]
            } else {
                vec![]
            };
            assert_eq!(names, expected, "principal {principal:?}");
        }
    }

    /// The scheduler beside the master connects with the node certificate (cards carry no
    /// other): it may register the service framework and publish, and nothing else.
    #[test]
    fn a_node_certificate_registers_only_the_service_framework() {
        let record = ServiceStatus::default().to_bytes();
        let now = Instant::now();
        let mut m = master(now);
        let identity = identity_of(Role::Node, Some("node"));
        let _fw = connect_scheduler(
            &mut m,
            2,
            identity.clone(),
            services_info(Some("node")),
            now,
        );
        settle(&mut m, now);
        let fw = FrameworkId("svc".into());
        assert!(
            m.frameworks.contains_key(&fw),
            "the service scheduler subscribed"
        );
        m.service_record_written(&fw, "status/web", Some(&record));
        let names: Vec<String> = m
            .services_view()
            .services
            .into_iter()
            .map(|s| s.name)
            .collect();
        assert_eq!(names, vec!["web".to_string()]);

        let other = FrameworkInfo {
            name: "anything-else".into(),
            ..framework_info(Some("other"))
        };
        let _rx = connect_scheduler(&mut m, 3, identity, other, now);
        settle(&mut m, now);
        assert!(
            !m.frameworks.contains_key(&FrameworkId("other".into())),
            "a node certificate registered a framework that is not the service scheduler"
        );
        assert!(
            m.conns.get(&3).is_some_and(|c| c.bound.is_none()),
            "its connection is bound to nothing"
        );
    }
}

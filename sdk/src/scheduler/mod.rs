//! The scheduler side: the [`Scheduler`] trait a framework implements and the
//! [`SchedulerDriver`] that connects it to the master.
//!
//! Shape: one run loop owns the QUIC connection. A reader task turns frames into events (the
//! codec's reads are not cancel-safe, so they never sit inside a `select!`), the loop hands
//! events to the scheduler one at a time, and driver calls made from callbacks or from other
//! tasks arrive over a channel and are written by the loop. Connection loss is a state, not an
//! error: the loop calls `disconnected`, re-subscribes with the same framework id (failover)
//! with exponential backoff, and only gives up once the framework's failover timeout — the
//! time the master keeps its tasks — has passed.
//!
//! Calls while disconnected: driver calls made while there is no subscribed connection return
//! [`SdkError::Disconnected`] instead of being queued. Offers die with the connection, and a
//! kill or launch decided before a disconnect is better decided again after
//! `registered(.., reregistered = true)`, with a reconciliation. A call accepted just before a
//! connection drops waits in the queue and is sent after the re-subscription.
//!
//! Files: this one holds the public surface (the trait, the config); `driver.rs` the handle
//! frameworks call; `runner.rs` connecting, subscribing and reconnecting; `session.rs` the
//! event loop of one subscribed connection and how it stops.

pub(crate) mod driver;
mod runner;
mod session;

pub use driver::SchedulerDriver;

use crate::error::SdkError;
use async_trait::async_trait;
use bramble_proto::framework_state::StateEntry;
use bramble_proto::identity::Credentials;
use bramble_proto::messages::{FrameworkApi, FrameworkInfo, Offer};
use bramble_proto::{AgentId, ExecutorId, FrameworkId, OfferId, TaskStatus};
use std::net::SocketAddr;
use std::time::Duration;

/// Failover timeout used by [`framework_info`]: how long the master keeps a disconnected
/// framework's tasks running, and how long the driver keeps trying to get back.
pub const DEFAULT_FAILOVER_TIMEOUT_SECS: f64 = 60.0;

/// What a framework implements to schedule work. Every method runs on the driver's event
/// loop, one at a time: a callback that takes long delays all later events (offers, status
/// updates, heartbeats are still sent). Use the `driver` to act; clone it to act from other
/// tasks.
#[async_trait]
pub trait Scheduler: Send {
    /// The master accepted the subscription. `reregistered` is true when the subscription
    /// re-used a framework id: after a reconnect, or when `FrameworkInfo::framework_id` was
    /// set for a failover. A good moment to reconcile.
    async fn registered(
        &mut self,
        _driver: &SchedulerDriver,
        _framework_id: &FrameworkId,
        _reregistered: bool,
    ) {
    }

    /// Resources offered to this framework. Answer each offer with `launch_tasks` or
    /// `decline_offer`; an unanswered offer is rescinded after the master's offer timeout.
    async fn resource_offers(&mut self, driver: &SchedulerDriver, offers: Vec<Offer>);

    /// The offer is no longer valid (agent lost, timeout, framework suppressed).
    async fn offer_rescinded(&mut self, _driver: &SchedulerDriver, _offer_id: &OfferId) {}

    /// A task changed state. With implicit acknowledgements (the default) the driver
    /// acknowledges the update only after this returns, so the agent stops resending it:
    /// whatever this awaits (e.g. writing the update to disk) happens before the
    /// acknowledgement. Work spawned elsewhere does not; use explicit acknowledgements then.
    async fn status_update(&mut self, driver: &SchedulerDriver, status: &TaskStatus);

    /// Bytes an executor sent with `ExecutorDriver::send_framework_message` (best effort).
    async fn framework_message(
        &mut self,
        _driver: &SchedulerDriver,
        _agent_id: &AgentId,
        _executor_id: &ExecutorId,
        _data: &[u8],
    ) {
    }

    /// The agent was removed; its tasks are reported LOST separately.
    async fn agent_lost(&mut self, _driver: &SchedulerDriver, _agent_id: &AgentId) {}

    /// An operator drained the agent (`draining`: nothing more is offered from it, and
    /// whatever runs there should move elsewhere before it goes for maintenance) or undrained
    /// it. Told for every draining agent after each (re)subscription, then on each change.
    async fn agent_draining(
        &mut self,
        _driver: &SchedulerDriver,
        _agent_id: &AgentId,
        _draining: bool,
    ) {
    }

    /// One of the framework's custom executors ended (its tasks are reported separately);
    /// `status` is its wait status when the agent knows it.
    async fn executor_lost(
        &mut self,
        _driver: &SchedulerDriver,
        _agent_id: &AgentId,
        _executor_id: &ExecutorId,
        _status: Option<i32>,
    ) {
    }

    /// The connection to the master dropped; the driver is reconnecting. Driver calls return
    /// `SdkError::Disconnected` until `registered` is called again.
    async fn disconnected(&mut self, _driver: &SchedulerDriver) {}

    /// With [`SchedulerConfig::leader_election`]: another instance (at `leader`, its address)
    /// is the active scheduler of `framework_id`; this one waits, connected, and gets
    /// `registered` if it takes over. Driver calls return `SdkError::Disconnected` meanwhile.
    async fn standing_by(
        &mut self,
        _driver: &SchedulerDriver,
        _framework_id: &FrameworkId,
        _leader: &str,
    ) {
    }

    /// The master reported an error. After a fatal one the driver's run returns
    /// `SdkError::Fatal` with the same message.
    async fn error(&mut self, _driver: &SchedulerDriver, _message: &str) {}

    /// The framework's whole key/value state as the master keeps it (see
    /// [`SchedulerDriver::put_state`]), delivered right after every `registered`: what the
    /// framework or an operator wrote survives the scheduler's restart.
    async fn state_loaded(&mut self, _driver: &SchedulerDriver, _entries: Vec<StateEntry>) {}

    /// One key of the framework's state changed, by this scheduler or an operator; `None`:
    /// deleted. A write the master refused comes back through `error` instead, naming the key.
    async fn state_changed(
        &mut self,
        _driver: &SchedulerDriver,
        _key: &str,
        _entry: Option<&StateEntry>,
    ) {
    }

    /// How often [`Scheduler::tick`] runs while subscribed; `None` (the default): never.
    /// Read at the start of each subscribed session.
    fn tick_interval(&self) -> Option<Duration> {
        None
    }

    /// Periodic work of the scheduler's own (health checks, timeouts), run on the event loop
    /// between events every [`Scheduler::tick_interval`] while subscribed, so it needs no
    /// lock around the scheduler's state. Not run while disconnected or standing by.
    async fn tick(&mut self, _driver: &SchedulerDriver) {}
}

/// What the driver needs to subscribe.
pub struct SchedulerConfig {
    /// The master's QUIC address.
    pub master: SocketAddr,
    /// The other masters of a replicated group, tried in turn after `master` (empty: one
    /// master). Wherever the driver dials, a standby's redirect to the leader is followed,
    /// and after a lost connection the other masters are tried before the lost leader.
    pub other_masters: Vec<SocketAddr>,
    /// A framework or operator certificate of the cluster (`Credentials::load(dir,
    /// Role::Framework)`, or a principal's: [`SchedulerConfig::as_principal`]). The master
    /// binds the framework to the principal it names, never to `framework.principal`.
    pub credentials: Credentials,
    /// Name, role and failover timeout; set `framework_id` to fail over from an earlier run.
    pub framework: FrameworkInfo,
    /// When true (the default) the driver acknowledges each update that carries a uuid after
    /// `status_update` returns. When false the framework calls
    /// [`SchedulerDriver::acknowledge`] itself, e.g. after persisting the update.
    pub implicit_acknowledgements: bool,
    /// Leader election among several instances of this framework (same principal and name,
    /// or the same `framework.framework_id`): when true the driver campaigns instead of
    /// subscribing, and while another instance is the active scheduler this one stands by
    /// (`Scheduler::standing_by`), connected, until the master makes it the active one
    /// (`registered`, under the framework's id, with its tasks and state as they were left).
    pub leader_election: bool,
}

impl SchedulerConfig {
    pub fn new(master: SocketAddr, credentials: Credentials, framework: FrameworkInfo) -> Self {
        Self {
            master,
            other_masters: Vec::new(),
            credentials,
            framework,
            implicit_acknowledgements: true,
            leader_election: false,
        }
    }
}

impl SchedulerConfig {
    /// This config dialling `masters` in turn (the first is `master`); the masters of a
    /// replicated group. An empty list leaves the config as it is.
    pub fn with_masters(mut self, masters: &[SocketAddr]) -> Self {
        if let Some((first, rest)) = masters.split_first() {
            self.master = *first;
            self.other_masters = rest.to_vec();
        }
        self
    }

    /// A config presenting principal `principal`'s certificate from the cluster directory
    /// `cluster` (`bramble cluster add-principal`; `None`: the shared framework certificate).
    /// Frameworks it registers belong to that principal: no other may fail them over, kill
    /// their tasks or tear them down.
    pub fn as_principal(
        master: SocketAddr,
        cluster: &std::path::Path,
        principal: Option<&str>,
        framework: FrameworkInfo,
    ) -> Result<Self, bramble_proto::identity::IdentityError> {
        let credentials =
            Credentials::load_as(cluster, principal, bramble_proto::identity::Role::Framework)?;
        Ok(Self::new(master, credentials, framework))
    }
}

/// A new framework's info: role `*`, failover timeout [`DEFAULT_FAILOVER_TIMEOUT_SECS`].
pub fn framework_info(name: impl Into<String>) -> FrameworkInfo {
    FrameworkInfo {
        framework_id: None,
        name: name.into(),
        role: "*".into(),
        failover_timeout_secs: DEFAULT_FAILOVER_TIMEOUT_SECS,
        principal: None,
        user: String::new(),
        webui_url: None,
        api: FrameworkApi::Bramble,
    }
}

/// Connects `scheduler` to the master and runs it until [`SchedulerDriver::stop`] is called
/// (returns the scheduler) or the framework cannot go on (returns why).
pub async fn run_scheduler<S: Scheduler>(
    config: SchedulerConfig,
    scheduler: S,
) -> Result<S, SdkError> {
    SchedulerDriver::new(config).run(scheduler).await
}

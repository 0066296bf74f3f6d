//! The service scheduler: a framework like any other, named [`FRAMEWORK_NAME`], that keeps
//! each stored spec's instances up. It is the glue between the driver and [`Book`] (the pure
//! core): specs come from the framework's key/value state in the master (`spec/<name>`,
//! written by `bramble service apply` through the operator API, so a spec can be applied while
//! this scheduler is down), offers become launches, updates become replacements and kills.
//!
//! Restarts: the framework id is kept in `<state_dir>/framework_id` and the failover timeout
//! is long ([`FAILOVER_TIMEOUT_SECS`]), so a restarted scheduler fails over under the same id
//! and its instances keep running meanwhile. After every (re)registration it asks the master
//! for all its live tasks, then for one made-up task id (the marker): the master answers calls
//! in order, so when the marker's LOST comes back every live instance has been reported, and
//! only then are offers used — no instance is launched twice for want of knowing it runs.
//!
//! Health checks run here, not on the agents: every [`TICK`] the driver calls `tick`, which
//! starts the probes that are due (each on its own tokio task, bounded by its timeout) and
//! takes in the results that came back, killing an instance its checks condemn. The same tick
//! writes each service's `status/<name>` record when it changed (at most once a second) and
//! carries out rollbacks: a failed rollout's previous spec is written back as `spec/<name>`
//! (compare-and-swap on the version seen, so an operator's newer apply wins), and each version
//! replaced is kept in `history/<name>` (`status.rs`).
//!
//! `scheduler/offers.rs` is the offer path (launch or decline), `scheduler/status_writer.rs`
//! writes the status records.

use super::book::{Book, HealthEvent, Probe, Seen, SpecChange};
use super::probe::probe;
use super::spec::Spec;
use super::status::{
    history_key, status_key, History, ServiceStatus, HISTORY_PREFIX, STATUS_PREFIX,
};
use bramble_sdk::{
    async_trait, FrameworkId, Offer, Scheduler, SchedulerConfig, SchedulerDriver, SdkError,
    StateEntry, TaskId, TaskStatus,
};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

mod offers;
mod status_writer;

/// The framework's name: `bramble service` finds the scheduler's state by it.
pub const FRAMEWORK_NAME: &str = bramble_proto::service_status::SERVICES_FRAMEWORK;
/// Where specs live in the framework's state: `spec/<service name>`.
pub const SPEC_PREFIX: &str = "spec/";
/// How long the master keeps the services running while this scheduler is away: a week, so
/// a Pi cluster's scheduler can be down over a holiday and come back to the same instances.
pub const FAILOVER_TIMEOUT_SECS: f64 = 7.0 * 24.0 * 3600.0;
/// The file under the state dir holding the framework id.
pub const FRAMEWORK_ID_FILE: &str = "framework_id";
/// The made-up task id whose LOST ends a reconciliation.
const RECONCILE_MARKER: &str = "bramble-services-reconciled";
/// Offers come back this soon when declined while reconciling or for a constraint.
const REFUSE_BRIEFLY_SECS: f64 = 1.0;
/// Offers nobody needs come back after this long (offers are suppressed meanwhile anyway).
const REFUSE_UNUSED_SECS: f64 = 30.0;
/// How often the driver calls `tick`: how late a due health check may start.
pub const TICK: Duration = Duration::from_millis(200);
/// A service's status record is rewritten at most this often.
const STATUS_EVERY: Duration = Duration::from_secs(1);

/// A probe's result: which instance, which check, and what it saw.
type ProbeResult = (TaskId, usize, Result<(), String>);

/// The fingerprint of `name`'s current spec in `book` (empty if it has none).
fn spec_fingerprint(book: &Book, name: &str) -> String {
    book.spec(name).map(Spec::fingerprint).unwrap_or_default()
}

/// The state key of service `name`'s spec.
pub fn spec_key(name: &str) -> String {
    format!("{SPEC_PREFIX}{name}")
}

/// Why the scheduler stopped.
#[derive(Debug, thiserror::Error)]
pub enum ServicesError {
    #[error("reading the framework id from {path}: {source}")]
    ReadId {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} holds {id:?}, which is not a framework id: {reason} (remove the file to register anew)")]
    BadId {
        path: PathBuf,
        id: String,
        reason: String,
    },
    #[error(transparent)]
    Sdk(#[from] SdkError),
}

pub struct ServiceScheduler {
    book: Book,
    /// The marker task id awaited; `Some` while reconciling.
    reconciling: Option<TaskId>,
    reconciliations: u64,
    /// Whether offers are suppressed, as last asked (`None`: unknown, after subscribing).
    suppressed: Option<bool>,
    /// Where the framework id is kept, if anywhere.
    id_file: Option<PathBuf>,
    probes_tx: mpsc::UnboundedSender<ProbeResult>,
    probes_rx: mpsc::UnboundedReceiver<ProbeResult>,
    /// The stored version of each spec, as last seen (a rollback is written over it).
    spec_versions: HashMap<String, u64>,
    histories: HashMap<String, History>,
    /// The status record last written per service, and when.
    written: HashMap<String, Vec<u8>>,
    last_status_write: Option<Instant>,
}

impl ServiceScheduler {
    /// A scheduler that keeps its framework id in `id_file` (if given).
    pub fn new(id_file: Option<PathBuf>) -> Self {
        let (probes_tx, probes_rx) = mpsc::unbounded_channel();
        Self {
            book: Book::default(),
            reconciling: None,
            reconciliations: 0,
            suppressed: None,
            id_file,
            probes_tx,
            probes_rx,
            spec_versions: HashMap::new(),
            histories: HashMap::new(),
            written: HashMap::new(),
            last_status_write: None,
        }
    }

    pub fn book(&self) -> &Book {
        &self.book
    }

    fn remember_id(&self, id: &FrameworkId) {
        let Some(path) = &self.id_file else { return };
        if std::fs::read_to_string(path).is_ok_and(|s| s.trim() == id.as_str()) {
            return;
        }
        match bramble_proto::durable::write(path, id.as_str().as_bytes()) {
            Ok(()) => {
                info!(framework = %id, file = %path.display(), "framework id saved; a restarted scheduler fails over under it")
            }
            Err(e) => {
                warn!(framework = %id, "cannot save the framework id ({e}); a restarted scheduler will register anew and the running instances stay with this id until its failover timeout")
            }
        }
    }

    fn set_spec_from(&mut self, driver: &SchedulerDriver, key: &str, entry: Option<&StateEntry>) {
        if let Some(name) = key.strip_prefix(HISTORY_PREFIX) {
            let history = entry
                .and_then(|e| History::parse(&e.value))
                .unwrap_or_default();
            self.note_previous(name, &history);
            self.histories.insert(name.to_string(), history);
            return;
        }
        let Some(name) = key.strip_prefix(SPEC_PREFIX) else {
            return;
        };
        match entry {
            None => {
                info!(service = name, "service removed; stopping its instances");
                self.book.set_spec(name, None);
                self.spec_versions.remove(name);
                // Its records go with it, so a service created again under the name starts clean.
                for k in [status_key(name), history_key(name)] {
                    let _ = driver.delete_state(k, None);
                }
                self.written.remove(name);
                self.histories.remove(name);
            }
            Some(e) => {
                let text = String::from_utf8_lossy(&e.value);
                match Spec::parse(key, &text) {
                    Ok(spec) if spec.name == name => {
                        info!(service = name, version = e.version, instances = spec.instances,
                            fingerprint = %spec.fingerprint(), "service spec");
                        self.spec_versions.insert(name.to_string(), e.version);
                        match self.book.set_spec(name, Some(spec)) {
                            SpecChange::NewVersion { previous } => {
                                info!(service = name, from = %previous.fingerprint(), "rolling out a new version");
                                let history = self.histories.entry(name.to_string()).or_default();
                                // `bramble service rollback` stores the newest of the history
                                // as the spec: that version is current again, no longer history.
                                let fingerprint = spec_fingerprint(&self.book, name);
                                history.forget_newest_if(&history_key(name), &fingerprint);
                                history.push(previous.to_toml());
                                let bytes = history.to_bytes();
                                if let Err(err) = driver.put_state(history_key(name), bytes, None) {
                                    debug!(service = name, "history not written ({err})");
                                }
                            }
                            SpecChange::RolledBack => {
                                warn!(service = name, "rolled back to the previous version");
                                // The version gone back to is no longer history.
                                if let Some(history) = self.histories.get_mut(name) {
                                    history.specs.pop();
                                    let bytes = history.to_bytes();
                                    let _ = driver.put_state(history_key(name), bytes, None);
                                }
                            }
                            SpecChange::Created => {
                                let history = self.histories.get(name).cloned().unwrap_or_default();
                                self.note_previous(name, &history);
                            }
                            SpecChange::Same => {}
                        }
                    }
                    Ok(spec) => {
                        warn!(key, named = %spec.name, "stored spec names another service; ignored")
                    }
                    Err(err) => warn!("stored spec unreadable, keeping the previous one: {err}"),
                }
            }
        }
    }

    /// Tells the book the newest spec of a service's history (what a rollback goes to).
    fn note_previous(&mut self, name: &str, history: &History) {
        if let Some(text) = history.specs.last() {
            match Spec::parse(&history_key(name), text) {
                Ok(spec) => self.book.set_previous(name, spec),
                Err(e) => debug!(service = name, "history's newest spec unreadable: {e}"),
            }
        }
    }

    /// Starts the probes that are due, each on its own task.
    fn start_probes(&mut self, now: Instant) {
        for Probe {
            task_id,
            index,
            check,
            host,
            ports,
        } in self.book.due_probes(now)
        {
            let tx = self.probes_tx.clone();
            tokio::spawn(async move {
                let outcome = probe(&check, &host, &ports).await;
                let _ = tx.send((task_id, index, outcome));
            });
        }
    }

    /// Takes in the probes' results: kills the instances their checks condemn.
    fn take_probe_results(&mut self, driver: &SchedulerDriver, now: Instant) {
        while let Ok((task_id, index, outcome)) = self.probes_rx.try_recv() {
            match self
                .book
                .probe_result(&task_id, index, outcome, now, bramble_proto::unix_now())
            {
                HealthEvent::Nothing => {}
                HealthEvent::Healthy { service } => {
                    info!(service, task = %task_id, "instance healthy")
                }
                HealthEvent::Failing { service, message } => {
                    info!(service, task = %task_id, "{message}")
                }
                HealthEvent::Kill { service, reason } => {
                    warn!(service, task = %task_id, "killing an unhealthy instance: {reason}");
                    if let Err(e) = driver.kill_task(task_id.clone()) {
                        debug!(task = %task_id, "kill not sent ({e}); asked again after re-registration");
                    }
                }
            }
        }
    }

    /// Writes back the previous spec of each service whose rollout failed.
    fn roll_back(&mut self, driver: &SchedulerDriver) {
        for rb in self.book.take_rollbacks() {
            let version = self.spec_versions.get(&rb.service).copied();
            warn!(service = %rb.service, "{}", rb.reason);
            let text = rb.spec.to_toml().into_bytes();
            if let Err(e) = driver.put_state(spec_key(&rb.service), text, version) {
                warn!(service = %rb.service, "cannot write the rollback ({e})");
            }
        }
    }

    /// Kills what should not run, and asks for offers only while something is missing.
    fn act(&mut self, driver: &SchedulerDriver) {
        if self.reconciling.is_some() {
            return;
        }
        for task_id in self.book.kills() {
            info!(task = %task_id, "killing instance");
            if let Err(e) = driver.kill_task(task_id.clone()) {
                debug!(task = %task_id, "kill not sent ({e}); asked again after re-registration");
            }
        }
        let want = self.book.wants_offers();
        if want && self.suppressed != Some(false) {
            if driver.revive_offers().is_ok() {
                self.suppressed = Some(false);
            }
        } else if !want && self.suppressed != Some(true) && driver.suppress_offers().is_ok() {
            self.suppressed = Some(true);
            info!(
                instances = self.book.instances().count(),
                "every service has its instances; offers suppressed"
            );
        }
    }
}

#[async_trait]
impl Scheduler for ServiceScheduler {
    async fn registered(
        &mut self,
        driver: &SchedulerDriver,
        framework_id: &FrameworkId,
        reregistered: bool,
    ) {
        info!(framework = %framework_id, reregistered, "service scheduler registered; reconciling its instances");
        self.remember_id(framework_id);
        self.book.forget_kills();
        // The master tells every draining agent again after this.
        self.book.forget_draining();
        self.suppressed = None;
        self.reconciliations += 1;
        let marker = TaskId(format!("{RECONCILE_MARKER}-{}", self.reconciliations));
        let asked = driver
            .reconcile_tasks(Vec::new())
            .and_then(|()| driver.reconcile_tasks(vec![marker.clone()]));
        match asked {
            Ok(()) => self.reconciling = Some(marker),
            Err(e) => warn!("cannot reconcile ({e}); waiting for the next registration"),
        }
    }

    async fn state_loaded(&mut self, driver: &SchedulerDriver, entries: Vec<StateEntry>) {
        let stored: Vec<&str> = entries
            .iter()
            .filter_map(|e| e.key.strip_prefix(SPEC_PREFIX))
            .collect();
        for name in self.book.service_names() {
            if !stored.contains(&name.as_str()) {
                self.book.set_spec(&name, None);
            }
        }
        // Histories and status records first: the specs then find their previous versions,
        // and the instances adopted later their ports.
        self.histories.clear();
        self.written.clear();
        for e in &entries {
            if let Some(name) = e.key.strip_prefix(HISTORY_PREFIX) {
                self.histories.insert(
                    name.to_string(),
                    History::parse(&e.value).unwrap_or_default(),
                );
            } else if e.key.starts_with(STATUS_PREFIX) {
                if let Some(status) = ServiceStatus::parse(&e.value) {
                    self.book.remember_places(&status);
                }
            }
        }
        for e in &entries {
            if e.key.starts_with(SPEC_PREFIX) {
                self.set_spec_from(driver, &e.key, Some(e));
            }
        }
        info!(services = stored.len(), "service specs loaded");
        self.act(driver);
    }

    async fn state_changed(
        &mut self,
        driver: &SchedulerDriver,
        key: &str,
        entry: Option<&StateEntry>,
    ) {
        // Our own writes come back here too; only specs (and histories) matter.
        if key.starts_with(STATUS_PREFIX) {
            return;
        }
        self.set_spec_from(driver, key, entry);
        self.act(driver);
    }

    async fn resource_offers(&mut self, driver: &SchedulerDriver, offers: Vec<Offer>) {
        let now = Instant::now();
        for offer in offers {
            self.offer(driver, offer, now);
        }
        self.act(driver);
    }

    async fn status_update(&mut self, driver: &SchedulerDriver, status: &TaskStatus) {
        if self.reconciling.as_ref() == Some(&status.task_id) {
            info!(
                instances = self.book.instances().count(),
                "reconciled; keeping the services up"
            );
            self.reconciling = None;
            self.act(driver);
            // Offers declined while reconciling come back now rather than after their filter.
            if self.book.wants_offers() {
                let _ = driver.revive_offers();
            }
            return;
        }
        if status.task_id.as_str().starts_with(RECONCILE_MARKER) {
            return; // An earlier reconciliation's marker.
        }
        match self.book.update(status, Instant::now()) {
            Seen::Nothing => {}
            Seen::Running { service } => {
                info!(service, task = %status.task_id, "instance running")
            }
            Seen::Ended {
                service,
                state,
                message,
                backoff,
            } => match backoff {
                Some(delay) => info!(service, task = %status.task_id, %state, message,
                    backoff_secs = delay.as_secs_f64(), "instance ended; replacing it"),
                None => info!(service, task = %status.task_id, %state, "instance stopped"),
            },
            Seen::Stray => {
                info!(task = %status.task_id, state = %status.state, "killing a task no service accounts for");
                let _ = driver.kill_task(status.task_id.clone());
            }
        }
        self.act(driver);
    }

    async fn agent_draining(
        &mut self,
        driver: &SchedulerDriver,
        agent_id: &bramble_sdk::AgentId,
        draining: bool,
    ) {
        let moving = self
            .book
            .instances()
            .filter(|i| &i.agent_id == agent_id)
            .count();
        if draining {
            info!(agent = %agent_id, instances = moving, "agent draining; moving its instances elsewhere, keeping each service's healthy minimum");
        } else {
            info!(agent = %agent_id, "agent undrained");
        }
        self.book.set_draining(agent_id, draining);
        self.act(driver);
    }

    fn tick_interval(&self) -> Option<Duration> {
        Some(TICK)
    }

    async fn tick(&mut self, driver: &SchedulerDriver) {
        if self.reconciling.is_some() {
            return;
        }
        let now = Instant::now();
        self.take_probe_results(driver, now);
        self.start_probes(now);
        self.roll_back(driver);
        self.write_status(driver, now);
        self.act(driver);
    }

    async fn disconnected(&mut self, _driver: &SchedulerDriver) {
        warn!("lost the master; the instances keep running while the driver reconnects");
    }

    async fn error(&mut self, _driver: &SchedulerDriver, message: &str) {
        warn!("the master reported: {message}");
    }
}

/// The framework id kept in `state_dir`, if any.
pub fn load_framework_id(state_dir: &Path) -> Result<Option<FrameworkId>, ServicesError> {
    let path = state_dir.join(FRAMEWORK_ID_FILE);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(ServicesError::ReadId { path, source }),
    };
    let id = FrameworkId(text.trim().to_string());
    id.check().map_err(|e| ServicesError::BadId {
        path: path.clone(),
        id: id.0.clone(),
        reason: e.to_string(),
    })?;
    Ok(Some(id))
}

/// Runs the service scheduler until `until` resolves (then disconnects, leaving the
/// instances running for the failover timeout) or the framework cannot go on. `config`'s
/// framework info is replaced by the service framework's (name, failover timeout, and the id
/// kept in `state_dir`).
pub async fn run_services(
    mut config: SchedulerConfig,
    state_dir: &Path,
    until: impl std::future::Future<Output = ()> + Send,
) -> Result<(), ServicesError> {
    std::fs::create_dir_all(state_dir).map_err(|source| ServicesError::ReadId {
        path: state_dir.to_path_buf(),
        source,
    })?;
    let id = load_framework_id(state_dir)?;
    match &id {
        Some(id) => info!(framework = %id, "failing over as the service framework"),
        None => info!("registering the service framework for the first time"),
    }
    config.framework.name = FRAMEWORK_NAME.into();
    config.framework.failover_timeout_secs = FAILOVER_TIMEOUT_SECS;
    config.framework.framework_id = id;
    let driver = SchedulerDriver::new(config);
    let scheduler = ServiceScheduler::new(Some(state_dir.join(FRAMEWORK_ID_FILE)));
    let run = driver.run(scheduler);
    tokio::pin!(run);
    tokio::pin!(until);
    tokio::select! {
        result = &mut run => { result?; }
        () = &mut until => {
            info!("stopping the service scheduler; the instances keep running");
            driver.stop(true);
            (&mut run).await?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::services::status::{History, ServiceStatus};
    use bramble_proto::messages::SchedulerCall;
    use bramble_proto::{PortRange, Resources};
    use bramble_sdk::testing::SchedulerTest;
    use bramble_sdk::{status, OfferId, TaskState};
    use std::time::Duration;

    const WEB: &str = "name = \"web\"\ninstances = 2\ncmd = \"exec sleep 100\"\ncpus = 0.1\nmem = 16\nports = 1\n";

    fn entry(key: &str, text: &str, version: u64) -> StateEntry {
        StateEntry {
            key: key.into(),
            value: text.as_bytes().to_vec(),
            version,
        }
    }

    fn offer(id: &str) -> Offer {
        Offer {
            id: id.into(),
            framework_id: "fw".into(),
            agent_id: "a1".into(),
            hostname: "pi-1".into(),
            resources: Resources::new(4.0, 1024).with_ports([PortRange::new(31000, 31010)]),
            attributes: Default::default(),
            executor_ids: vec![],
        }
    }

    fn reconciled_marker(calls: &[SchedulerCall]) -> TaskId {
        calls
            .iter()
            .find_map(|c| match c {
                SchedulerCall::Reconcile { task_ids } if task_ids.len() == 1 => {
                    Some(task_ids[0].clone())
                }
                _ => None,
            })
            .expect("a marker reconciliation")
    }

    #[tokio::test]
    async fn offers_wait_for_reconciliation_then_launch_the_specs_instances() {
        let dir = tempfile::tempdir().expect("tempdir");
        let id_file = dir.path().join(FRAMEWORK_ID_FILE);
        let mut kit = SchedulerTest::new(ServiceScheduler::new(Some(id_file.clone())));
        kit.register("fw-services").await;
        assert_eq!(
            load_framework_id(dir.path()).expect("readable"),
            Some(FrameworkId::from("fw-services"))
        );
        kit.state(vec![entry("spec/web", WEB, 1)]).await;
        let marker = reconciled_marker(kit.calls());
        kit.offers(vec![offer("o1")]).await;
        assert!(
            kit.launched().is_empty(),
            "no launch before reconciliation ends"
        );
        assert_eq!(kit.declined(), vec![OfferId::from("o1")]);
        // A live instance from before the restart is reported, then the marker.
        let fp = Spec::parse("t", WEB).expect("valid").fingerprint();
        let mut live = status(&TaskId(format!("web.{fp}.old")), TaskState::Running);
        live.agent_id = Some("a1".into());
        kit.update(live).await;
        kit.update(status(&marker, TaskState::Lost)).await;
        kit.take_calls();
        kit.offers(vec![offer("o2")]).await;
        let launched = kit.launched();
        assert_eq!(launched.len(), 1, "one adopted, one launched: {launched:?}");
        // Everything is up: offers are suppressed.
        assert!(kit
            .calls()
            .iter()
            .any(|c| matches!(c, SchedulerCall::Suppress)));
    }

    #[tokio::test]
    async fn a_removed_spec_kills_its_instances_and_a_stray_is_killed() {
        let mut kit = SchedulerTest::new(ServiceScheduler::new(None));
        kit.register("fw").await;
        kit.state(vec![entry("spec/web", WEB, 1)]).await;
        let marker = reconciled_marker(kit.calls());
        kit.update(status(&marker, TaskState::Lost)).await;
        kit.offers(vec![offer("o1")]).await;
        let launched = kit.launched();
        assert_eq!(launched.len(), 2);
        kit.take_calls();
        kit.state_changed("spec/web", None).await;
        let mut killed = kit.killed();
        killed.sort();
        let mut expected: Vec<TaskId> = launched.iter().map(|t| t.task_id.clone()).collect();
        expected.sort();
        assert_eq!(killed, expected);
        let mut stray = status(&TaskId::from("mystery"), TaskState::Running);
        stray.agent_id = Some("a1".into());
        kit.take_calls();
        kit.update(stray).await;
        assert_eq!(kit.killed(), vec![TaskId::from("mystery")]);
    }
    /// A one-address HTTP server answering every request with `status`; its port.
    async fn http_server(status: u16) -> u16 {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = listener.local_addr().expect("addr").port();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                let mut buf = [0u8; 512];
                let _ = s.read(&mut buf).await;
                let _ = s
                    .write_all(format!("HTTP/1.0 {status} X\r\n\r\n").as_bytes())
                    .await;
            }
        });
        port
    }

    /// The last value written under `key`, if any.
    fn written(calls: &[SchedulerCall], key: &str) -> Option<Vec<u8>> {
        calls.iter().rev().find_map(|c| match c {
            SchedulerCall::WriteState(bramble_proto::framework_state::StateWrite::Put {
                key: k,
                value,
                ..
            }) if k == key => Some(value.clone()),
            _ => None,
        })
    }

    #[tokio::test]
    async fn ticks_probe_running_instances_and_kill_one_whose_http_check_fails() {
        let port = http_server(500).await;
        let spec = "name = \"web\"\ninstances = 1\ncmd = \"x\"\ncpus = 0.1\nmem = 16\nports = 1\n[[health]]\nprotocol = \"http\"\npath = \"/health\"\ngrace_secs = 0.0\ninterval_secs = 0.1\nmax_failures = 2\n";
        let mut kit = SchedulerTest::new(ServiceScheduler::new(None));
        kit.register("fw").await;
        kit.state(vec![entry("spec/web", spec, 1)]).await;
        let marker = reconciled_marker(kit.calls());
        kit.update(status(&marker, TaskState::Lost)).await;
        let mut o = offer("o1");
        o.hostname = "127.0.0.1".into();
        o.resources = Resources::new(4.0, 1024).with_ports([PortRange::new(port, port)]);
        kit.offers(vec![o]).await;
        let task = kit.launched().remove(0);
        kit.tick().await;
        assert!(kit.killed().is_empty(), "nothing is probed before RUNNING");
        kit.update(status(&task, TaskState::Running)).await;
        let deadline = Instant::now() + Duration::from_secs(10);
        while kit.killed().is_empty() {
            assert!(
                Instant::now() < deadline,
                "the failing instance was never killed"
            );
            kit.tick().await;
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(kit.killed(), vec![task.task_id.clone()]);
        // The kill and its reason reach the status record.
        let record = loop {
            assert!(Instant::now() < deadline, "no status record with the kill");
            kit.tick().await;
            let found = written(kit.calls(), "status/web").and_then(|v| ServiceStatus::parse(&v));
            if let Some(s) = found.filter(|s| !s.kills.is_empty()) {
                break s;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        let reason = &record.kills[0].reason;
        assert!(
            reason.contains("http GET /health on PORT0") && reason.contains("answered 500"),
            "{reason}"
        );
    }

    #[tokio::test]
    async fn an_operators_rollback_takes_the_version_out_of_history_and_keeps_the_one_replaced() {
        let mut kit = SchedulerTest::new(ServiceScheduler::new(None));
        kit.register("fw").await;
        kit.state(vec![entry("spec/web", WEB, 1)]).await;
        let v2 = WEB.replace("sleep 100", "sleep 200");
        kit.state_changed("spec/web", Some(entry("spec/web", &v2, 2)))
            .await;
        let history = written(kit.calls(), "history/web").expect("history written");
        // The master echoes the write back.
        kit.state_changed(
            "history/web",
            Some(entry("history/web", &String::from_utf8_lossy(&history), 1)),
        )
        .await;
        kit.take_calls();
        // `bramble service rollback web` stores v1 (the newest of the history) as the spec.
        kit.state_changed("spec/web", Some(entry("spec/web", WEB, 3)))
            .await;
        let history = written(kit.calls(), "history/web")
            .and_then(|v| History::parse(&v))
            .expect("history written");
        let specs: Vec<Spec> = history
            .specs
            .iter()
            .map(|t| Spec::parse("h", t).expect("stored"))
            .collect();
        assert_eq!(
            specs,
            vec![Spec::parse("t", &v2).expect("valid")],
            "v1 runs again; v2 is what a second rollback goes to"
        );
    }

    #[tokio::test]
    async fn a_new_version_keeps_the_replaced_spec_in_history_and_a_rollback_is_written_back() {
        let mut kit = SchedulerTest::new(ServiceScheduler::new(None));
        kit.register("fw").await;
        kit.state(vec![entry("spec/web", WEB, 1)]).await;
        let marker = reconciled_marker(kit.calls());
        kit.update(status(&marker, TaskState::Lost)).await;
        kit.offers(vec![offer("o1")]).await;
        let old = kit.launched();
        for t in &old {
            kit.update(status(t, TaskState::Running)).await;
        }
        kit.take_calls();
        let v2 = WEB.replace("sleep 100", "sleep 200");
        kit.state_changed("spec/web", Some(entry("spec/web", &v2, 2)))
            .await;
        let history = written(kit.calls(), "history/web")
            .and_then(|v| History::parse(&v))
            .expect("history written");
        assert_eq!(history.specs.len(), 1);
        let v1 = Spec::parse("t", WEB).expect("valid");
        assert_eq!(Spec::parse("h", &history.specs[0]).expect("stored"), v1);
        // Two new instances end by themselves (rollback_after = 2): v1 is written back over
        // version 2, compare-and-swap.
        for n in 0..2 {
            kit.take_calls();
            kit.offers(vec![offer(&format!("o-new-{n}"))]).await;
            let new = kit.launched();
            assert_eq!(new.len(), 1, "one at a time (max_surge = 1)");
            kit.update(status(&new[0], TaskState::Failed)).await;
            tokio::time::sleep(Duration::from_millis(1100)).await;
        }
        kit.take_calls();
        kit.tick().await;
        let back = kit.calls().iter().find_map(|c| match c {
            SchedulerCall::WriteState(bramble_proto::framework_state::StateWrite::Put {
                key,
                value,
                expected_version,
            }) if key == "spec/web" => Some((value.clone(), *expected_version)),
            _ => None,
        });
        let (value, expected) = back.expect("the rollback is written");
        assert_eq!(expected, Some(2));
        let written_back = Spec::parse("back", &String::from_utf8_lossy(&value)).expect("spec");
        assert_eq!(written_back, v1);
        assert!(kit.killed().is_empty(), "the old instances are kept");
    }
}

//! The run loop's inner half: one subscribed connection. Events go to the scheduler one at a
//! time, queued driver calls and heartbeats go to the master, and `stop()` ends the session as
//! asked (teardown confirmed by the master, or a plain disconnect for failover).
//!
//! Work is taken in batches: the events already read are handed over one by one and their
//! implicit acknowledgements leave together in one write, as do the calls queued meanwhile
//! (a burst of tiny tasks is a burst of updates; one write per update would dominate).

use super::driver::ack_call;
use super::runner::{Runner, Session};
use super::Scheduler;
use crate::error::SdkError;
use crate::AbortOnDrop;
use bramble_proto::codec::{CodecError, FrameReader, FrameWriter, MAX_BATCH};
use bramble_proto::messages::{MasterEvent, SchedulerCall};
use std::time::Duration;
use tokio::sync::mpsc;
use tracing::{debug, error, info, warn};

/// How long `stop(false)` waits for the master to confirm the teardown.
const TEARDOWN_TIMEOUT: Duration = Duration::from_secs(5);
/// Events read ahead of the scheduler. Bounded so that a scheduler that cannot keep up
/// pushes back on the master (which then drops it as too slow) instead of buffering forever.
const EVENT_QUEUE: usize = 256;
/// QUIC close code for a deliberate close by this side.
pub(super) const CLOSE_OK: u32 = 0;

/// How a subscribed session ended.
pub(super) enum SessionEnd {
    Stopped,
    Fatal(String),
    Lost(String),
}

type EventResult = Result<MasterEvent, CodecError>;

impl Runner {
    /// The event loop of one subscribed connection.
    pub(super) async fn serve<S: Scheduler>(
        &mut self,
        session: Session,
        scheduler: &mut S,
    ) -> Result<SessionEnd, SdkError> {
        let Session {
            conn,
            reader,
            mut writer,
            heartbeat,
            ..
        } = session;
        let (events_tx, mut events) = mpsc::channel(EVENT_QUEUE);
        let _reader_task = AbortOnDrop(tokio::spawn(read_events(reader, events_tx)));
        let mut heartbeats =
            tokio::time::interval_at(tokio::time::Instant::now() + heartbeat, heartbeat);
        heartbeats.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // The scheduler's own timer (`Scheduler::tick`), if it asked for one.
        let tick_every = scheduler
            .tick_interval()
            .map(|d| d.max(Duration::from_millis(1)));
        let first_tick = tick_every.unwrap_or(Duration::from_secs(3600));
        let mut ticks = tokio::time::interval_at(
            tokio::time::Instant::now() + first_tick,
            tick_every.unwrap_or(first_tick),
        );
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let lost = |conn: &quinn::Connection, what: String| {
            SessionEnd::Lost(match conn.close_reason() {
                Some(reason) => format!("{what} (connection closed: {reason})"),
                None => what,
            })
        };
        let mut calls = Vec::with_capacity(MAX_BATCH);
        let mut batch = Vec::with_capacity(MAX_BATCH);
        let mut acks = Vec::with_capacity(MAX_BATCH);
        loop {
            let stop_requested = *self.stop.borrow_and_update();
            if let Some(failover) = stop_requested {
                // The reader stays up: a teardown waits for the master's confirmation.
                return self
                    .stop_session(conn, writer, &mut events, failover)
                    .await
                    .map(|()| SessionEnd::Stopped);
            }
            tokio::select! {
                biased;
                Ok(()) = self.stop.changed() => {}
                n = self.calls.recv_many(&mut calls, MAX_BATCH), if !self.calls.is_closed() || !self.calls.is_empty() => {
                    if n > 0 {
                        self.remember_webui_url(&calls);
                        let sent = writer.send_batch(&calls).await;
                        if let Err(e) = sent {
                            return Ok(lost(&conn, format!("sending {}: {e}", call_name(&calls[0]))));
                        }
                        calls.clear();
                    }
                }
                n = events.recv_many(&mut batch, MAX_BATCH) => {
                    if n == 0 {
                        return Ok(lost(&conn, "the master closed the control stream".into()));
                    }
                    let mut ended = None;
                    for event in batch.drain(..) {
                        let event = match event {
                            Ok(event) => event,
                            Err(CodecError::Closed) => {
                                ended = Some(lost(&conn, "the master closed the control stream".into()));
                                break;
                            }
                            Err(e) => {
                                ended = Some(lost(&conn, format!("reading from the master: {e}")));
                                break;
                            }
                        };
                        if let Some(end) = self.dispatch(event, scheduler, &mut acks, &conn).await {
                            ended = Some(end);
                            break;
                        }
                        // A scheduler that stopped gets no further callbacks.
                        if self.stop.borrow().is_some() {
                            break;
                        }
                    }
                    batch.clear();
                    if !acks.is_empty() {
                        let sent = writer.send_batch(&acks).await;
                        acks.clear();
                        if let Err(e) = sent {
                            return Ok(SessionEnd::Lost(format!(
                                "sending acknowledgements: {e} ({})",
                                conn.close_reason().map_or_else(
                                    || "connection open".into(),
                                    |r| r.to_string()
                                )
                            )));
                        }
                    }
                    if let Some(end) = ended {
                        return Ok(end);
                    }
                }
                _ = heartbeats.tick() => {
                    if let Err(e) = writer.send(&SchedulerCall::Heartbeat).await {
                        return Ok(lost(&conn, format!("sending heartbeat: {e}")));
                    }
                }
                _ = ticks.tick(), if tick_every.is_some() => {
                    scheduler.tick(&self.driver).await;
                }
            }
        }
    }

    /// A re-subscription (after a reconnect) must not take back a web UI URL the scheduler
    /// published since: the info it subscribes with follows `set_webui_url`.
    fn remember_webui_url(&mut self, calls: &[SchedulerCall]) {
        for call in calls {
            if let SchedulerCall::SetWebuiUrl(url) = call {
                self.info.webui_url = url.clone();
            }
        }
    }

    /// Hands one event to the scheduler; an implicit acknowledgement goes to `acks`, sent by
    /// the caller after the batch. `Some` ends the session.
    async fn dispatch<S: Scheduler>(
        &self,
        event: MasterEvent,
        scheduler: &mut S,
        acks: &mut Vec<SchedulerCall>,
        conn: &quinn::Connection,
    ) -> Option<SessionEnd> {
        let driver = &self.driver;
        match event {
            MasterEvent::Offers(offers) => {
                debug!(count = offers.len(), "offers received");
                scheduler.resource_offers(driver, offers).await;
            }
            MasterEvent::Rescind { offer_id } => {
                debug!(offer = %offer_id, "offer rescinded");
                scheduler.offer_rescinded(driver, &offer_id).await;
            }
            MasterEvent::Update(status) => {
                debug!(task = %status.task_id, state = %status.state, uuid = ?status.uuid, "status update");
                scheduler.status_update(driver, &status).await;
                if driver.acknowledges_implicitly() {
                    match ack_call(&status) {
                        Ok(Some(ack)) => acks.push(ack),
                        Ok(None) => {}
                        Err(why) => warn!("{why}"),
                    }
                }
            }
            MasterEvent::Message {
                agent_id,
                executor_id,
                data,
            } => {
                scheduler
                    .framework_message(driver, &agent_id, &executor_id, &data)
                    .await;
            }
            MasterEvent::AgentLost { agent_id } => {
                info!(agent = %agent_id, "agent lost");
                scheduler.agent_lost(driver, &agent_id).await;
            }
            MasterEvent::AgentDraining { agent_id, draining } => {
                info!(agent = %agent_id, draining, "agent drain changed");
                scheduler.agent_draining(driver, &agent_id, draining).await;
            }
            MasterEvent::ExecutorLost {
                agent_id,
                executor_id,
                status,
            } => {
                info!(agent = %agent_id, executor = %executor_id, status = ?status, "executor lost");
                scheduler
                    .executor_lost(driver, &agent_id, &executor_id, status)
                    .await;
            }
            MasterEvent::Error {
                message,
                fatal: false,
            } => {
                warn!("master reported an error: {message}");
                scheduler.error(driver, &message).await;
            }
            MasterEvent::Error {
                message,
                fatal: true,
            } => {
                error!("master ended the framework: {message}");
                scheduler.error(driver, &message).await;
                conn.close(quinn::VarInt::from_u32(CLOSE_OK), b"fatal error");
                return Some(SessionEnd::Fatal(message));
            }
            MasterEvent::Subscribed { framework_id, .. } => {
                warn!(framework = %framework_id, "unexpected second Subscribed; ignored");
            }
            MasterEvent::Standby { framework_id, .. } => {
                warn!(framework = %framework_id, "unexpected Standby while subscribed; ignored");
            }
            MasterEvent::HeartbeatAck => {}
            MasterEvent::State { entries } => {
                debug!(keys = entries.len(), "framework state received");
                scheduler.state_loaded(driver, entries).await;
            }
            MasterEvent::StateChanged { key, entry } => {
                debug!(key = %key, version = ?entry.as_ref().map(|e| e.version), "framework state changed");
                scheduler.state_changed(driver, &key, entry.as_ref()).await;
            }
        }
        None
    }

    /// Ends a subscribed session for `stop(failover)`: sends the calls queued before the stop,
    /// then either tears the framework down (waiting for the master to confirm) or just
    /// closes the connection.
    async fn stop_session(
        &mut self,
        conn: quinn::Connection,
        mut writer: FrameWriter<quinn::SendStream>,
        events: &mut mpsc::Receiver<EventResult>,
        failover: bool,
    ) -> Result<(), SdkError> {
        let mut write_error = None;
        while let Ok(call) = self.calls.try_recv() {
            if let Err(e) = writer.send(&call).await {
                write_error = Some(format!("sending {}: {e}", call_name(&call)));
                break;
            }
        }
        let framework = self
            .info
            .framework_id
            .as_ref()
            .map(ToString::to_string)
            .unwrap_or_default();
        if failover {
            info!(framework = %framework, failover_timeout_secs = self.info.failover_timeout_secs,
                "scheduler stopped (failover): its tasks keep running until the failover timeout");
        } else {
            if write_error.is_none() {
                if let Err(e) = writer.send(&SchedulerCall::Teardown).await {
                    write_error = Some(format!("sending Teardown: {e}"));
                }
            }
            if let Some(reason) = write_error {
                return Err(SdkError::TeardownNotDelivered {
                    addr: self.addr,
                    reason,
                });
            }
            // The master answers a teardown by removing the framework and telling us with a
            // fatal error (or by closing); either means the teardown is done. Our send side
            // stays open until then: the master stops writing to a peer whose stream ended.
            let confirmed = tokio::time::timeout(TEARDOWN_TIMEOUT, async {
                loop {
                    match events.recv().await {
                        Some(Ok(MasterEvent::Error { fatal: true, .. })) => return true,
                        Some(Ok(_)) => continue,
                        Some(Err(_)) | None => return false,
                    }
                }
            })
            .await;
            match confirmed {
                Ok(true) => info!(framework = %framework, "framework torn down"),
                Ok(false) => {
                    info!(framework = %framework, "teardown sent; the master closed the connection")
                }
                Err(_) => {
                    warn!(framework = %framework, "teardown sent but not confirmed within {TEARDOWN_TIMEOUT:?}")
                }
            }
            let _ = writer.get_mut().finish();
        }
        conn.close(quinn::VarInt::from_u32(CLOSE_OK), b"scheduler stopped");
        Ok(())
    }

    /// `stop()` was called while reconnecting and the new session just came up.
    pub(super) async fn finish(
        &mut self,
        session: Session,
        failover: bool,
    ) -> Result<(), SdkError> {
        let Session {
            conn,
            reader,
            writer,
            ..
        } = session;
        let (events_tx, mut events) = mpsc::channel(EVENT_QUEUE);
        let _reader_task = AbortOnDrop(tokio::spawn(read_events(reader, events_tx)));
        self.stop_session(conn, writer, &mut events, failover).await
    }
}

async fn read_events(
    mut reader: FrameReader<quinn::RecvStream>,
    events: mpsc::Sender<EventResult>,
) {
    loop {
        let event = reader.recv::<MasterEvent>().await;
        let end = event.is_err();
        if events.send(event).await.is_err() || end {
            return;
        }
    }
}

fn call_name(call: &SchedulerCall) -> &'static str {
    match call {
        SchedulerCall::Subscribe(_) => "Subscribe",
        SchedulerCall::Accept { .. } => "Accept",
        SchedulerCall::Decline { .. } => "Decline",
        SchedulerCall::Revive => "Revive",
        SchedulerCall::Suppress => "Suppress",
        SchedulerCall::Kill { .. } => "Kill",
        SchedulerCall::ShutdownExecutor { .. } => "ShutdownExecutor",
        SchedulerCall::Acknowledge { .. } => "Acknowledge",
        SchedulerCall::Reconcile { .. } => "Reconcile",
        SchedulerCall::Message { .. } => "Message",
        SchedulerCall::Teardown => "Teardown",
        SchedulerCall::Heartbeat => "Heartbeat",
        SchedulerCall::PublishProgress(_) => "PublishProgress",
        SchedulerCall::SetWebuiUrl(_) => "SetWebuiUrl",
        SchedulerCall::WriteState(_) => "WriteState",
        SchedulerCall::WriteStateFenced { .. } => "WriteStateFenced",
        SchedulerCall::Campaign(_) => "Campaign",
    }
}

//! `bramble-master`: parses flags and config, loads the cluster's node certificate, and runs
//! the master until SIGINT/SIGTERM. All logic lives in the library.
//!
//! Durable state lives in `<state_dir>/master.redb`; a master restarted on the same state dir
//! recovers from it. A store that cannot be written stops the master with a non-zero exit.
//!
//! Once the QUIC endpoint is bound the master advertises itself on mDNS (so agents with no
//! `master` configured find it) and withdraws the advertisement before shutting down.

use anyhow::Context;
use bramble_master::config::{MasterConfig, DEFAULT_CONFIG_PATH};
use bramble_master::server;
use bramble_proto::discovery::{self, Advertiser, MasterAdvert};
use bramble_proto::identity::Role;
use bramble_proto::startup;
use clap::Parser;
use std::net::SocketAddr;
use std::path::PathBuf;

/// Bramble master: offers the cluster's resources to frameworks
#[derive(Debug, Parser)]
#[command(name = "bramble-master", version)]
struct Args {
    /// Cluster directory (CA certificate, node certificate and key).
    #[arg(long)]
    cluster: Option<PathBuf>,
    /// QUIC listen address.
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// HTTP listen address for the API and web UI.
    #[arg(long)]
    http: Option<SocketAddr>,
    /// Directory for durable state.
    #[arg(long)]
    state_dir: Option<PathBuf>,
    /// Config file (default /etc/bramble/master.toml, used if present).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Seconds without heartbeat before an agent is removed.
    #[arg(long, allow_negative_numbers = true, value_parser = bramble_proto::arg_values::positive_number)]
    agent_timeout_secs: Option<f64>,
}

fn main() -> anyhow::Result<()> {
    bramble_proto::startup::plain_error_reports();
    // Before any thread starts: see `bramble_proto::memory` for why and what it saved.
    bramble_proto::memory::one_malloc_arena();
    let args = Args::parse();
    let (path, explicit) = startup::config_file(args.config.as_deref(), DEFAULT_CONFIG_PATH);
    let mut cfg = MasterConfig::load(&path, explicit)?;
    // A flag wins over the file.
    if let Some(v) = args.cluster {
        cfg.cluster = v;
    }
    if let Some(v) = args.listen {
        cfg.listen = v;
    }
    if let Some(v) = args.http {
        cfg.http = v;
    }
    if let Some(v) = args.state_dir {
        cfg.state_dir = v;
    }
    if let Some(v) = args.agent_timeout_secs {
        cfg.agent_timeout_secs = v;
    }
    cfg.validate(&path, "")?;
    bramble_proto::logging::init(cfg.log.as_deref());

    let creds = startup::credentials(&cfg.cluster, Role::Node)?;
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    if let Some(ha) = cfg.ha.clone() {
        return runtime.block_on(run_replicated(creds, cfg, ha));
    }
    runtime.block_on(async move {
        let master = server::start(&creds, &cfg).await?;
        let advert = MasterAdvert {
            instance: discovery::local_hostname(),
            cluster_id: master.cluster_id.clone(),
            quic: master.addr,
            // Only a port this master serves: a taken one belongs to another process.
            http_port: master.http_addr.map(|a| a.port()),
        };
        // A master that cannot advertise still serves agents with a configured address.
        let advertiser = match Advertiser::start(&advert, &cfg.discovery.interfaces) {
            Ok(a) => Some(a),
            Err(e) => {
                tracing::error!(
                    "not advertising on mDNS, agents must be given this master's address: {e}"
                );
                None
            }
        };
        // The service framework's healthy instances, on mDNS beside the master's own advert.
        let service_adverts = match bramble_master::service_adverts::start(
            master.feed().watch_services(),
            &cfg.discovery.interfaces,
        ) {
            Ok(a) => Some(a),
            Err(e) => {
                tracing::error!("not advertising services on mDNS: {e}");
                None
            }
        };
        let panel = bramble_master::display::start_with_notices(
            &master.feed(),
            master.panel_feed(),
            cfg.display.clone(),
            cfg.name.clone(),
            Some(master.certificates()),
        );
        tracing::info!(listen = %master.addr, name = %cfg.name, "bramble-master ready");
        let failure = tokio::select! {
            _ = bramble_proto::logging::wait_for_shutdown_signal() => None,
            reason = master.failed() => Some(reason),
        };
        tracing::info!("shutting down");
        panel.stop().await;
        if let Some(adverts) = service_adverts {
            adverts.stop().await;
        }
        if let Some(advertiser) = advertiser {
            advertiser.stop().await;
        }
        master.shutdown().await;
        match failure {
            // Exit non-zero so a supervisor restarts us (from what the store holds).
            Some(reason) => Err(anyhow::anyhow!("the master stopped: {reason}")),
            None => Ok(()),
        }
    })
}

/// `[ha]`: one master of a replicated group, serving while elected and standing by
/// otherwise, until SIGINT/SIGTERM. Its mDNS advert carries its role and term, re-announced
/// as they change, so agents and clients browsing for the cluster go to the leader. The front
/// panel shows the cluster while it leads and "standby", its term and the leader otherwise.
async fn run_replicated(
    creds: bramble_proto::identity::Credentials,
    cfg: bramble_master::config::MasterConfig,
    ha: bramble_master::config::HaConfig,
) -> anyhow::Result<()> {
    let cluster_id = creds.cluster_id.clone();
    let master = bramble_master::ha::start(std::sync::Arc::new(creds), &cfg, &ha)
        .await
        .context("starting the replicated master")?;
    tracing::info!(id = master.replica().id(), listen = %cfg.listen, http = %cfg.http, name = %cfg.name, "bramble-master ready (replicated)");
    // The id in the name: masters on cards that share a host name never clash on mDNS.
    let advert = MasterAdvert {
        instance: format!("{}-{}", discovery::local_hostname(), master.replica().id()),
        cluster_id,
        quic: cfg.listen,
        http_port: Some(cfg.http.port()),
    };
    let advertising = tokio::spawn(advertise_role(
        advert,
        cfg.discovery.interfaces.clone(),
        master.status(),
    ));
    // The front panel: the cluster while leading, "standby", the term and the leader otherwise.
    let panel = bramble_master::ha::panel::start(&master, cfg.display.clone(), cfg.name.clone());
    // A replica whose store failed (a full disk, a damaged file) stops for good: this master
    // could neither vote nor take entries again. Exit non-zero, so the service manager
    // restarts it; a restarted master reopens its store and catches up from the leader.
    let failed = tokio::select! {
        _ = bramble_proto::logging::wait_for_shutdown_signal() => None,
        why = master.replica().core_stopped() => Some(why),
    };
    match &failed {
        None => tracing::info!("shutting down"),
        Some(why) => tracing::error!("the replicated store stopped: {why}; exiting for a restart"),
    }
    panel.stop().await;
    advertising.abort();
    let _ = advertising.await;
    master.shutdown().await;
    match failed {
        None => Ok(()),
        Some(why) => anyhow::bail!("the replicated store stopped: {why}"),
    }
}

/// Advertises this replicated master on mDNS as leader or standby (with its term) and
/// re-announces whenever the role or the term changes, until aborted.
async fn advertise_role(
    advert: MasterAdvert,
    interfaces: Vec<String>,
    mut status: tokio::sync::watch::Receiver<bramble_master::ha::HaStatus>,
) {
    let role_of = |s: &bramble_master::ha::HaStatus| {
        let role = if s.serving {
            discovery::MasterRole::Leader
        } else {
            discovery::MasterRole::Standby
        };
        (role, s.term)
    };
    let mut said = role_of(&status.borrow_and_update());
    let advertiser = match Advertiser::start_as(&advert, &interfaces, said.0, said.1) {
        Ok(a) => a,
        Err(e) => {
            tracing::error!(
                "not advertising on mDNS, agents must be given the masters' addresses: {e}"
            );
            return;
        }
    };
    while status.changed().await.is_ok() {
        let now = role_of(&status.borrow_and_update());
        if now != said {
            if let Err(e) = advertiser.set_role(now.0, now.1) {
                tracing::warn!("re-announcing this master's role on mDNS: {e}");
            }
            said = now;
        }
    }
}

//! What each `bramble` subcommand does once its arguments are parsed: one module per
//! subcommand (or family of them), each doing the work through the libraries and printing
//! the result. `main.rs` parses and dispatches here; nothing here parses arguments beyond a
//! subcommand's own `clap` enum.
//!
//! This file holds what the modules share: finding the master, the credentials a framework
//! presents, how agents start an executor of this very binary, JSON output.

pub mod bench;
pub mod cluster;
pub mod demo;
pub mod display;
pub mod executor;
pub mod frameworks;
pub mod images;
pub mod kv;
pub mod masters;
pub mod pi;
pub mod run;
pub mod service;
pub mod state;

use anyhow::Context;
use bramble_proto::startup;
use bramble_proto::task::CommandInfo;
use bramble_sdk::{framework_info, Credentials, Role, SchedulerConfig};
use std::net::SocketAddr;
use std::path::Path;

/// The running cluster a command talks to: its master and our certificates for it.
pub struct Target<'a> {
    /// The master to dial: the only one, or the leader of the masters given.
    pub master: SocketAddr,
    /// Every master given (`--master a,b,c`), in order; `[master]` for one.
    pub masters: Vec<SocketAddr>,
    /// The cluster directory with the certificates to present.
    pub cluster: &'a Path,
    /// Whose certificate to present (`--principal`); `None`: the shared role certificate.
    pub principal: Option<&'a str>,
}

impl Target<'_> {
    /// Finds the master (`--master`/`$BRAMBLE_MASTER`, else mDNS) for the cluster in `cluster`;
    /// of several given, the leader.
    pub async fn find<'a>(
        master: Option<&str>,
        cluster: &'a Path,
        principal: Option<&'a str>,
    ) -> anyhow::Result<Target<'a>> {
        let masters = bramble_client::locate_masters(master, cluster).await?;
        let master = bramble_client::find_leader(cluster, principal, &masters).await?;
        Ok(Target {
            master,
            masters,
            cluster,
            principal,
        })
    }

    pub fn framework_creds(&self) -> anyhow::Result<Credentials> {
        Ok(startup::credentials_as(
            self.cluster,
            self.principal,
            Role::Framework,
        )?)
    }

    /// How the framework `name` subscribes to this cluster's master.
    pub fn scheduler_config(&self, name: &str) -> anyhow::Result<SchedulerConfig> {
        Ok(self.follows(SchedulerConfig::new(
            self.master,
            self.framework_creds()?,
            framework_info(name),
        )))
    }

    /// `config` dialling the leader first, then the other masters given (a long-running
    /// framework outlives a leader).
    pub fn follows(&self, config: SchedulerConfig) -> SchedulerConfig {
        let mut masters = vec![self.master];
        masters.extend(self.masters.iter().filter(|m| **m != self.master));
        config.with_masters(&masters)
    }
}

/// How agents on this machine start an executor of this binary: `bramble executor <kind>`.
pub fn self_executor(kind: &str) -> anyhow::Result<CommandInfo> {
    let exe = std::env::current_exe().context("finding this program's path for the executor")?;
    Ok(CommandInfo::program(
        exe.display().to_string(),
        executor::arguments(kind),
    ))
}

/// One line of JSON on stdout: what every `--json` prints.
pub fn print_json<T: serde::Serialize>(value: &T) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string(value)?);
    Ok(())
}

/// Resolves when the operator presses Ctrl-C: how long-running services are told to stop.
pub async fn ctrl_c() {
    let _ = tokio::signal::ctrl_c().await;
}

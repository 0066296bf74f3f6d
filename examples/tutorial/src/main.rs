//! `hello-bramble [--instances N] [--ui-port PORT] [--elect]`: the tutorial's framework at its
//! last step, on the cluster named by $BRAMBLE_MASTER (the master's QUIC address, HOST:5051) and
//! $BRAMBLE_CLUSTER (its cluster directory, default /etc/bramble/cluster). Its framework id
//! is kept in ./hello-bramble.id, so running it again fails over to the same framework. With
//! `--elect` (step 4) several copies may run at once: the master elects one, the others stand by.

use anyhow::{bail, Context};
use bramble_sdk::{framework_info, Credentials, Role, SchedulerConfig, SchedulerDriver};
use bramble_tutorial::{step3, step4, step5};

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (mut instances, mut ui_port, mut elect) = (2usize, 8090u16, false);
    let mut args = args.iter();
    while let Some(flag) = args.next() {
        match (flag.as_str(), args.clone().next()) {
            ("--instances", Some(n)) => instances = n.parse().context("--instances")?,
            ("--ui-port", Some(p)) => ui_port = p.parse().context("--ui-port")?,
            ("--elect", _) => {
                elect = true;
                continue;
            }
            _ => bail!("usage: hello-bramble [--instances N] [--ui-port PORT] [--elect]"),
        }
        args.next();
    }
    tokio::runtime::Runtime::new()?.block_on(run(instances, ui_port, elect))
}

async fn run(instances: usize, ui_port: u16, elect: bool) -> anyhow::Result<()> {
    let master = std::env::var("BRAMBLE_MASTER")
        .context("set BRAMBLE_MASTER to the master's QUIC address (HOST:5051)")?
        .parse()
        .context("BRAMBLE_MASTER is not HOST:PORT")?;
    let cluster =
        std::env::var("BRAMBLE_CLUSTER").unwrap_or_else(|_| "/etc/bramble/cluster".into());
    let credentials = Credentials::load(cluster.as_ref(), Role::Framework)
        .with_context(|| format!("loading the framework certificate from {cluster}"))?;

    let id_file = std::path::PathBuf::from("hello-bramble.id");
    let mut info = framework_info("hello-bramble");
    info.framework_id = step3::load_framework_id(&id_file)?;
    // Long enough to restart the scheduler (or fail over to another) without losing the tasks.
    info.failover_timeout_secs = 3600.0;

    let listener = tokio::net::TcpListener::bind(("0.0.0.0", ui_port))
        .await
        .with_context(|| format!("listening on port {ui_port} for the status page"))?;
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "localhost".into());
    info.webui_url = Some(format!("http://{host}:{ui_port}/"));

    let (scheduler, status) =
        step5::WithStatusPage::new(step3::HelloScheduler::new(instances, Some(id_file)));
    tokio::spawn(step5::serve(listener, status));
    let mut config = SchedulerConfig::new(master, credentials, info);
    if elect {
        config = step4::campaigning(config);
    }
    let driver = SchedulerDriver::new(config);
    driver.run(scheduler).await?;
    Ok(())
}

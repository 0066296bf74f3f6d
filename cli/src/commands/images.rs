//! `bramble images import|load|pull|ls`. `import` and `load` upload the file to the master,
//! which streams it to every agent running container images (or the one `--agent` names) and
//! says how each fared (`bramble-master`'s `images.rs`). With `--local`, and for `pull` and
//! `ls`, they work on the agent of this node instead, in the store its config names
//! (`[containers] images` in `/etc/bramble/agent.toml`, else `<work_dir>/images`). The agent
//! reads the store at each launch, so nothing needs restarting.

use super::Target;
use anyhow::{bail, Context};
use bramble_agent::images::{host_architecture, ImageStore};
use bramble_client::OperatorClient;
use bramble_proto::messages::{ImageFormat, ImagePushResult};
use bramble_proto::AgentId;
use clap::Subcommand;
use std::path::PathBuf;

#[derive(Debug, Subcommand)]
pub enum ImagesCommand {
    /// Import a plain root filesystem tarball as image NAME (as `podman import`).
    Import {
        /// The root filesystem tarball.
        tarball: PathBuf,
        /// The name to give the image.
        name: String,
        /// The image's architecture (OCI name: arm64, amd64, arm); default this machine's.
        #[arg(long)]
        arch: Option<String>,
        #[command(flatten)]
        to: Destination,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Load an OCI or docker-archive tarball (`docker save`, `podman save`); NAME defaults to
    /// the archive's own tag.
    Load {
        /// The OCI or docker-archive tarball.
        tarball: PathBuf,
        /// The name to give the image (default: the archive's tag).
        name: Option<String>,
        #[command(flatten)]
        to: Destination,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Pull an image from its registry (needs the network; offline, use `load`).
    Pull {
        /// The image reference (e.g. docker.io/library/busybox:latest).
        name: String,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// List the images.
    Ls {
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        store: StoreArgs,
    },
}

/// Where `import` and `load` put an image.
#[derive(Debug, clap::Args)]
pub struct Destination {
    /// Only into this node's agent store, not through the master.
    #[arg(long, conflicts_with = "agent")]
    local: bool,
    /// Only to this agent (by id, as `bramble agents` lists them), through the master.
    #[arg(long)]
    agent: Option<String>,
}

impl ImagesCommand {
    /// Whether the command works on this node alone (no master needed).
    pub fn is_local(&self) -> bool {
        match self {
            ImagesCommand::Import { to, .. } | ImagesCommand::Load { to, .. } => to.local,
            ImagesCommand::Pull { .. } | ImagesCommand::Ls { .. } => true,
        }
    }
}

#[derive(Debug, clap::Args)]
pub struct StoreArgs {
    /// The image store (default: the agent's, from its config).
    #[arg(long)]
    images_dir: Option<PathBuf>,
    /// The agent config to read the store from.
    #[arg(long, default_value = bramble_agent::config::DEFAULT_CONFIG_PATH)]
    agent_config: PathBuf,
}

impl StoreArgs {
    fn store(&self) -> anyhow::Result<ImageStore> {
        if let Some(dir) = &self.images_dir {
            return Ok(ImageStore::new(dir));
        }
        let cfg = bramble_agent::config::load(&self.agent_config)?;
        Ok(ImageStore::new(agent_images_dir(&cfg)))
    }
}

/// Where the agent with config `cfg` keeps its images.
fn agent_images_dir(cfg: &bramble_agent::config::AgentConfig) -> PathBuf {
    cfg.containers
        .images
        .clone()
        .unwrap_or_else(|| bramble_agent::paths::WorkDir::new(&cfg.work_dir).images_dir())
}

pub fn run(command: ImagesCommand) -> anyhow::Result<()> {
    match command {
        ImagesCommand::Import {
            tarball,
            name,
            arch,
            store,
            ..
        } => {
            let arch = arch.unwrap_or_else(|| host_architecture().to_string());
            let store = store.store()?;
            let image = store
                .import_rootfs(&tarball, &name, &arch)
                .with_context(|| format!("importing {}", tarball.display()))?;
            report(&store, &image.name, &image.architecture);
        }
        ImagesCommand::Load {
            tarball,
            name,
            store,
            ..
        } => {
            let store = store.store()?;
            let image = store
                .load_archive(&tarball, name.as_deref())
                .with_context(|| format!("loading {}", tarball.display()))?;
            report(&store, &image.name, &image.architecture);
        }
        ImagesCommand::Pull { name, store } => {
            let store = store.store()?;
            let image = store.pull(&name)?;
            report(&store, &image.name, &image.architecture);
        }
        ImagesCommand::Ls { json, store } => {
            let store = store.store()?;
            let images = store.list()?;
            if json {
                println!("{}", serde_json::to_string_pretty(&images)?);
            } else {
                print!("{}", table(&images));
            }
        }
    }
    Ok(())
}

fn report(store: &ImageStore, name: &str, arch: &str) {
    println!("{name} ({arch}) in {}", store.dir().display());
    if arch != host_architecture() {
        println!(
            "note: this machine is {}: tasks here cannot run {name}",
            host_architecture()
        );
    }
}

/// `NAME  ARCH  SIZE` lines with a header.
fn table(images: &[bramble_agent::images::ImageConfig]) -> String {
    let width = images
        .iter()
        .map(|i| i.name.len())
        .max()
        .unwrap_or(4)
        .max(4);
    let mut out = format!("{:width$}  {:7}  {:>9}\n", "NAME", "ARCH", "SIZE");
    for i in images {
        out.push_str(&format!(
            "{:width$}  {:7}  {:>7.1}MB\n",
            i.name,
            i.architecture,
            i.size_bytes as f64 / 1e6
        ));
    }
    out
}

/// `import`/`load` through the master: the file goes to the master, which streams it to the
/// agents. Fails (after printing every agent's result) unless every agent installed it.
pub async fn run_cluster(target: &Target<'_>, command: ImagesCommand) -> anyhow::Result<()> {
    let (tarball, format, name, arch, to) = match command {
        ImagesCommand::Import {
            tarball,
            name,
            arch,
            to,
            ..
        } => {
            // The tarball cannot say; as `podman import`, the machine importing it decides.
            let arch = arch.unwrap_or_else(|| host_architecture().to_string());
            (tarball, ImageFormat::Rootfs, Some(name), Some(arch), to)
        }
        ImagesCommand::Load {
            tarball, name, to, ..
        } => (tarball, ImageFormat::Archive, name, None, to),
        ImagesCommand::Pull { .. } | ImagesCommand::Ls { .. } => {
            bail!("pull and ls work on this node's agent only")
        }
    };
    let mut client =
        OperatorClient::connect_as(target.cluster, target.principal, target.master).await?;
    let agent = to.agent.map(AgentId);
    let results = client
        .upload_image(&tarball, format, name, arch, agent)
        .await
        .with_context(|| format!("sending {} through the master", tarball.display()))?;
    client.close();
    print!("{}", pushed_lines(&results));
    let failed = results.iter().filter(|r| r.result.is_err()).count();
    if failed > 0 {
        bail!(
            "{failed} of {} agent(s) did not install the image",
            results.len()
        );
    }
    Ok(())
}

/// One line per agent: what it installed, or why not.
fn pushed_lines(results: &[ImagePushResult]) -> String {
    let mut out = String::new();
    for r in results {
        let line = match &r.result {
            Ok(i) => format!(
                "{} ({}): {} ({}, {:.1}MB)\n",
                r.hostname,
                r.agent_id,
                i.name,
                i.architecture,
                i.size_bytes as f64 / 1e6
            ),
            Err(e) => format!("{} ({}): FAILED: {e}\n", r.hostname, r.agent_id),
        };
        out.push_str(&line);
    }
    out
}

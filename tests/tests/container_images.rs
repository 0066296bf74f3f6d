//! Images reach the agents through the master (`bramble images import|load` without
//! `--local`): an operator uploads a busybox root filesystem once, the master streams it to
//! every agent running container images, each checks its digest and installs it, and a task
//! then runs in it and FINISHES with its output. An image for another architecture is refused
//! by every agent at import, with the reason, and installed nowhere; `--agent` reaches one.
//! Root, crun and busybox-static needed (as `containers.rs`), else SKIP with the reason.

use bramble_agent::images::{host_architecture, ImageStore};
use bramble_agent::{AgentOptions, ContainersOptions};
use bramble_client::OperatorClient;
use bramble_proto::identity::Role;
use bramble_proto::messages::{ImageFormat, ImagePushResult};
use bramble_proto::{AgentId, Resources, TaskState};
use bramble_tests::busybox;
use bramble_tests::framework::{shell_task, TestFramework};
use bramble_tests::*;
use std::path::{Path, PathBuf};

fn installed(results: &[ImagePushResult]) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = results
        .iter()
        .map(|r| match &r.result {
            Ok(i) => (r.hostname.clone(), i.name.clone()),
            Err(e) => (r.hostname.clone(), format!("ERR {e}")),
        })
        .collect();
    out.sort();
    out
}

/// What is in an image store's directory besides images (a transfer's or import's leftovers).
fn leftovers(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.'))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_image_imported_through_the_master_runs_on_every_agent() {
    const NAME: &str = "an_image_imported_through_the_master_runs_on_every_agent";
    let Some(busybox::ContainerKit {
        crun,
        scratch,
        tarball,
    }) = busybox::container_kit(NAME)
    else {
        return;
    };
    init_logs();
    let cluster = TestCluster::new();
    let master_cfg = fast_master_config(&cluster);
    let uploads = master_cfg.state_dir.join("uploads");
    let master = start_master(&cluster, &master_cfg).await;
    let images = |name: &str| -> PathBuf { scratch.path().join(format!("images-{name}")) };
    let options = |name: &str| AgentOptions {
        cgroups: true,
        containers: Some(ContainersOptions {
            runtime: crun.clone(),
            images: images(name),
            preload: None,
            images_budget: None,
        }),
        ..agent_options(&cluster, name, master.addr, Resources::new(1.0, 256))
    };
    let a = start_agent(&cluster, options("pi-a")).await;
    let b = start_agent(&cluster, options("pi-b")).await;
    wait_for_agents(&master, 2).await;

    let mut op = OperatorClient::connect(&cluster.cluster_dir(), master.addr)
        .await
        .expect("operator");
    let host = host_architecture().to_string();
    let results = op
        .upload_image(
            &tarball,
            ImageFormat::Rootfs,
            Some("busybox".into()),
            Some(host),
            None,
        )
        .await
        .expect("upload");
    assert_eq!(
        installed(&results),
        vec![
            ("pi-a".to_string(), "busybox:latest".to_string()),
            ("pi-b".to_string(), "busybox:latest".to_string())
        ]
    );
    for name in ["pi-a", "pi-b"] {
        let image = ImageStore::new(images(name))
            .resolve("busybox")
            .expect("installed on the agent");
        assert!(image.rootfs.join("bin/busybox").is_file());
        assert!(
            leftovers(&images(name)).is_empty(),
            "{:?}",
            leftovers(&images(name))
        );
    }

    // Another architecture: refused by each agent with the reason, installed nowhere.
    let foreign = busybox::foreign_architecture().to_string();
    let results = op
        .upload_image(
            &tarball,
            ImageFormat::Rootfs,
            Some("foreign".into()),
            Some(foreign.clone()),
            None,
        )
        .await
        .expect("upload");
    assert_eq!(results.len(), 2);
    for r in &results {
        let err = r.result.as_ref().expect_err("a foreign image is refused");
        assert!(
            err.contains(&foreign) && err.contains(host_architecture()),
            "{err}"
        );
    }
    for name in ["pi-a", "pi-b"] {
        assert!(ImageStore::new(images(name)).resolve("foreign").is_err());
        assert!(
            leftovers(&images(name)).is_empty(),
            "{:?}",
            leftovers(&images(name))
        );
    }

    // --agent: only that one.
    let state = operator_state(&cluster, master.addr).await.expect("state");
    let b_id: AgentId = state
        .agents
        .iter()
        .find(|x| x.hostname == "pi-b")
        .map(|x| x.id.clone())
        .expect("pi-b registered");
    let results = op
        .upload_image(
            &tarball,
            ImageFormat::Rootfs,
            Some("only-b".into()),
            None,
            Some(b_id),
        )
        .await
        .expect("upload");
    assert_eq!(
        installed(&results),
        vec![("pi-b".to_string(), "only-b:latest".to_string())]
    );
    assert!(ImageStore::new(images("pi-a")).resolve("only-b").is_err());
    op.close();
    // The master kept nothing once the uploads were streamed out.
    let kept: Vec<_> = std::fs::read_dir(&uploads)
        .into_iter()
        .flatten()
        .flatten()
        .collect();
    assert!(kept.is_empty(), "{kept:?}");

    // A task runs in the image that came through the master and finishes with its output.
    let mut fw =
        TestFramework::start(master.addr, cluster.credentials(Role::Framework), "boxes").await;
    let offer = fw.first_offer().await;
    let mut task = shell_task(&offer, "hey", 0.1, 32, "echo Hey Bramble from $(uname -s)");
    task.image = Some("busybox".into());
    fw.launch(&offer, vec![task]);
    let done = fw.terminal("hey").await;
    assert_eq!(done.state, TaskState::Finished, "{done:?}");
    let mut op = OperatorClient::connect(&cluster.cluster_dir(), master.addr)
        .await
        .expect("operator");
    let framework = fw.id.clone();
    let chunk = op
        .read_sandbox(&framework, &"hey".into(), "stdout", 0)
        .await
        .expect("stdout");
    assert_eq!(
        String::from_utf8_lossy(&chunk.data),
        "Hey Bramble from Linux\n"
    );
    op.close();

    fw.stop(false).await;
    a.shutdown().await;
    b.shutdown().await;
    master.shutdown().await;
}

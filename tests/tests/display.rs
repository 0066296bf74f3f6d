//! The master's front panel follows the live cluster, and `GetPanel` (what
//! `bramble display --png` uses) returns exactly the picture composed for the glass.

use bramble_firmware::{compose, from_png, DisplayConfig, Enabled, PanelState, Screen};
use bramble_proto::identity::Role;
use bramble_proto::messages::{JobProgress, OperatorCall, OperatorReply, PeerKind};
use bramble_proto::Resources;
use bramble_tests::*;
use std::time::Duration;

/// What `bramble display --png` asks the master for: the panel's PNG and its state.
async fn panel(
    cluster: &TestCluster,
    master: std::net::SocketAddr,
) -> Option<(Vec<u8>, PanelState)> {
    let (_conn, mut ctl, _) = raw_hello(
        &cluster.credentials(Role::Operator),
        master,
        PeerKind::Operator,
    )
    .await
    .ok()?;
    ctl.send(&OperatorCall::GetPanel).await.ok()?;
    match ctl.recv::<OperatorReply>().await.ok()? {
        OperatorReply::Panel { png, state_json } => {
            Some((png, serde_json::from_str(&state_json).ok()?))
        }
        _ => None,
    }
}

#[tokio::test]
async fn the_panel_shows_the_live_cluster_and_operators_can_fetch_it() {
    init_logs();
    let cluster = TestCluster::new();
    let master = start_master(&cluster, &fast_master_config(&cluster)).await;
    // No I2C panel in tests: the driver composes the same frames without one.
    let config = DisplayConfig {
        enabled: Enabled::Off,
        ..DisplayConfig::default()
    };
    let display = bramble_master::display::start(
        &master.feed(),
        master.panel_feed(),
        config,
        "testbed".into(),
    );
    let mut agents = Vec::new();
    for name in ["pi-1", "pi-2"] {
        agents.push(
            start_agent(
                &cluster,
                agent_options(&cluster, name, master.addr, Resources::new(4.0, 2048)),
            )
            .await,
        );
    }
    wait_for_agents(&master, 2).await;

    let (png, state) = eventually(
        "the panel shows both agents",
        Duration::from_secs(10),
        || async {
            let (png, state) = panel(&cluster, master.addr).await?;
            (state.agents_up == 2).then_some((png, state))
        },
    )
    .await;
    assert_eq!(state.cluster_name, "testbed");
    assert_eq!(state.cpus_total, 8.0);
    assert_eq!(state.mem_total_mib, 4096);
    let names: Vec<&str> = state.agents.iter().map(|a| a.name.as_str()).collect();
    assert_eq!(names, ["pi-1", "pi-2"]);
    // The PNG is the cluster screen composed from that state (no job is running).
    let shown = from_png(&png, bramble_master::display::PNG_SCALE).expect("a PNG of the panel");
    let expected = compose(
        &state,
        &Screen::Cluster,
        Default::default(),
        Default::default(),
    );
    assert_eq!(
        shown.diff_count(&expected),
        0,
        "the served picture is the composed frame"
    );

    // The web UI's mirror of the panel serves the same picture over HTTP.
    let http = master.http_addr.expect("the test master serves HTTP");
    let mut stream = tokio::net::TcpStream::connect(http).await.expect("connect");
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    stream
        .write_all(b"GET /api/v1/panel.png HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n")
        .await
        .expect("request");
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await.expect("response");
    let head_end = response
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("headers")
        + 4;
    let head = String::from_utf8_lossy(&response[..head_end]).to_lowercase();
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert!(head.contains("content-type: image/png"), "{head}");
    let served =
        from_png(&response[head_end..], bramble_master::display::PNG_SCALE).expect("PNG body");
    assert_eq!(served.diff_count(&expected), 0);

    // A job starts (`bramble pi` names its framework after the job): what `bramble display
    // --png` fetches is now the pi screen, titled by the job.
    let fw = bramble_tests::framework::TestFramework::start(
        master.addr,
        cluster.credentials(Role::Framework),
        "pi 2e10",
    )
    .await;
    fw.driver
        .publish_progress(JobProgress {
            job: "pi".into(),
            done: 1_000_000_000,
            total: 20_000_000_000,
            unit: "terms".into(),
            rate_per_s: 5e8,
            tasks_done: 3,
            tasks_total: 64,
            estimate: Some(std::f64::consts::PI),
            correct_digits: Some(5),
            elapsed_s: 2.0,
            finished: false,
            waiting_for: None,
        })
        .expect("publish progress");
    let (png, state) = eventually(
        "the panel shows the job's screen",
        Duration::from_secs(10),
        || async {
            let (png, state) = panel(&cluster, master.addr).await?;
            state.job.is_some().then_some((png, state))
        },
    )
    .await;
    assert_eq!(state.job.as_ref().map(|j| j.name.as_str()), Some("pi 2e10"));
    let shown = from_png(&png, bramble_master::display::PNG_SCALE).expect("a PNG of the panel");
    let pi_screen = compose(&state, &Screen::Pi, Default::default(), Default::default());
    assert_eq!(
        shown.diff_count(&pi_screen),
        0,
        "the job's screen comes first while it runs"
    );
    fw.stop(false).await;

    display.stop().await;
    for a in agents {
        a.shutdown().await;
    }
    master.shutdown().await;
}

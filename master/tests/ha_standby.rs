//! A standby master's HTTP side (`ha/standby.rs`): its `/api/v1/state` names every master's
//! addresses, so with `http_token` set it needs the token just as the leader's does. Three
//! replicated masters in this process on loopback; requests are plain HTTP/1.1 over TCP.

use bramble_master::config::{HaConfig, MasterConfig};
use bramble_master::ha::{self, HaMaster};
use bramble_proto::identity::{init_cluster, Credentials, Role};
use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const WAIT: Duration = Duration::from_secs(30);
const TOKEN: &str = "standby-test-token-1";

fn free_udp() -> SocketAddr {
    let s = UdpSocket::bind("127.0.0.1:0").expect("udp port");
    s.local_addr().expect("addr")
}

fn free_tcp() -> SocketAddr {
    let s = TcpListener::bind("127.0.0.1:0").expect("tcp port");
    s.local_addr().expect("addr")
}

/// Polls `f` every 20 ms until it gives `Some`, or panics naming `what` after `within`.
async fn eventually<T>(what: &str, within: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + within;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// `GET path` with these extra header lines; the status code and the body.
async fn get(addr: SocketAddr, path: &str, headers: &str) -> (u16, String) {
    // A master's HTTP port is briefly closed while it changes sides; wait that out.
    let deadline = Instant::now() + WAIT;
    let mut s = loop {
        match tokio::net::TcpStream::connect(addr).await {
            Ok(s) => break s,
            Err(e) if Instant::now() < deadline => {
                eprintln!("connecting to {addr}: {e} (retrying)");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("connecting to the standby's HTTP port {addr}: {e}"),
        }
    };
    let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n{headers}Connection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.expect("request");
    let mut answer = String::new();
    tokio::time::timeout(WAIT, s.read_to_string(&mut answer))
        .await
        .expect("an answer in time")
        .expect("reading the answer");
    let status = answer
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {answer:?}"));
    let body = answer
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

async fn group(dir: &std::path::Path, token: Option<&str>) -> (Vec<HaMaster>, Vec<MasterConfig>) {
    let cluster = dir.join("cluster");
    init_cluster(&cluster, "ha-standby").expect("cluster");
    let creds = Arc::new(Credentials::load(&cluster, Role::Node).expect("node credentials"));
    let peers: Vec<String> = (0..3)
        .map(|i| format!("{}={}", i + 1, free_udp()))
        .collect();
    let mut masters = Vec::new();
    let mut configs = Vec::new();
    for i in 0..3 {
        let cfg = MasterConfig {
            cluster: cluster.clone(),
            listen: free_udp(),
            http: free_tcp(),
            http_token: token.map(str::to_string),
            state_dir: dir.join(format!("master-{}", i + 1)),
            heartbeat_interval_ms: 200,
            ..MasterConfig::default()
        };
        let ha = HaConfig {
            id: i as u64 + 1,
            peers: peers.clone(),
            bootstrap: true,
            ..HaConfig::default()
        };
        masters.push(
            ha::start(creds.clone(), &cfg, &ha)
                .await
                .expect("ha master"),
        );
        configs.push(cfg);
    }
    (masters, configs)
}

/// A standby of the group, once one serves and the standby knows it.
async fn a_standby(masters: &[HaMaster]) -> usize {
    eventually("a standby that knows the serving leader", WAIT, || {
        let serving = masters.iter().position(|m| m.status().borrow().serving)?;
        masters.iter().enumerate().find_map(|(i, m)| {
            let s = m.status().borrow().clone();
            // A follower that names the serving master as leader: not one that has just been
            // elected and is between its standby and leader sides.
            let follows = s.role == bramble_replica::Role::Follower
                && s.leader.as_ref().map(|l| l.id) == Some(masters[serving].status().borrow().id);
            (i != serving && follows).then_some(i)
        })
    })
    .await
}

/// A standby's `/api/v1/state` with these headers, which must be answered 200 and say
/// `"standby":true`. A re-election under load may make the standby asked the leader
/// meanwhile (its state then says nothing of standing by): another standby is asked then.
async fn standby_state(masters: &[HaMaster], configs: &[MasterConfig], headers: &str) -> String {
    let deadline = Instant::now() + WAIT;
    loop {
        let standby = a_standby(masters).await;
        let (status, body) = get(configs[standby].http, "/api/v1/state", headers).await;
        assert_eq!(status, 200, "{body}");
        if body.contains("\"standby\":true") {
            return body;
        }
        let now_leads = masters[standby].status().borrow().serving;
        assert!(
            now_leads && Instant::now() < deadline,
            "a standby answered as the leader: {body}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standbys_state_needs_the_token_the_leader_requires() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (masters, configs) = group(dir.path(), Some(TOKEN)).await;
    let standby = a_standby(&masters).await;
    let http = configs[standby].http;

    let (status, body) = get(http, "/api/v1/state", "").await;
    assert_eq!(status, 401, "no token: refused, got {status} {body}");
    assert!(
        !body.contains("masters"),
        "nothing of the group leaks: {body}"
    );
    let (status, _) = get(
        http,
        "/api/v1/state",
        "Authorization: Bearer wrong-token-x\r\n",
    )
    .await;
    assert_eq!(status, 401, "a wrong token is refused");
    // The token opens it (a leader's state wants it as well, so the 401s above hold
    // whichever side answered them).
    standby_state(
        &masters,
        &configs,
        &format!("Authorization: Bearer {TOKEN}\r\n"),
    )
    .await;
    // Leader lookups carry no credentials, on a standby as on the leader.
    let (status, _) = get(http, "/master/redirect", "").await;
    assert_eq!(status, 307, "the redirect to the leader stays open");
    for m in masters {
        m.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_token_a_standbys_state_stays_open() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (masters, configs) = group(dir.path(), None).await;
    standby_state(&masters, &configs, "").await;
    for m in masters {
        m.shutdown().await;
    }
}

/// The panel of a replicated master (`ha/panel.rs`): a standby's glass says "standby", its
/// term and the leader, checked on the real SSD1306 byte stream (a recording I2C bus decoded
/// by the controller model); the leader's panel is the usual cluster picture.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standbys_panel_says_standby_with_its_term_and_the_leader() {
    use bramble_firmware::testing::{RecordingI2c, Ssd1306Decoder};
    use bramble_firmware::{compose, DisplayConfig, DisplayDriver, Enabled, Phase, Screen};
    let dir = tempfile::tempdir().expect("tempdir");
    let (masters, _configs) = group(dir.path(), None).await;
    let standby = a_standby(&masters).await;
    let leader = masters
        .iter()
        .position(|m| m.status().borrow().serving)
        .expect("a leader");
    let status = masters[standby].status().borrow().clone();
    let hint = status.leader.clone().expect("the standby knows the leader");
    let state = ha::panel::standby_picture("shelf", &status, None);
    let host = hint.address.rsplit_once(':').map(|(h, _)| h).unwrap_or("");
    assert_eq!(
        state.phase,
        Phase::Standby {
            term: status.term,
            leader: Some(format!("{} {host}", hint.id)),
        }
    );

    // On the glass: the bytes the driver sends, decoded, are the standby screen's picture.
    let rec = RecordingI2c::new();
    let config = DisplayConfig::default();
    let mut driver = DisplayDriver::with_i2c(rec.clone(), config.clone());
    driver.update(&state, Instant::now());
    assert_eq!(driver.current_screen(), Some(Screen::Standby));
    let glass = Ssd1306Decoder::replay(config.address, &rec.transactions())
        .expect("a valid SSD1306 byte stream")
        .picture();
    let size = config.size;
    let origin = Default::default();
    let expected = compose(&state, &Screen::Standby, size, origin);
    assert_eq!(
        glass.diff_count(&expected),
        0,
        "the glass shows the standby screen"
    );
    // The term and the leader are on it: another term, or another leader, is another picture.
    let mut other_term = status.clone();
    other_term.term += 1;
    let other = compose(
        &ha::panel::standby_picture("shelf", &other_term, None),
        &Screen::Standby,
        size,
        origin,
    );
    assert!(glass.diff_count(&other) > 0, "the term is drawn");
    let mut no_leader = status.clone();
    no_leader.leader = None;
    let election = compose(
        &ha::panel::standby_picture("shelf", &no_leader, None),
        &Screen::Standby,
        size,
        origin,
    );
    assert!(glass.diff_count(&election) > 0, "the leader is named");

    // The running panels: the leader's shows the cluster (its operators' GetPanel reads it).
    let off = DisplayConfig {
        enabled: Enabled::Off,
        ..DisplayConfig::default()
    };
    let panels: Vec<_> = masters
        .iter()
        .map(|m| ha::panel::start(m, off.clone(), "shelf".into()))
        .collect();
    let leading = masters[leader].leading().borrow().clone().expect("leading");
    let drawn = eventually("the leader's panel drew the cluster", WAIT, || {
        let (_, json) = leading.panel.snapshot()?;
        json.contains("Running").then_some(json)
    })
    .await;
    assert!(!drawn.contains("Standby"), "{drawn}");
    for p in panels {
        p.stop().await;
    }
    for m in masters {
        m.shutdown().await;
    }
}

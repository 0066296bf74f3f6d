//! A loopback replica group for tests and the bench example: a cluster CA with node (and
//! operator) certificates, one directory per node, real QUIC on 127.0.0.1, and waiting on
//! openraft's metrics rather than on time.

#![allow(dead_code)]

use bramble_proto::identity::{init_cluster, Credentials, Role};
use bramble_replica::{Command, NodeId, Replica, ReplicaConfig, Tuning};
use openraft::ServerState;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};
use tempfile::TempDir;

pub struct Cluster {
    pub tmp: TempDir,
    pub peers: BTreeMap<NodeId, SocketAddr>,
    pub nodes: BTreeMap<NodeId, Replica>,
    pub tuning: Tuning,
}

/// A free UDP port on loopback (the node binds it right after; nothing else in a test
/// binds ephemeral UDP ports on 127.0.0.1 in between).
fn free_addr() -> SocketAddr {
    let s = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    s.local_addr().expect("local addr")
}

pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "warn,bramble_replica=info".into()),
        )
        .with_test_writer()
        .try_init();
}

/// Tuning for tests: the defaults' timing, snapshots early so they are exercised, and a
/// short request timeout so a write that cannot commit fails quickly.
pub fn test_tuning() -> Tuning {
    Tuning {
        snapshot_every: 50,
        keep_logs: 10,
        request_timeout: Duration::from_millis(1500),
        ..Tuning::default()
    }
}

impl Cluster {
    pub fn creds(&self, role: Role) -> Credentials {
        Credentials::load(&self.tmp.path().join("cluster"), role).expect("credentials")
    }

    pub fn dir(&self, id: NodeId) -> PathBuf {
        self.tmp.path().join(format!("node-{id}"))
    }

    /// `n` nodes, all started with `bootstrap`, their leader elected.
    pub async fn start(n: u64, tuning: Tuning) -> Cluster {
        init_tracing();
        let tmp = TempDir::new().expect("temp dir");
        init_cluster(&tmp.path().join("cluster"), "replica-test").expect("cluster CA");
        let peers = (1..=n).map(|id| (id, free_addr())).collect();
        let mut cluster = Cluster {
            tmp,
            peers,
            nodes: BTreeMap::new(),
            tuning,
        };
        for id in 1..=n {
            cluster.start_node(id, true).await;
        }
        cluster.wait_leader(Duration::from_secs(10)).await;
        cluster
    }

    pub fn config(&self, id: NodeId, bootstrap: bool) -> ReplicaConfig {
        ReplicaConfig {
            id,
            peers: self.peers.clone(),
            bootstrap,
            tuning: self.tuning.clone(),
        }
    }

    pub async fn start_node(&mut self, id: NodeId, bootstrap: bool) {
        let creds = self.creds(Role::Node);
        let replica = Replica::start(self.config(id, bootstrap), &self.dir(id), &creds)
            .await
            .unwrap_or_else(|e| panic!("starting node {id}: {e}"));
        self.nodes.insert(id, replica);
    }

    pub async fn kill(&mut self, id: NodeId) {
        if let Some(r) = self.nodes.remove(&id) {
            r.shutdown().await.expect("shutdown");
        }
    }

    /// Like [`Cluster::kill`], for a node whose store may have failed: a shutdown error is
    /// printed, not a panic.
    pub async fn kill_quietly(&mut self, id: NodeId) {
        if let Some(r) = self.nodes.remove(&id) {
            if let Err(e) = r.shutdown().await {
                eprintln!("node {id} shut down with an error: {e}");
            }
        }
    }

    /// Starts shutting `id` down and returns at once: a kill's failover is timed from here,
    /// not from the end of the shutdown's drain.
    pub fn kill_async(&mut self, id: NodeId) -> tokio::task::JoinHandle<()> {
        let r = self.nodes.remove(&id).expect("a running node");
        tokio::spawn(async move { r.shutdown().await.expect("shutdown") })
    }

    pub fn node(&self, id: NodeId) -> &Replica {
        &self.nodes[&id]
    }

    pub fn alive(&self) -> Vec<NodeId> {
        self.nodes.keys().copied().collect()
    }

    /// Waits until one running node is leader and every running node follows it in its
    /// term; returns it and how long that took. Woken by the nodes' metrics, never by time.
    pub async fn wait_leader(&self, within: Duration) -> (NodeId, Duration) {
        let start = Instant::now();
        let deadline = start + within;
        let (tx, mut changed) = tokio::sync::mpsc::unbounded_channel();
        let mut forwarders = tokio::task::JoinSet::new();
        for r in self.nodes.values() {
            let mut m = r.metrics();
            let tx = tx.clone();
            forwarders.spawn(async move {
                while m.changed().await.is_ok() {
                    if tx.send(()).is_err() {
                        return;
                    }
                }
            });
        }
        loop {
            let metrics: Vec<_> = self
                .nodes
                .values()
                .map(|r| r.metrics().borrow().clone())
                .collect();
            let leader = metrics.iter().find(|m| m.state == ServerState::Leader);
            if let Some(l) = leader {
                let agreed = metrics
                    .iter()
                    .all(|m| m.current_leader == Some(l.id) && m.current_term == l.current_term);
                if agreed {
                    forwarders.abort_all();
                    return (l.id, start.elapsed());
                }
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() || tokio::time::timeout(left, changed.recv()).await.is_err() {
                panic!("no agreed leader within {within:?}: {metrics:#?}");
            }
        }
    }

    /// Waits until every running node has applied everything in `leader`'s log (a live
    /// leader commits all of its log; its applied index may lag a write it just answered).
    pub async fn wait_applied(&self, leader: NodeId, within: Duration) {
        let index = self.nodes[&leader].metrics().borrow().last_log_index;
        for r in self.nodes.values() {
            r.raft()
                .wait(Some(within))
                .applied_index_at_least(index, "caught up")
                .await
                .unwrap_or_else(|e| panic!("node {} did not catch up to {index:?}: {e}", r.id()));
        }
    }
}

pub fn put(table: &str, key: &str, value: &[u8]) -> Command {
    Command::Put {
        table: table.into(),
        key: key.into(),
        value: value.to_vec(),
    }
}

//! A fake standby master for tests of the dialing side of issue 18: a QUIC endpoint with the
//! cluster's node credentials that answers every hello with `NotLeader { leader }` — naming
//! a real master as the leader, or none (no leader elected yet) — and keeps nothing else. Put
//! it in front of a real master ([`crate::processes`]) and point agents, frameworks or the
//! CLI at it: they must find their way to the leader by themselves.

use bramble_proto::identity::Credentials;
use bramble_proto::messages::{Hello, HelloReply, LeaderHint, PeerKind};
use bramble_proto::transport::{server_endpoint, ControlStream};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::task::JoinHandle;

/// How long a connection is kept after the reply, for the peer to read it and close.
const LINGER: Duration = Duration::from_secs(5);

/// A running fake standby; stops when dropped.
pub struct FakeStandby {
    pub addr: SocketAddr,
    hellos: Arc<Mutex<Vec<PeerKind>>>,
    endpoint: quinn::Endpoint,
    task: JoinHandle<()>,
}

impl FakeStandby {
    /// Listens on a free loopback port with `node` (the cluster's node credentials) and
    /// answers every hello with `NotLeader { leader }`.
    pub fn start(node: &Credentials, leader: Option<LeaderHint>) -> Self {
        let endpoint = server_endpoint(node, SocketAddr::from(([127, 0, 0, 1], 0)))
            .expect("fake standby endpoint");
        let addr = endpoint.local_addr().expect("fake standby address");
        let hellos = Arc::new(Mutex::new(Vec::new()));
        let task = tokio::spawn(accept(endpoint.clone(), leader, hellos.clone()));
        Self {
            addr,
            hellos,
            endpoint,
            task,
        }
    }

    /// A hint naming the master at `address` (QUIC) as leader `id` in `term`.
    pub fn hint(id: u64, address: SocketAddr, term: u64) -> LeaderHint {
        LeaderHint {
            id,
            address: address.to_string(),
            http: None,
            term,
        }
    }

    /// The kinds of the hellos answered so far, in order.
    pub fn hellos(&self) -> Vec<PeerKind> {
        self.hellos.lock().expect("hellos").clone()
    }
}

impl Drop for FakeStandby {
    fn drop(&mut self) {
        self.endpoint
            .close(quinn::VarInt::from_u32(0), b"fake standby stopped");
        self.task.abort();
    }
}

async fn accept(
    endpoint: quinn::Endpoint,
    leader: Option<LeaderHint>,
    hellos: Arc<Mutex<Vec<PeerKind>>>,
) {
    while let Some(incoming) = endpoint.accept().await {
        let leader = leader.clone();
        let hellos = hellos.clone();
        tokio::spawn(async move {
            let Ok(conn) = incoming.await else {
                return;
            };
            let Ok(mut ctl) = ControlStream::accept(&conn).await else {
                return;
            };
            let Ok(hello) = ctl.recv::<Hello>().await else {
                return;
            };
            hellos.lock().expect("hellos").push(hello.kind);
            if ctl.send(&HelloReply::NotLeader { leader }).await.is_err() {
                return;
            }
            // The peer closes once it has read the reply; do not cut it short.
            let _ = tokio::time::timeout(LINGER, conn.closed()).await;
        });
    }
}

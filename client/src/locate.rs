//! Where the master is: the address the operator gave (or several: a replicated group's
//! masters, of which [`find_leader`] finds the leader), resolved now, or else the master of
//! this cluster found by mDNS (its advertisement must carry the fingerprint of our cluster CA,
//! so a neighbour's cluster on the same LAN is never dialled).

use crate::error::ClientError;
use crate::operator::{hello_following, SEVERAL_CONNECT_TIMEOUT};
use bramble_proto::identity::{self, files, Credentials, Role};
use bramble_proto::masters::split_list;
use bramble_proto::messages::PeerKind;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;
use tracing::info;

/// How long to browse mDNS for the master before giving up.
pub const DISCOVERY_TIMEOUT: Duration = Duration::from_secs(5);

/// The master's address: `master` (`host:port`) resolved, or when absent the master of the
/// cluster in `cluster` (its CA) found by mDNS within [`DISCOVERY_TIMEOUT`]. Of a list
/// (`a:5050,b:5050`), the first.
pub async fn locate_master(
    master: Option<&str>,
    cluster: &Path,
) -> Result<SocketAddr, ClientError> {
    locate_masters(master, cluster)
        .await?
        .first()
        .copied()
        .ok_or(ClientError::NoMaster)
}

/// Every master named in `master` (`host:port`, or several comma-separated: the masters of
/// a replicated group), each resolved, in order; when absent, the master of the cluster in
/// `cluster` found by mDNS within [`DISCOVERY_TIMEOUT`]. Never empty.
pub async fn locate_masters(
    master: Option<&str>,
    cluster: &Path,
) -> Result<Vec<SocketAddr>, ClientError> {
    if let Some(text) = master {
        let list = split_list(text);
        if list.is_empty() {
            return Err(ClientError::NoAddress(text.to_owned()));
        }
        let mut addrs = Vec::with_capacity(list.len());
        for hostport in &list {
            let addr = tokio::net::lookup_host(hostport.as_str())
                .await
                .map_err(|source| ClientError::Resolve {
                    hostport: hostport.clone(),
                    source,
                })?
                .next()
                .ok_or_else(|| ClientError::NoAddress(hostport.clone()))?;
            addrs.push(addr);
        }
        return Ok(addrs);
    }
    let ca = identity::load_cert(&cluster.join(files::CA_CERT)).map_err(|source| {
        ClientError::NoClusterCa {
            dir: cluster.to_path_buf(),
            source,
        }
    })?;
    let cluster_id = identity::cluster_id(&ca);
    let found = bramble_proto::discovery::find_master(&cluster_id, &[], DISCOVERY_TIMEOUT)
        .await
        .map_err(ClientError::NotDiscovered)?;
    match found.first() {
        Some(addr) => Ok(vec![*addr]),
        None => Err(ClientError::DiscoveredWithoutAddress),
    }
}

/// Of the masters of a replicated group, the leader: the first of `masters` that welcomes a
/// hello, following standbys' redirects. The probe presents the operator certificate of
/// `principal` (`None`: the shared one), else its framework certificate, and closes at once.
/// One master, or no certificate to probe with: the first master, unprobed (every client
/// follows a redirect when it dials anyway).
pub async fn find_leader(
    cluster: &Path,
    principal: Option<&str>,
    masters: &[SocketAddr],
) -> Result<SocketAddr, ClientError> {
    let first = *masters.first().ok_or(ClientError::NoMaster)?;
    if masters.len() == 1 {
        return Ok(first);
    }
    let probe = [
        (Role::Operator, PeerKind::Operator),
        (Role::Framework, PeerKind::Scheduler),
    ]
    .into_iter()
    .find_map(|(role, kind)| {
        Credentials::load_as(cluster, principal, role)
            .ok()
            .map(|creds| (creds, kind))
    });
    let Some((creds, kind)) = probe else {
        return Ok(first);
    };
    let mut last = None;
    for (i, master) in masters.iter().enumerate() {
        match hello_following(&creds, kind, *master, SEVERAL_CONNECT_TIMEOUT).await {
            Ok((endpoint, conn, _ctl)) => {
                let leader = conn.remote_address();
                conn.close(quinn::VarInt::from_u32(0), b"found the leader");
                endpoint.close(quinn::VarInt::from_u32(0), b"found the leader");
                return Ok(leader);
            }
            // A refusal is the leader's own answer (a standby redirects): it is the leader,
            // and the command says why it refuses us.
            Err(ClientError::Refused(_)) => return Ok(*master),
            Err(e) => {
                if let Some(next) = masters.get(i + 1) {
                    info!("{e}; trying {next}");
                }
                last = Some(e);
            }
        }
    }
    Err(last.unwrap_or(ClientError::NoMaster))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_given_address_is_resolved_without_looking_further() {
        let dir = tempfile::tempdir().expect("tempdir");
        let addr = locate_master(Some("127.0.0.1:5051"), dir.path())
            .await
            .expect("resolves");
        assert_eq!(addr, SocketAddr::from(([127, 0, 0, 1], 5051)));
    }

    #[tokio::test]
    async fn without_an_address_or_a_cluster_ca_the_error_says_where_it_looked() {
        let dir = tempfile::tempdir().expect("tempdir");
        let err = locate_master(None, dir.path()).await.expect_err("no CA");
        assert!(matches!(err, ClientError::NoClusterCa { .. }), "{err:?}");
        assert!(
            err.to_string().contains(&dir.path().display().to_string()),
            "{err}"
        );
    }
}

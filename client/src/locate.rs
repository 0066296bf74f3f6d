//! Where the master is: the address the operator gave, resolved now, or else the master of this
//! cluster found by mDNS (its advertisement must carry the fingerprint of our cluster CA, so a
//! neighbour's cluster on the same LAN is never dialled).

use crate::error::ClientError;
use bramble_proto::identity::{self, files};
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

/// How long to browse mDNS for the master before giving up.
pub const DISCOVERY_TIMEOUT: Duration = Duration::from_secs(5);

/// The master's address: `master` (`host:port`) resolved, or when absent the master of the
/// cluster in `cluster` (its CA) found by mDNS within [`DISCOVERY_TIMEOUT`].
pub async fn locate_master(
    master: Option<&str>,
    cluster: &Path,
) -> Result<SocketAddr, ClientError> {
    if let Some(hostport) = master {
        return tokio::net::lookup_host(hostport)
            .await
            .map_err(|source| ClientError::Resolve {
                hostport: hostport.to_owned(),
                source,
            })?
            .next()
            .ok_or_else(|| ClientError::NoAddress(hostport.to_owned()));
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
    found
        .first()
        .copied()
        .ok_or(ClientError::DiscoveredWithoutAddress)
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

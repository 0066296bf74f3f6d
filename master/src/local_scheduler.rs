//! The service scheduler on the master node (`bramble-services.service`) presents the node
//! certificate, which every card holds. Coming from loopback is not proof enough that it is
//! that scheduler: tasks share the master node's network, so a task could relay a lost card's
//! connection to 127.0.0.1. The master therefore also asks the kernel who owns the peer's UDP
//! socket (`/proc/net/udp{,6}`): it must be the master's own user (the unit runs both as
//! `bramble`) or root. A relay runs under a task's uid and is refused.

use bramble_proto::proc_net::{self, SocketRow};
use std::net::SocketAddr;

/// Whether the socket `peer` on this host belongs to this process's user or root.
pub fn check(peer: SocketAddr) -> Result<(), String> {
    let rows = proc_net::read_tables(&proc_net::UDP_TABLES)?;
    verdict(&rows, peer, &[0, nix::unistd::geteuid().as_raw()])
}

/// Every socket that could send from `peer` must be owned by one of `trusted`: with more
/// than one (address reuse), any stranger among them refuses.
fn verdict(rows: &[SocketRow], peer: SocketAddr, trusted: &[u32]) -> Result<(), String> {
    let owners: Vec<u32> = rows
        .iter()
        .filter(|r| proc_net::could_send_from(r.local, peer))
        .map(|r| r.uid)
        .collect();
    if owners.is_empty() {
        return Err(format!("no UDP socket on this host sends from {peer}"));
    }
    match owners.iter().find(|uid| !trusted.contains(uid)) {
        Some(uid) => Err(format!(
            "the socket {peer} belongs to uid {uid}, not to the master's user or root: a node certificate is a scheduler only as the master node's own service scheduler"
        )),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(local: &str, uid: u32) -> SocketRow {
        SocketRow {
            local: local.parse().unwrap(),
            remote: "0.0.0.0:0".parse().unwrap(),
            uid,
            inode: 1,
        }
    }

    #[test]
    fn only_sockets_of_the_master_user_or_root_pass() {
        let peer: SocketAddr = "127.0.0.1:40000".parse().unwrap();
        let trusted = [0, 998];
        assert!(verdict(&[row("127.0.0.1:40000", 998)], peer, &trusted).is_ok());
        assert!(verdict(&[row("0.0.0.0:40000", 0)], peer, &trusted).is_ok());
        assert!(verdict(&[row("[::]:40000", 998)], peer, &trusted).is_ok());
        // A relay a task set up on the master node.
        let relay = verdict(&[row("127.0.0.1:40000", 70001)], peer, &trusted).unwrap_err();
        assert!(relay.contains("uid 70001"), "{relay}");
        // A stranger sharing the port refuses, whoever else is there.
        let shared = [row("127.0.0.1:40000", 998), row("0.0.0.0:40000", 70001)];
        assert!(verdict(&shared, peer, &trusted).is_err());
        // Nobody there (or another port): refused.
        assert!(verdict(&[row("127.0.0.1:40001", 998)], peer, &trusted).is_err());
        assert!(verdict(&[], peer, &trusted).is_err());
    }

    #[test]
    fn our_own_socket_passes_the_live_check() {
        let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        check(socket.local_addr().unwrap()).expect("our own socket");
        let nobody: SocketAddr = "127.0.0.1:1".parse().unwrap();
        assert!(check(nobody).is_err());
    }
}

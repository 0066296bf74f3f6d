//! Which process is on the other end of a loopback TCP connection, and in which session.
//!
//! Mesos executors carry no token (the Mesos API has none without executor authentication),
//! so the agent recognises one by where it runs: the executor's container leader ran
//! `setsid`, so everything it starts is in the session whose id is the leader's pid. For a
//! connection from this host, the client's socket is the `/proc/net/tcp{,6}` row whose local
//! address is the connection's peer and whose remote address is ours; its inode is then found
//! among `/proc/<pid>/fd/*` links (`socket:[inode]`), and the session is field 6 of that
//! process's `/proc/<pid>/stat`. Blocking file reads: run it off the async workers.

use bramble_proto::proc_net;
use std::fs;
use std::net::SocketAddr;

/// The session of the process holding the client end of the connection `peer` → `local`.
pub fn session_of_peer(local: SocketAddr, peer: SocketAddr) -> Result<u32, String> {
    let inode = client_socket_inode(local, peer)?
        .ok_or_else(|| format!("no socket from {peer} to {local} in /proc/net/tcp"))?;
    let pid = socket_owner(inode)?
        .ok_or_else(|| format!("no process holds the socket from {peer} (inode {inode})"))?;
    session_of(pid)
}

/// The inode of the socket whose local address is `peer` and remote address is `local`.
pub fn client_socket_inode(local: SocketAddr, peer: SocketAddr) -> Result<Option<u64>, String> {
    let rows = proc_net::read_tables(&proc_net::TCP_TABLES)?;
    Ok(rows.iter().find_map(|row| {
        let remote_is_us = row.remote.port() == local.port()
            && (local.ip().is_unspecified()
                || proc_net::canonical(row.remote.ip()) == proc_net::canonical(local.ip()));
        (row.inode != 0 && proc_net::same(row.local, peer) && remote_is_us).then_some(row.inode)
    }))
}

/// A process with `socket:[inode]` among its open files.
fn socket_owner(inode: u64) -> Result<Option<u32>, String> {
    let want = format!("socket:[{inode}]");
    let procs = fs::read_dir("/proc").map_err(|e| format!("reading /proc: {e}"))?;
    for entry in procs.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        // Processes come and go, and some are not ours to read: skip those quietly.
        let Ok(fds) = fs::read_dir(entry.path().join("fd")) else {
            continue;
        };
        for fd in fds.flatten() {
            if fs::read_link(fd.path()).is_ok_and(|l| l.as_os_str() == want.as_str()) {
                return Ok(Some(pid));
            }
        }
    }
    Ok(None)
}

/// The session id of `pid` (field 6 of `/proc/<pid>/stat`, counted after the command name,
/// which may itself hold spaces and parentheses).
pub fn session_of(pid: u32) -> Result<u32, String> {
    let path = format!("/proc/{pid}/stat");
    let stat = fs::read_to_string(&path).map_err(|e| format!("reading {path}: {e}"))?;
    stat.rsplit_once(')')
        .and_then(|(_, rest)| rest.split_whitespace().nth(3))
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("{path}: no session field"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_session_of_our_own_connection() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let local = listener.local_addr().unwrap();
        let client = std::net::TcpStream::connect(local).unwrap();
        let (_server, peer) = listener.accept().unwrap();
        assert_eq!(peer, client.local_addr().unwrap());
        let ours = session_of(std::process::id()).unwrap();
        assert_eq!(session_of_peer(local, peer).unwrap(), ours);
        // Nobody holds a connection from a port nobody uses.
        let nobody: SocketAddr = "127.0.0.1:1".parse().unwrap();
        assert!(session_of_peer(local, nobody).is_err());
    }
}

//! Which process is on the other end of a loopback TCP connection, and in which session.
//!
//! Mesos executors carry no token (the Mesos API has none without executor authentication),
//! so the agent recognises one by where it runs: the executor's container leader ran
//! `setsid`, so everything it starts is in the session whose id is the leader's pid. For a
//! connection from this host, the client's socket is the `/proc/net/tcp{,6}` row whose local
//! address is the connection's peer and whose remote address is ours; its inode is then found
//! among `/proc/<pid>/fd/*` links (`socket:[inode]`), and the session is field 6 of that
//! process's `/proc/<pid>/stat`. Blocking file reads: run it off the async workers.

use std::fs;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

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
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let text = match fs::read_to_string(table) {
            Ok(t) => t,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(format!("reading {table}: {e}")),
        };
        if let Some(inode) = find_inode(&text, local, peer) {
            return Ok(Some(inode));
        }
    }
    Ok(None)
}

/// Scans one `/proc/net/tcp{,6}` table.
fn find_inode(table: &str, local: SocketAddr, peer: SocketAddr) -> Option<u64> {
    table.lines().skip(1).find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let (row_local, row_remote) = (parse_addr(fields.get(1)?)?, parse_addr(fields.get(2)?)?);
        let inode: u64 = fields.get(9)?.parse().ok()?;
        let remote_is_us = row_remote.port() == local.port()
            && (local.ip().is_unspecified() || canonical(row_remote.ip()) == canonical(local.ip()));
        (inode != 0 && same(row_local, peer) && remote_is_us).then_some(inode)
    })
}

fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

fn same(a: SocketAddr, b: SocketAddr) -> bool {
    a.port() == b.port() && canonical(a.ip()) == canonical(b.ip())
}

/// `0100007F:1F90` (IPv4) or 32 hex digits and a port (IPv6): each 32-bit word in the
/// kernel's (host, here little-endian) byte order, the port in plain hex.
fn parse_addr(text: &str) -> Option<SocketAddr> {
    let (ip, port) = text.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    let word = |s: &str| u32::from_str_radix(s, 16).ok().map(u32::to_le_bytes);
    let ip = match ip.len() {
        8 => IpAddr::V4(Ipv4Addr::from(word(ip)?)),
        32 => {
            let mut bytes = [0u8; 16];
            for i in 0..4 {
                bytes[i * 4..i * 4 + 4].copy_from_slice(&word(&ip[i * 8..i * 8 + 8])?);
            }
            IpAddr::V6(Ipv6Addr::from(bytes))
        }
        _ => return None,
    };
    Some(SocketAddr::new(ip, port))
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
    fn parses_proc_net_tcp_addresses() {
        assert_eq!(
            parse_addr("0100007F:1F90"),
            Some("127.0.0.1:8080".parse().unwrap())
        );
        assert_eq!(
            parse_addr("00000000000000000000000001000000:0050"),
            Some("[::1]:80".parse().unwrap())
        );
        assert_eq!(parse_addr("junk"), None);
    }

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

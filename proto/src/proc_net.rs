//! The kernel's socket tables (`/proc/net/{tcp,udp}{,6}`): which socket on this host has an
//! address, and which user owns it. The agent uses it to find the process behind a Mesos
//! executor's loopback connection; the master, to check that a loopback peer presenting the
//! node certificate is the service scheduler's socket (the master's own user), not a relay a
//! task set up on the master node. Blocking file reads: run them off the async workers.

use std::fs;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

pub const TCP_TABLES: [&str; 2] = ["/proc/net/tcp", "/proc/net/tcp6"];
pub const UDP_TABLES: [&str; 2] = ["/proc/net/udp", "/proc/net/udp6"];

/// One row of a socket table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SocketRow {
    pub local: SocketAddr,
    pub remote: SocketAddr,
    pub uid: u32,
    pub inode: u64,
}

/// The rows of one table's text that parse (the header and anything malformed are skipped).
pub fn parse_table(text: &str) -> impl Iterator<Item = SocketRow> + '_ {
    text.lines().skip(1).filter_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        Some(SocketRow {
            local: parse_addr(fields.get(1)?)?,
            remote: parse_addr(fields.get(2)?)?,
            uid: fields.get(7)?.parse().ok()?,
            inode: fields.get(9)?.parse().ok()?,
        })
    })
}

/// Every row of `tables`; a table the kernel does not have (no IPv6) is skipped.
pub fn read_tables(tables: &[&str]) -> Result<Vec<SocketRow>, String> {
    let mut rows = Vec::new();
    for table in tables {
        match fs::read_to_string(table) {
            Ok(text) => rows.extend(parse_table(&text)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(format!("reading {table}: {e}")),
        }
    }
    Ok(rows)
}

/// An IPv4-mapped IPv6 address as the IPv4 address it is.
pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// The same address and port, IPv4-mapped or not.
pub fn same(a: SocketAddr, b: SocketAddr) -> bool {
    a.port() == b.port() && canonical(a.ip()) == canonical(b.ip())
}

/// Whether a socket bound to `bound` sends from `addr`: the same address, or the wildcard
/// on the same port.
pub fn could_send_from(bound: SocketAddr, addr: SocketAddr) -> bool {
    bound.port() == addr.port() && (bound.ip().is_unspecified() || same(bound, addr))
}

/// `0100007F:1F90` (IPv4) or 32 hex digits and a port (IPv6): each 32-bit word in the
/// kernel's (host, here little-endian) byte order, the port in plain hex.
pub fn parse_addr(text: &str) -> Option<SocketAddr> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_addresses() {
        assert_eq!(
            parse_addr("0100007F:1F90"),
            Some("127.0.0.1:8080".parse().unwrap())
        );
        assert_eq!(
            parse_addr("00000000000000000000000001000000:0050"),
            Some("[::1]:80".parse().unwrap())
        );
        assert_eq!(parse_addr("junk"), None);
        assert_eq!(parse_addr("0100007F:zz"), None);
    }

    #[test]
    fn parses_rows_and_skips_malformed_ones() {
        let text = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops\n\
  12: 0100007F:9C40 00000000:0000 07 00000000:00000000 00:00000000 00000000  1000        0 43210 2 0000000000000000 0\n\
  garbage\n";
        let rows: Vec<SocketRow> = parse_table(text).collect();
        assert_eq!(
            rows,
            vec![SocketRow {
                local: "127.0.0.1:40000".parse().unwrap(),
                remote: "0.0.0.0:0".parse().unwrap(),
                uid: 1000,
                inode: 43210,
            }]
        );
    }

    #[test]
    fn finds_our_own_udp_socket_with_our_uid() {
        let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let addr = socket.local_addr().unwrap();
        let rows = read_tables(&UDP_TABLES).unwrap();
        let ours: Vec<&SocketRow> = rows
            .iter()
            .filter(|r| could_send_from(r.local, addr))
            .collect();
        assert_eq!(ours.len(), 1, "{ours:?}");
        assert_eq!(ours[0].uid, nix::unistd::geteuid().as_raw());
        let mapped = SocketAddr::new(
            IpAddr::V6(Ipv4Addr::LOCALHOST.to_ipv6_mapped()),
            addr.port(),
        );
        assert!(could_send_from(ours[0].local, mapped));
    }
}

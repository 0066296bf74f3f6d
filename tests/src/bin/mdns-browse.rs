//! A phone on the Wi-Fi, for tests: browses one mDNS service type with the mdns-sd client and
//! prints what it hears on stderr, one line each (`resolved FULLNAME HOST IP:PORT task=ID`,
//! `removed FULLNAME`), until killed or SECONDS pass. The namespaced tests run it on a host of
//! its own (`ip netns exec`), so what it resolves came over the wire.
//! Usage: `mdns-browse [TYPE] [SECONDS]` (default `_http._tcp.local.`, 120).

use mdns_sd::{ServiceDaemon, ServiceEvent};
use std::time::{Duration, Instant};

fn main() {
    let mut args = std::env::args().skip(1);
    let ty = args
        .next()
        .unwrap_or_else(|| "_http._tcp.local.".to_string());
    let secs: u64 = args.next().and_then(|s| s.parse().ok()).unwrap_or(120);
    let daemon = match ServiceDaemon::new() {
        Ok(d) => d,
        Err(e) => {
            eprintln!("error: starting mDNS: {e}");
            std::process::exit(1);
        }
    };
    let events = match daemon.browse(&ty) {
        Ok(rx) => rx,
        Err(e) => {
            eprintln!("error: browsing {ty}: {e}");
            std::process::exit(1);
        }
    };
    eprintln!("browsing {ty}");
    let until = Instant::now() + Duration::from_secs(secs);
    while let Some(left) = until.checked_duration_since(Instant::now()) {
        match events.recv_timeout(left) {
            Ok(ServiceEvent::ServiceResolved(s)) => {
                let mut ips: Vec<String> = s
                    .get_addresses_v4()
                    .iter()
                    .map(|ip| format!("{ip}:{}", s.port))
                    .collect();
                ips.sort();
                eprintln!(
                    "resolved {} {} {} task={}",
                    s.fullname,
                    s.host,
                    ips.join(","),
                    s.get_property_val_str("task").unwrap_or("-")
                );
            }
            Ok(ServiceEvent::ServiceRemoved(_, fullname)) => eprintln!("removed {fullname}"),
            Ok(_) => {}
            Err(_) => break,
        }
    }
}

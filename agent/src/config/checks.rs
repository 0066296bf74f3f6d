//! What the agent's config must satisfy beyond its types: each check names the key it is
//! about, so the loader's error can point at the line.

use super::{AgentConfig, RecoveryConfig};
use bramble_proto::PortRange;

impl AgentConfig {
    /// Checks values serde cannot: returns the offending key and what is wrong with it.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        if let Some(c) = self.cpus {
            if !c.is_finite() || c <= 0.0 {
                return Err(("cpus", format!("must be a positive number, got {c}")));
            }
        }
        if self.mem == Some(0) {
            return Err(("mem", "must be at least 1 (MiB)".to_owned()));
        }
        if let Some(ports) = &self.ports {
            parse_ports(ports).map_err(|e| ("ports", e))?;
        }
        if let Some(master) = &self.master {
            if !self.masters.is_empty() {
                return Err(("masters", "give master or masters, not both".to_owned()));
            }
            let list = bramble_proto::masters::split_list(master);
            if list.is_empty() {
                return Err(("master", format!("{master:?} names no master")));
            }
            for m in &list {
                check_host_port(m).map_err(|e| ("master", e))?;
            }
        }
        for m in &self.masters {
            check_host_port(m).map_err(|e| ("masters", e))?;
        }
        self.mesos.listen_addr().map_err(|e| ("mesos.listen", e))?;
        if self.heartbeat_interval_ms == 0 {
            return Err(("heartbeat_interval_ms", "must be at least 1".to_owned()));
        }
        if self.executor_registration_timeout_secs == 0 {
            return Err((
                "executor_registration_timeout_secs",
                "must be at least 1".to_owned(),
            ));
        }
        if let Some(key) = self.attributes.keys().find(|k| k.trim().is_empty()) {
            return Err(("attributes", format!("empty attribute name {key:?}")));
        }
        self.discovery.validate()?;
        self.validate_gc_and_user()?;
        self.recovery.validate()?;
        if self.fetch.max_mb == 0 || self.fetch.max_mb > (1 << 20) {
            return Err(("fetch.max_mb", "must be between 1 and 1048576".to_owned()));
        }
        if self.fetch.cache_mb > (1 << 30) {
            return Err(("fetch.cache_mb", "must be at most 1073741824".to_owned()));
        }
        if self.fetch.timeout_secs == 0 {
            return Err(("fetch.timeout_secs", "must be at least 1".to_owned()));
        }
        if let Some(filter) = &self.log {
            tracing_subscriber::EnvFilter::try_new(filter)
                .map_err(|e| ("log", format!("not a tracing filter: {e}")))?;
        }
        Ok(())
    }
    fn validate_gc_and_user(&self) -> Result<(), (&'static str, String)> {
        let h = self.gc.disk_headroom;
        if !(0.0..1.0).contains(&h) {
            return Err(("gc.disk_headroom", format!("must be in [0, 1), got {h}")));
        }
        let w = self.gc.disk_high_watermark;
        if !(w > 0.0 && w <= 1.0) {
            return Err((
                "gc.disk_high_watermark",
                format!("must be in (0, 1], got {w}"),
            ));
        }
        if self.gc.interval_secs == 0 {
            return Err(("gc.interval_secs", "must be at least 1".to_owned()));
        }
        self.task_users()?;
        Ok(())
    }
}

impl RecoveryConfig {
    fn validate(&self) -> Result<(), (&'static str, String)> {
        if self.executor_reconnect_timeout_secs == 0 {
            return Err((
                "recovery.executor_reconnect_timeout_secs",
                "must be at least 1".to_owned(),
            ));
        }
        Ok(())
    }
}

/// Parses a port list like `"31000-32000,8080"`. Whitespace around entries is ignored; an
/// empty string is an empty list. Port 0 is refused (it means "any port" to the kernel).
pub fn parse_ports(s: &str) -> Result<Vec<PortRange>, String> {
    if s.trim().is_empty() {
        return Ok(Vec::new());
    }
    s.split(',')
        .map(|entry| {
            let entry = entry.trim();
            if entry.is_empty() {
                return Err(format!("empty entry in port list {s:?}"));
            }
            let (begin, end) = match entry.split_once('-') {
                Some((b, e)) => (parse_port(b.trim(), entry)?, parse_port(e.trim(), entry)?),
                None => {
                    let p = parse_port(entry, entry)?;
                    (p, p)
                }
            };
            if begin > end {
                return Err(format!("port range {entry:?} ends before it begins"));
            }
            Ok(PortRange::new(begin, end))
        })
        .collect()
}

fn parse_port(s: &str, entry: &str) -> Result<u16, String> {
    match s.parse::<u16>() {
        Ok(p) if p > 0 => Ok(p),
        _ if s == entry => Err(format!("{s:?} is not a port number (1-65535)")),
        _ => Err(format!("{s:?} in {entry:?} is not a port number (1-65535)")),
    }
}

/// Checks `host:port` (IPv6 hosts in brackets: `[fd00::1]:5051`).
pub(super) fn check_host_port(s: &str) -> Result<(), String> {
    let (host, port) = s
        .rsplit_once(':')
        .ok_or_else(|| format!("{s:?} is not host:port"))?;
    if host.is_empty() || host == "[]" {
        return Err(format!("{s:?} has no host"));
    }
    if host.contains(':') && !(host.starts_with('[') && host.ends_with(']')) {
        return Err(format!(
            "{s:?}: write IPv6 addresses in brackets, e.g. [fd00::1]:5051"
        ));
    }
    match port.parse::<u16>() {
        Ok(p) if p > 0 => Ok(()),
        _ => Err(format!("{s:?} has no valid port after ':'")),
    }
}

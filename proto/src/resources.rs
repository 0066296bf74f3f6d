//! Scalar and range resources and their arithmetic.
//!
//! CPUs are fractional, so they are kept in thousandths (as Mesos does with fixed point) to
//! make `a - b + b == a` exact: offers are split and merged thousands of times over a job and
//! float drift would eventually refuse a task that fits.

use serde::{Deserialize, Serialize};
use std::fmt;

/// An inclusive range of TCP/UDP ports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct PortRange {
    pub begin: u16,
    pub end: u16,
}

impl PortRange {
    pub fn new(begin: u16, end: u16) -> Self {
        Self { begin, end }
    }

    pub fn len(&self) -> u32 {
        u32::from(self.end) - u32::from(self.begin) + 1
    }

    pub fn is_empty(&self) -> bool {
        self.end < self.begin
    }
}

impl fmt::Display for PortRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.begin, self.end)
    }
}

/// A bundle of resources: what an agent has, what an offer carries, what a task uses.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resources {
    /// CPUs in thousandths (1000 = one core).
    pub cpus_milli: u64,
    pub mem_mib: u64,
    pub disk_mib: u64,
    /// Sorted, non-overlapping, non-adjacent port ranges.
    pub ports: Vec<PortRange>,
}

impl Resources {
    pub fn new(cpus: f64, mem_mib: u64) -> Self {
        Self {
            cpus_milli: cpus_to_milli(cpus),
            mem_mib,
            ..Self::default()
        }
    }

    pub fn with_disk(mut self, disk_mib: u64) -> Self {
        self.disk_mib = disk_mib;
        self
    }

    pub fn with_ports(mut self, ranges: impl IntoIterator<Item = PortRange>) -> Self {
        self.ports = normalize(ranges.into_iter().collect());
        self
    }

    pub fn cpus(&self) -> f64 {
        self.cpus_milli as f64 / 1000.0
    }

    pub fn port_count(&self) -> u32 {
        self.ports.iter().map(PortRange::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.cpus_milli == 0 && self.mem_mib == 0 && self.disk_mib == 0 && self.ports.is_empty()
    }

    /// True when every part of `other` is available in `self`.
    pub fn contains(&self, other: &Resources) -> bool {
        self.cpus_milli >= other.cpus_milli
            && self.mem_mib >= other.mem_mib
            && self.disk_mib >= other.disk_mib
            && other.ports.iter().all(|r| ranges_contain(&self.ports, r))
    }

    /// Adds `other` into `self`.
    pub fn add(&mut self, other: &Resources) {
        self.cpus_milli += other.cpus_milli;
        self.mem_mib += other.mem_mib;
        self.disk_mib += other.disk_mib;
        let mut ports = std::mem::take(&mut self.ports);
        ports.extend_from_slice(&other.ports);
        self.ports = normalize(ports);
    }

    /// Removes `other` from `self`, or returns `None` (leaving `self` untouched) when `other`
    /// is not contained in `self`.
    pub fn checked_sub(&self, other: &Resources) -> Option<Resources> {
        if !self.contains(other) {
            return None;
        }
        let mut ports = self.ports.clone();
        for r in &other.ports {
            ports = subtract_range(&ports, r);
        }
        Some(Resources {
            cpus_milli: self.cpus_milli - other.cpus_milli,
            mem_mib: self.mem_mib - other.mem_mib,
            disk_mib: self.disk_mib - other.disk_mib,
            ports,
        })
    }

    /// Removes as much of `other` as is present; used when releasing bookkeeping that may have
    /// been partly released already.
    pub fn saturating_sub(&self, other: &Resources) -> Resources {
        let mut ports = self.ports.clone();
        for r in &other.ports {
            ports = subtract_range(&ports, r);
        }
        Resources {
            cpus_milli: self.cpus_milli.saturating_sub(other.cpus_milli),
            mem_mib: self.mem_mib.saturating_sub(other.mem_mib),
            disk_mib: self.disk_mib.saturating_sub(other.disk_mib),
            ports,
        }
    }

    /// Names the first part of `other` that `self` lacks, for refusal messages.
    pub fn shortfall(&self, other: &Resources) -> Option<String> {
        if self.cpus_milli < other.cpus_milli {
            return Some(format!("cpus {} > {}", other.cpus(), self.cpus()));
        }
        if self.mem_mib < other.mem_mib {
            return Some(format!("mem {} MiB > {} MiB", other.mem_mib, self.mem_mib));
        }
        if self.disk_mib < other.disk_mib {
            return Some(format!(
                "disk {} MiB > {} MiB",
                other.disk_mib, self.disk_mib
            ));
        }
        other
            .ports
            .iter()
            .find(|r| !ranges_contain(&self.ports, r))
            .map(|r| format!("ports {r} not available"))
    }
}

impl fmt::Display for Resources {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "cpus:{} mem:{}MiB", self.cpus(), self.mem_mib)?;
        if self.disk_mib > 0 {
            write!(f, " disk:{}MiB", self.disk_mib)?;
        }
        if !self.ports.is_empty() {
            let ranges: Vec<String> = self.ports.iter().map(|r| r.to_string()).collect();
            write!(f, " ports:[{}]", ranges.join(","))?;
        }
        Ok(())
    }
}

/// Converts fractional CPUs to thousandths, rounding to the nearest and clamping negatives.
pub fn cpus_to_milli(cpus: f64) -> u64 {
    if cpus.is_finite() && cpus > 0.0 {
        (cpus * 1000.0).round() as u64
    } else {
        0
    }
}

fn normalize(mut ranges: Vec<PortRange>) -> Vec<PortRange> {
    ranges.retain(|r| !r.is_empty());
    ranges.sort();
    let mut out: Vec<PortRange> = Vec::with_capacity(ranges.len());
    for r in ranges {
        match out.last_mut() {
            Some(last) if u32::from(r.begin) <= u32::from(last.end) + 1 => {
                last.end = last.end.max(r.end);
            }
            _ => out.push(r),
        }
    }
    out
}

fn ranges_contain(ranges: &[PortRange], r: &PortRange) -> bool {
    r.is_empty()
        || ranges
            .iter()
            .any(|have| have.begin <= r.begin && r.end <= have.end)
}

fn subtract_range(ranges: &[PortRange], cut: &PortRange) -> Vec<PortRange> {
    let mut out = Vec::with_capacity(ranges.len() + 1);
    for r in ranges {
        if cut.end < r.begin || cut.begin > r.end {
            out.push(*r);
            continue;
        }
        if cut.begin > r.begin {
            out.push(PortRange::new(r.begin, cut.begin - 1));
        }
        if cut.end < r.end {
            out.push(PortRange::new(cut.end + 1, r.end));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fractional_cpus_add_and_subtract_exactly() {
        let mut total = Resources::new(0.0, 0);
        for _ in 0..10 {
            total.add(&Resources::new(0.1, 1));
        }
        assert_eq!(total, Resources::new(1.0, 10));
        let mut left = total.clone();
        for _ in 0..10 {
            left = left.checked_sub(&Resources::new(0.1, 1)).expect("fits");
        }
        assert!(left.is_empty());
    }

    #[test]
    fn ports_split_and_merge() {
        let all = Resources::new(1.0, 10).with_ports([PortRange::new(31000, 31010)]);
        let one = Resources::default().with_ports([PortRange::new(31005, 31005)]);
        let rest = all.checked_sub(&one).expect("port present");
        assert_eq!(
            rest.ports,
            vec![PortRange::new(31000, 31004), PortRange::new(31006, 31010)]
        );
        assert!(!rest.contains(&one));
        let mut back = rest.clone();
        back.add(&one);
        assert_eq!(back, all);
    }

    #[test]
    fn checked_sub_refuses_what_is_missing_and_names_it() {
        let have = Resources::new(2.0, 512);
        let want = Resources::new(1.0, 1024);
        assert!(have.checked_sub(&want).is_none());
        assert_eq!(
            have.shortfall(&want).as_deref(),
            Some("mem 1024 MiB > 512 MiB")
        );
        let ports = Resources::default().with_ports([PortRange::new(80, 80)]);
        assert_eq!(
            have.shortfall(&ports).as_deref(),
            Some("ports 80-80 not available")
        );
    }

    #[test]
    fn negative_and_nan_cpus_become_zero() {
        assert_eq!(cpus_to_milli(-1.0), 0);
        assert_eq!(cpus_to_milli(f64::NAN), 0);
        assert_eq!(cpus_to_milli(0.0015), 2);
    }
}

//! `Resource` and `Value` (contract §2.4) and their mapping onto native `Resources`: scalars
//! `cpus`, `mem` and `disk` (MB), and `ports` ranges. A bramble has no GPUs and no custom
//! resources; asking for them is refused with a reason, not silently ignored.

use super::lenient;
use bramble_proto::resources::{cpus_to_milli, PortRange, Resources};
use serde::{Deserialize, Serialize};

/// The only role a bramble has; resources a framework sends without one get it (pitfall 11).
pub const DEFAULT_ROLE: &str = "*";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Resource {
    pub name: String,
    /// `SCALAR`, `RANGES` or `SET` (`TEXT` is for attributes only).
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scalar: Option<Scalar>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ranges: Option<Ranges>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub set: Option<Set>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allocation_info: Option<AllocationInfo>,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Scalar {
    #[serde(deserialize_with = "lenient::f64")]
    pub value: f64,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Ranges {
    #[serde(default)]
    pub range: Vec<Range>,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Range {
    #[serde(deserialize_with = "lenient::u64")]
    pub begin: u64,
    #[serde(deserialize_with = "lenient::u64")]
    pub end: u64,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Set {
    #[serde(default)]
    pub item: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AllocationInfo {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
}

impl Resource {
    fn scalar(name: &str, value: f64) -> Self {
        Self {
            name: name.into(),
            kind: "SCALAR".into(),
            scalar: Some(Scalar {
                // Mesos computes scalars in fixed point with three decimals.
                value: (value * 1000.0).round() / 1000.0,
            }),
            ranges: None,
            set: None,
            role: Some(DEFAULT_ROLE.into()),
            allocation_info: Some(AllocationInfo {
                role: Some(DEFAULT_ROLE.into()),
            }),
        }
    }
}

/// Native resources as Mesos lists them in an offer: cpus, mem, disk (when non-zero) and
/// ports, each with role `*` and its allocation info.
pub fn to_mesos(r: &Resources) -> Vec<Resource> {
    let mut out = vec![
        Resource::scalar("cpus", r.cpus_milli as f64 / 1000.0),
        Resource::scalar("mem", r.mem_mib as f64),
    ];
    if r.disk_mib > 0 {
        out.push(Resource::scalar("disk", r.disk_mib as f64));
    }
    if !r.ports.is_empty() {
        let mut ports = Resource::scalar("ports", 0.0);
        ports.kind = "RANGES".into();
        ports.scalar = None;
        ports.ranges = Some(Ranges {
            range: r
                .ports
                .iter()
                .map(|p| Range {
                    begin: u64::from(p.begin),
                    end: u64::from(p.end),
                })
                .collect(),
        });
        out.push(ports);
    }
    out
}

/// A framework's resource list summed into native resources. Memory and disk round up to
/// whole MB so a task never gets less than it asked for.
pub fn from_mesos(list: &[Resource]) -> Result<Resources, String> {
    let mut cpus = 0.0f64;
    let mut mem = 0.0f64;
    let mut disk = 0.0f64;
    let mut ports = Vec::new();
    for r in list {
        let scalar = || -> Result<f64, String> {
            let v = r
                .scalar
                .as_ref()
                .filter(|_| r.kind == "SCALAR")
                .map(|s| s.value)
                .ok_or_else(|| format!("resource {:?} must be a SCALAR with a value", r.name))?;
            if v.is_finite() && v >= 0.0 {
                Ok(v)
            } else {
                Err(format!("resource {:?} has an invalid value {v}", r.name))
            }
        };
        match r.name.as_str() {
            "cpus" => cpus += scalar()?,
            "mem" => mem += scalar()?,
            "disk" => disk += scalar()?,
            "gpus" if scalar()? == 0.0 => {}
            "gpus" => return Err("a bramble has no GPUs to offer".into()),
            "ports" => {
                let ranges = r
                    .ranges
                    .as_ref()
                    .filter(|_| r.kind == "RANGES")
                    .ok_or("resource \"ports\" must be RANGES")?;
                for range in &ranges.range {
                    let (b, e) = (range.begin, range.end);
                    if b > e || e > u64::from(u16::MAX) || b == 0 {
                        return Err(format!(
                            "port range [{b}-{e}] is not a valid range of ports"
                        ));
                    }
                    ports.push(PortRange::new(b as u16, e as u16));
                }
            }
            other => {
                return Err(format!(
                    "unknown resource {other:?}: a bramble offers cpus, mem, disk and ports"
                ))
            }
        }
    }
    Ok(Resources {
        cpus_milli: cpus_to_milli(cpus),
        mem_mib: mem.ceil() as u64,
        disk_mib: disk.ceil() as u64,
        ports: Vec::new(),
    }
    .with_ports(ports))
}

/// Resources as a map of name → value (scalars as numbers, ranges as `"[a-b, c-d]"`), the
/// shape of `/master/state`'s resource fields; cpus, gpus, mem and disk are always present.
pub fn to_state_map(r: &Resources) -> serde_json::Map<String, serde_json::Value> {
    use serde_json::json;
    let mut m = serde_json::Map::new();
    m.insert("cpus".into(), json!(r.cpus_milli as f64 / 1000.0));
    m.insert("gpus".into(), json!(0.0));
    m.insert("mem".into(), json!(r.mem_mib as f64));
    m.insert("disk".into(), json!(r.disk_mib as f64));
    if !r.ports.is_empty() {
        let ranges: Vec<String> = r
            .ports
            .iter()
            .map(|p| format!("{}-{}", p.begin, p.end))
            .collect();
        m.insert("ports".into(), json!(format!("[{}]", ranges.join(", "))));
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offers_list_role_and_allocation_info() {
        let r = Resources::new(1.5, 512).with_ports([PortRange::new(31000, 32000)]);
        let json = serde_json::to_value(to_mesos(&r)).unwrap();
        assert_eq!(
            json[0],
            serde_json::json!({"name":"cpus","type":"SCALAR","scalar":{"value":1.5},
                "role":"*","allocation_info":{"role":"*"}})
        );
        assert_eq!(json[2]["ranges"]["range"][0]["end"], 32000);
        assert_eq!(from_mesos(&to_mesos(&r)).unwrap(), r);
    }

    #[test]
    fn framework_resources_are_summed_leniently_and_checked() {
        let list: Vec<Resource> = serde_json::from_str(
            r#"[{"name":"cpus","type":"SCALAR","scalar":{"value":"0.5"}},
                {"name":"mem","type":"SCALAR","scalar":{"value":32.2}},
                {"name":"cpus","type":"SCALAR","scalar":{"value":0.25}}]"#,
        )
        .unwrap();
        let r = from_mesos(&list).unwrap();
        assert_eq!((r.cpus_milli, r.mem_mib), (750, 33));
        for bad in [
            r#"[{"name":"gpus","type":"SCALAR","scalar":{"value":1}}]"#,
            r#"[{"name":"fpgas","type":"SCALAR","scalar":{"value":1}}]"#,
            r#"[{"name":"cpus","type":"SCALAR","scalar":{"value":-1}}]"#,
            r#"[{"name":"cpus","type":"RANGES"}]"#,
            r#"[{"name":"ports","type":"RANGES","ranges":{"range":[{"begin":5,"end":70000}]}}]"#,
        ] {
            let list: Vec<Resource> = serde_json::from_str(bad).unwrap();
            assert!(from_mesos(&list).is_err(), "{bad}");
        }
    }
}

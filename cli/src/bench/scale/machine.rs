//! The machine a scale run ran on, and how busy it was: the run shares its cores with whatever
//! else runs (other builds, other benchmarks), and its figures mean little without that.
//! Read from `/proc/loadavg` at the start and the end of the run.

use serde::Serialize;

#[derive(Debug, Clone, Serialize)]
pub struct Machine {
    pub cpus: usize,
    /// The 1, 5 and 15 minute load averages as the run started (`None` without `/proc`).
    pub load_average_start: Option<[f64; 3]>,
    /// ... and as it ended.
    pub load_average_end: Option<[f64; 3]>,
}

impl Machine {
    pub fn now() -> Self {
        Self {
            cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
            load_average_start: load_average(),
            load_average_end: None,
        }
    }

    pub fn finish(&mut self) {
        self.load_average_end = load_average();
    }
}

fn load_average() -> Option<[f64; 3]> {
    parse_loadavg(&std::fs::read_to_string("/proc/loadavg").ok()?)
}

/// `/proc/loadavg`'s first three fields.
fn parse_loadavg(text: &str) -> Option<[f64; 3]> {
    let mut fields = text.split_whitespace().map(str::parse::<f64>);
    let mut one = || fields.next()?.ok();
    Some([one()?, one()?, one()?])
}

#[cfg(test)]
mod tests {
    use super::parse_loadavg;

    #[test]
    fn the_load_average_is_the_first_three_fields() {
        assert_eq!(
            parse_loadavg("1.76 0.86 0.46 3/412 9036\n"),
            Some([1.76, 0.86, 0.46])
        );
        assert_eq!(parse_loadavg("1.76 x 0.46"), None);
        assert_eq!(parse_loadavg(""), None);
    }
}

//! Board facts: which Pi this is and how warm it runs.
//!
//! Read from the files the kernel exposes (device tree and thermal zone), under a `root`
//! that is `/` on a Pi and a temp dir in tests. A file that is not there means "not known
//! here" (not a Pi, no thermal zone): `Ok(None)`, not an error. The master shows these on
//! the panel; the agent reports them as attributes.

use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

#[derive(Debug, thiserror::Error)]
pub enum BoardError {
    #[error("reading {path}: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error("reading {path}: {value:?} is not a temperature in millidegrees")]
    Temperature { path: PathBuf, value: String },
}

/// What the board says about itself. Every field is optional: a laptop has none of them.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct BoardFacts {
    /// e.g. "Raspberry Pi 4 Model B Rev 1.4".
    pub model: Option<String>,
    /// The board serial, e.g. "10000000a1b2c3d4".
    pub serial: Option<String>,
    pub temperature_c: Option<f32>,
}

impl BoardFacts {
    /// Reads all facts under `root`, logging (at debug) and skipping any that cannot be read.
    pub fn read(root: &Path) -> BoardFacts {
        fn keep<T>(r: Result<Option<T>, BoardError>) -> Option<T> {
            r.unwrap_or_else(|e| {
                tracing::debug!(error = %e, "board fact unavailable");
                None
            })
        }
        BoardFacts {
            model: keep(model(root)),
            serial: keep(serial(root)),
            temperature_c: keep(soc_temperature_c(root)),
        }
    }
}

/// The Pi model from `{root}/proc/device-tree/model`.
pub fn model(root: &Path) -> Result<Option<String>, BoardError> {
    read_dt_string(&root.join("proc/device-tree/model"))
}

/// The board serial from `{root}/proc/device-tree/serial-number`.
pub fn serial(root: &Path) -> Result<Option<String>, BoardError> {
    read_dt_string(&root.join("proc/device-tree/serial-number"))
}

/// The SoC temperature in °C from `{root}/sys/class/thermal/thermal_zone0/temp` (millidegrees).
pub fn soc_temperature_c(root: &Path) -> Result<Option<f32>, BoardError> {
    let path = root.join("sys/class/thermal/thermal_zone0/temp");
    let Some(text) = read_optional(&path)? else {
        return Ok(None);
    };
    let value = text.trim();
    match value.parse::<i64>() {
        Ok(milli) => Ok(Some(milli as f32 / 1000.0)),
        Err(_) => Err(BoardError::Temperature {
            path,
            value: value.to_string(),
        }),
    }
}

/// Device-tree strings end in NUL; an empty one counts as absent.
fn read_dt_string(path: &Path) -> Result<Option<String>, BoardError> {
    Ok(read_optional(path)?.and_then(|s| {
        let s = s.trim_end_matches('\0').trim();
        (!s.is_empty()).then(|| s.to_string())
    }))
}

fn read_optional(path: &Path) -> Result<Option<String>, BoardError> {
    match std::fs::read(path) {
        Ok(bytes) => Ok(Some(String::from_utf8_lossy(&bytes).into_owned())),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(BoardError::Read {
            path: path.to_path_buf(),
            source,
        }),
    }
}

//! The TOML files a user writes (master.toml, agent.toml, the card's bramble.toml) and the
//! Mesos credentials file, parsed from hostile text: a clear error or a value, never a panic.
//! The first byte picks the file kind.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::path::Path;

fuzz_target!(|data: &[u8]| {
    let Some((&kind, rest)) = data.split_first() else {
        return;
    };
    let Ok(text) = std::str::from_utf8(rest) else {
        return;
    };
    match kind % 4 {
        0 => {
            let path = Path::new("master.toml");
            if let Ok(cfg) =
                bramble_proto::config::load_toml::<bramble_master::config::MasterConfig>(path, text)
            {
                let _ = cfg.validate(path, text);
            }
        }
        1 => {
            let _ = bramble_agent::config::parse(Path::new("agent.toml"), text);
        }
        2 => {
            let _ = bramble_master::http::mesos::Credentials::parse(text);
        }
        _ => {
            let _ = bramble_agent::config::parse_ports(text);
            let _ = bramble_image::osrelease::check_supported(text);
        }
    }
});

//! The Mesos v1 HTTP API's request bodies and streams, from hostile clients: scheduler calls
//! (with ACCEPT's operations), executor calls, and RecordIO streams fed in arbitrary pieces.
#![no_main]

use bramble_mesos::recordio::Decoder;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&kind, rest)) = data.split_first() else {
        return;
    };
    match kind % 4 {
        0 => {
            let _ = bramble_mesos::scheduler::parse_call(rest);
        }
        1 => {
            let _ = bramble_mesos::executor::Call::parse(rest);
        }
        2 => {
            if let Ok(v) = serde_json::from_slice(rest) {
                let _ = bramble_mesos::offer::parse_accept(v);
            }
        }
        _ => {
            // The stream cut where the input's own bytes say, as a slow or hostile peer would.
            let mut decoder = Decoder::new(64 << 10);
            let mut at = 0;
            while at < rest.len() {
                let step = 1 + usize::from(rest[at]) % 97;
                let end = (at + step).min(rest.len());
                if decoder.push(&rest[at..end]).is_err() {
                    return;
                }
                at = end;
            }
        }
    }
});

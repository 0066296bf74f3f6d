//! Every wire message type decoded from hostile bytes, as a peer on the LAN, a framework or
//! a task at the executor socket could send them. The first byte picks the type, the rest is
//! the frame's payload. Decoding may refuse; it must never panic, and what it accepts must
//! re-encode to a canonical form that decodes and re-encodes to the same bytes.
#![no_main]

use bramble_proto::codec::{decode_payload, encode_frame, MAX_FRAME_BYTES};
use bramble_proto::messages::{
    AgentToExecutor, AgentToMaster, ExecutorToAgent, Hello, HelloReply, MasterEvent,
    MasterToAgent, OperatorCall, OperatorReply, SchedulerCall,
};
use libfuzzer_sys::fuzz_target;
use serde::de::DeserializeOwned;
use serde::Serialize;

fn round_trip<T: Serialize + DeserializeOwned>(payload: &[u8]) {
    let Ok(msg) = decode_payload::<T>(payload) else {
        return;
    };
    // Accepted input can be larger once re-encoded (e.g. varints); over the limit is refused.
    let Ok(first) = encode_frame(&msg, MAX_FRAME_BYTES * 4) else {
        return;
    };
    let again: T = decode_payload(&first[4..]).expect("our own encoding decodes");
    let second = encode_frame(&again, MAX_FRAME_BYTES * 4).expect("re-encodes");
    assert_eq!(first, second, "encoding is not canonical");
}

fuzz_target!(|data: &[u8]| {
    let Some((&kind, payload)) = data.split_first() else {
        return;
    };
    match kind % 10 {
        0 => round_trip::<Hello>(payload),
        1 => round_trip::<HelloReply>(payload),
        2 => round_trip::<AgentToMaster>(payload),
        3 => round_trip::<MasterToAgent>(payload),
        4 => round_trip::<SchedulerCall>(payload),
        5 => round_trip::<MasterEvent>(payload),
        6 => round_trip::<OperatorCall>(payload),
        7 => round_trip::<OperatorReply>(payload),
        8 => round_trip::<ExecutorToAgent>(payload),
        _ => round_trip::<AgentToExecutor>(payload),
    }
});

//! The short CI form of the `wire` fuzz target (`fuzz/`, run long by `bench/fuzz.sh`): random
//! payloads for every wire message type decode or are refused without panicking, and what
//! decodes re-encodes canonically; messages with random contents survive the round trip.

use bramble_proto::codec::{decode_payload, encode_frame, MAX_FRAME_BYTES};
use bramble_proto::messages::{
    AgentToExecutor, AgentToMaster, ExecutorToAgent, Hello, HelloReply, MasterEvent, MasterToAgent,
    OperatorCall, OperatorReply, SchedulerCall,
};
use proptest::prelude::*;
use serde::de::DeserializeOwned;
use serde::Serialize;

/// Decodes `payload` as `T`; if that works, the encoding of the result is a fixed point.
fn canonical<T: Serialize + DeserializeOwned>(payload: &[u8]) {
    let Ok(msg) = decode_payload::<T>(payload) else {
        return;
    };
    let first = encode_frame(&msg, MAX_FRAME_BYTES * 4).expect("what decoded encodes");
    let again: T = decode_payload(&first[4..]).expect("our own encoding decodes");
    let second = encode_frame(&again, MAX_FRAME_BYTES * 4).expect("re-encodes");
    assert_eq!(first, second, "encoding is not canonical");
}

fn every_type(payload: &[u8]) {
    canonical::<Hello>(payload);
    canonical::<HelloReply>(payload);
    canonical::<AgentToMaster>(payload);
    canonical::<MasterToAgent>(payload);
    canonical::<SchedulerCall>(payload);
    canonical::<MasterEvent>(payload);
    canonical::<OperatorCall>(payload);
    canonical::<OperatorReply>(payload);
    canonical::<ExecutorToAgent>(payload);
    canonical::<AgentToExecutor>(payload);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2048))]

    #[test]
    fn random_payloads_never_panic(payload in proptest::collection::vec(any::<u8>(), 0..512)) {
        every_type(&payload);
    }

    /// Short payloads behind each variant tag reach deeper than uniform bytes do.
    #[test]
    fn payloads_behind_every_tag_never_panic(
        tag in 0u8..16,
        rest in proptest::collection::vec(any::<u8>(), 0..128),
    ) {
        let mut payload = vec![tag];
        payload.extend(rest);
        every_type(&payload);
    }

    #[test]
    fn framework_messages_round_trip(data in proptest::collection::vec(any::<u8>(), 0..4096)) {
        let up = ExecutorToAgent::Message(data.clone());
        let frame = encode_frame(&up, MAX_FRAME_BYTES).expect("encodes");
        let back: ExecutorToAgent = decode_payload(&frame[4..]).expect("decodes");
        prop_assert_eq!(back, up);
        let down = AgentToExecutor::Message(data);
        let frame = encode_frame(&down, MAX_FRAME_BYTES).expect("encodes");
        let back: AgentToExecutor = decode_payload(&frame[4..]).expect("decodes");
        prop_assert_eq!(back, down);
    }
}

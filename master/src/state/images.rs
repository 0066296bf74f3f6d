//! Image pieces the edge (`crate::images`) streams to agents: each is sent as a request and
//! answered by the agent (`ImageReply`), or fails when its deadline passes or the agent's
//! connection goes. The bytes themselves never stay here: a piece passes straight into the
//! agent's queue.

use super::Master;
use bramble_proto::messages::{ImageAck, ImagePiece, MasterToAgent};
use bramble_proto::AgentId;
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

impl Master {
    pub(super) fn image_to_agent(
        &mut self,
        agent: AgentId,
        piece: ImagePiece,
        timeout: Duration,
        reply: oneshot::Sender<Result<ImageAck, String>>,
        now: Instant,
    ) {
        if self.agents.get(&agent).is_none_or(|a| a.conn.is_none()) {
            let _ = reply.send(Err(format!("agent {agent} is not connected")));
            return;
        }
        self.next_request += 1;
        let request = self.next_request;
        self.image_requests
            .insert(request, agent.clone(), reply, now + timeout);
        self.send_agent(&agent, MasterToAgent::Image { request, piece });
    }

    pub(super) fn image_answer(
        &mut self,
        agent: &AgentId,
        request: u64,
        result: Result<ImageAck, String>,
    ) {
        if let Some(reply) = self.image_requests.answer(agent, request) {
            let _ = reply.send(result);
        }
    }

    pub(super) fn expire_image_requests(&mut self, now: Instant) {
        let agents = &self.agents;
        let connected = |id: &AgentId| agents.get(id).is_some_and(|a| a.conn.is_some());
        for ended in self.image_requests.take_unanswered(now, connected) {
            let why = if ended.timed_out {
                "did not answer in time"
            } else {
                "disconnected"
            };
            let _ = ended
                .reply
                .send(Err(format!("agent {} {why}", ended.agent)));
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::state::testing::*;
    use crate::state::Input;
    use bramble_proto::messages::{AgentToMaster, ImageAck, ImagePiece, MasterToAgent};
    use bramble_proto::AgentId;
    use std::time::{Duration, Instant};
    use tokio::sync::oneshot;

    fn piece() -> ImagePiece {
        ImagePiece::Chunk {
            transfer: 1,
            offset: 0,
            data: vec![7; 10],
        }
    }

    #[test]
    fn a_piece_goes_to_its_agent_and_its_answer_comes_back() {
        let now = Instant::now();
        let mut m = master(now);
        let mut agent = connect_agent(&mut m, 1, now);
        register(&mut m, 1, "a1", Vec::new(), now);
        settle(&mut m, now);
        drain(&mut agent);
        let (reply, mut rx) = oneshot::channel();
        let input = Input::ImageToAgent {
            agent: AgentId("a1".into()),
            piece: piece(),
            timeout: Duration::from_secs(5),
            reply,
        };
        m.handle(input, now);
        settle(&mut m, now);
        let sent = drain(&mut agent);
        let request = match sent.as_slice() {
            [MasterToAgent::Image { request, piece: p }] if *p == piece() => *request,
            other => panic!("expected the piece, got {other:?}"),
        };
        assert!(rx.try_recv().is_err(), "no answer before the agent's");
        let msg = AgentToMaster::ImageReply {
            request,
            result: Ok(ImageAck::Received { offset: 10 }),
        };
        m.handle(Input::FromAgent { conn: 1, msg }, now);
        assert_eq!(rx.try_recv(), Ok(Ok(ImageAck::Received { offset: 10 })));
    }

    #[test]
    fn a_piece_fails_when_its_agent_is_gone_or_silent() {
        let now = Instant::now();
        let mut m = master(now);
        let mut agent = connect_agent(&mut m, 1, now);
        register(&mut m, 1, "a1", Vec::new(), now);
        settle(&mut m, now);
        drain(&mut agent);
        // Shorter than the agent timeout (2 s): the agent is still there, only silent.
        let ask = |m: &mut crate::state::Master, to: &str| {
            let (reply, rx) = oneshot::channel();
            let input = Input::ImageToAgent {
                agent: AgentId(to.into()),
                piece: piece(),
                timeout: Duration::from_secs(1),
                reply,
            };
            m.handle(input, now);
            rx
        };
        let mut unknown = ask(&mut m, "nobody");
        assert!(matches!(unknown.try_recv(), Ok(Err(e)) if e.contains("not connected")));
        let mut silent = ask(&mut m, "a1");
        m.tick(now + Duration::from_millis(500));
        assert!(silent.try_recv().is_err(), "not before its deadline");
        m.tick(now + Duration::from_millis(1500));
        assert!(matches!(silent.try_recv(), Ok(Err(e)) if e.contains("did not answer")));
    }
}

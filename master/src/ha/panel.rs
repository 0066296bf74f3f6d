//! The front panel of a replicated master (`[ha]`): one display for the life of the process.
//! While this master leads and serves, the panel is the usual one (the cluster, the pi job),
//! drawn from the serving side's summaries and left in its [`PanelFeed`] for its operators'
//! `GetPanel`; while it stands by, the panel says "standby", the term it knows and names the
//! leader (its id and client address), or that an election is on.

use super::{HaMaster, HaStatus, Leading};
use crate::display::{self, DisplayHandle, PanelFeed};
use bramble_firmware::board::BoardFacts;
use bramble_firmware::{DisplayConfig, PanelState};
use std::path::Path;
use std::time::Duration;
use tokio::sync::watch;

/// How often the picture is recomposed when nothing changes (the board's temperature).
const REFRESH: Duration = Duration::from_secs(1);

/// What the panel shows for this status: the leader's id and address, short.
pub fn standby_picture(name: &str, status: &HaStatus, temperature_c: Option<f32>) -> PanelState {
    let leader = status.leader.as_ref().map(|l| {
        // The host part only: the panel is 21 characters wide.
        let host = l
            .address
            .rsplit_once(':')
            .map_or(l.address.as_str(), |(h, _)| h)
            .trim_matches(['[', ']']);
        format!("{} {host}", l.id)
    });
    display::standby_state(name, status.term, leader, temperature_c)
}

/// Starts the panel for `master` (see the module header); stop it with
/// [`DisplayHandle::stop`].
pub fn start(master: &HaMaster, config: DisplayConfig, name: String) -> DisplayHandle {
    let standby_feed = PanelFeed::default();
    let status = master.status();
    let leading = master.leading();
    let first = standby_picture(&name, &status.borrow(), None);
    let (states, states_rx) = watch::channel(first);
    let (target, target_rx) = watch::channel(standby_feed.clone());
    let sampler = tokio::spawn(sample(name, status, leading, states, target, standby_feed));
    display::start_from(states_rx, target_rx, config, sampler)
}

async fn sample(
    name: String,
    mut status: watch::Receiver<HaStatus>,
    mut leading: watch::Receiver<Option<Leading>>,
    states: watch::Sender<PanelState>,
    target: watch::Sender<PanelFeed>,
    standby_feed: PanelFeed,
) {
    let mut tick = tokio::time::interval(REFRESH);
    let mut summaries = None;
    loop {
        let now = leading.borrow_and_update().clone();
        let serving = status.borrow_and_update().serving;
        let temp = BoardFacts::read(Path::new("/")).temperature_c;
        match now.filter(|_| serving) {
            Some(l) => {
                let rx = summaries.get_or_insert_with(|| l.feed.watch_summary());
                let summary = rx.borrow_and_update().clone();
                target.send_replace(l.panel.clone());
                states.send_replace(display::panel_state(&name, &summary, temp));
            }
            None => {
                summaries = None;
                target.send_replace(standby_feed.clone());
                states.send_replace(standby_picture(&name, &status.borrow(), temp));
            }
        }
        let changed_summary = async {
            match summaries.as_mut() {
                Some(rx) => {
                    if rx.changed().await.is_err() {
                        std::future::pending::<()>().await
                    }
                }
                None => std::future::pending::<()>().await,
            }
        };
        tokio::select! {
            r = status.changed() => if r.is_err() { return },
            r = leading.changed() => if r.is_err() { return },
            _ = changed_summary => {}
            _ = tick.tick() => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bramble_firmware::{compose, Phase, Screen};
    use bramble_proto::messages::LeaderHint;
    use bramble_replica::Role;

    fn status(leader: Option<LeaderHint>) -> HaStatus {
        HaStatus {
            id: 3,
            role: Role::Follower,
            term: 7,
            leader,
            serving: false,
            masters: Vec::new(),
        }
    }

    #[test]
    fn a_standby_says_so_with_its_term_and_names_the_leader() {
        let s = standby_picture(
            "shelf",
            &status(Some(LeaderHint {
                id: 2,
                address: "10.0.0.12:5051".into(),
                http: None,
                term: 7,
            })),
            None,
        );
        assert_eq!(
            s.phase,
            Phase::Standby {
                term: 7,
                leader: Some("2 10.0.0.12".into())
            }
        );
        assert_eq!(bramble_firmware::select_screens(&s), vec![Screen::Standby]);
        let _ = compose;
        let election = standby_picture("shelf", &status(None), None);
        assert_eq!(
            election.phase,
            Phase::Standby {
                term: 7,
                leader: None
            }
        );
    }
}

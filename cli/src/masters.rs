//! A replicated group's masters as `bramble masters` and `bramble status` print them (from the
//! leader's `MastersView`), and `ID=HOST:PORT` as `bramble masters add` takes it.

use crate::table::Table;
use bramble_proto::messages::{MasterMember, MastersView};
use std::fmt::Write as _;

/// `bramble masters`: the leader and term, then one row per member.
pub fn masters_table(view: &MastersView) -> String {
    let mut out = format!(
        "leader {} (term {}), {} voting, log at {}\n",
        view.leader,
        view.term,
        view.masters.iter().filter(|m| m.voter).count(),
        index(view.last_log)
    );
    let mut t = Table::new(&[
        "ID",
        "ROLE",
        "TERM",
        "ADDRESS",
        "HTTP",
        "REPLICATION",
        "LOG",
    ])
    .right(0)
    .right(2);
    for m in &view.masters {
        t.row(vec![
            m.id.to_string(),
            m.role.clone(),
            view.term.to_string(),
            m.address.clone().unwrap_or_else(|| "-".into()),
            m.http.clone().unwrap_or_else(|| "-".into()),
            m.replication.clone(),
            progress(m, view.last_log),
        ]);
    }
    out.push_str(&t.render());
    out
}

/// The lines `bramble status` adds for a replicated group: every master, its role and term,
/// which one leads.
pub fn status_lines(view: &MastersView) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "masters   {} ({} voting), leader {} in term {}",
        view.masters.len(),
        view.masters.iter().filter(|m| m.voter).count(),
        view.leader,
        view.term
    );
    for m in &view.masters {
        let at = m.address.as_deref().unwrap_or(&m.replication);
        let mark = if m.id == view.leader { " *" } else { "" };
        let _ = writeln!(
            out,
            "  master {:<3} {:<9} term {}  {at}{mark}",
            m.id, m.role, view.term
        );
    }
    out
}

fn index(i: Option<u64>) -> String {
    i.map_or_else(|| "-".into(), |i| i.to_string())
}

/// How far a member's log is: `up to date`, or `N behind`, or unknown.
fn progress(m: &MasterMember, last: Option<u64>) -> String {
    match (m.matched, last) {
        (Some(have), Some(last)) if have >= last => "up to date".into(),
        (Some(have), Some(last)) => format!("{} behind", last - have),
        (None, Some(_)) => "nothing yet".into(),
        _ => "-".into(),
    }
}

/// `ID=HOST:PORT` (a master's `[ha] id` and its replication address).
pub fn parse_member(s: &str) -> Result<(u64, String), String> {
    let (id, addr) = s.split_once('=').ok_or_else(|| {
        format!("{s:?}: expected ID=HOST:PORT (the new master's [ha] id and replication address)")
    })?;
    let id: u64 = id
        .trim()
        .parse()
        .ok()
        .filter(|&id| id > 0)
        .ok_or_else(|| format!("{id:?}: a master's id is a positive whole number"))?;
    let addr = addr.trim();
    match addr.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0) => {
            Ok((id, addr.to_string()))
        }
        _ => Err(format!(
            "{addr:?}: expected HOST:PORT (the replication address)"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view() -> MastersView {
        let member = |id: u64, role: &str, voter: bool, matched: Option<u64>| MasterMember {
            id,
            replication: format!("10.0.0.{id}:7000"),
            address: (id != 4).then(|| format!("10.0.0.{id}:5050")),
            http: (id != 4).then(|| format!("10.0.0.{id}:5051")),
            role: role.into(),
            voter,
            matched,
        };
        MastersView {
            leader: 2,
            term: 7,
            last_log: Some(120),
            masters: vec![
                member(1, "follower", true, Some(120)),
                member(2, "leader", true, Some(120)),
                member(3, "follower", true, Some(100)),
                member(4, "learner", false, None),
            ],
        }
    }

    #[test]
    fn masters_table_shows_each_member() {
        insta::assert_snapshot!(masters_table(&view()));
    }

    #[test]
    fn status_names_the_leader() {
        insta::assert_snapshot!(status_lines(&view()));
    }

    #[test]
    fn members_parse_and_are_checked() {
        assert_eq!(
            parse_member("4=10.0.0.4:7000"),
            Ok((4, "10.0.0.4:7000".to_string()))
        );
        assert_eq!(
            parse_member("4=pi-4.local:7000"),
            Ok((4, "pi-4.local:7000".to_string()))
        );
        assert_eq!(
            parse_member("4=[::1]:7000"),
            Ok((4, "[::1]:7000".to_string()))
        );
        for bad in [
            "4",
            "0=h:1",
            "x=h:1",
            "4=h",
            "4=:7000",
            "4=h:0",
            "4=h:99999",
        ] {
            assert!(parse_member(bad).is_err(), "{bad} was accepted");
        }
    }
}

//! Task ids of jobs that run each piece of work possibly more than once:
//! `<job>-<position>-<attempt>`. The scheduler tells a current attempt's update from a stale
//! one by the attempt number, and finds the piece of work again from the id alone (after a
//! restart, or in an update for a task it no longer tracks).

use bramble_sdk::TaskId;

/// The id of attempt `attempt` at position `position` of `job`.
pub fn task_id(job: &str, position: usize, attempt: u32) -> TaskId {
    format!("{job}-{position}-{attempt}").into()
}

/// `(position, attempt)` from an id made by [`task_id`] for `job`; `None` for any other id.
pub fn parse(job: &str, id: &str) -> Option<(usize, u32)> {
    let rest = id.strip_prefix(job)?.strip_prefix('-')?;
    let (position, attempt) = rest.split_once('-')?;
    Some((position.parse().ok()?, attempt.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip_and_other_jobs_ids_are_not_ours() {
        assert_eq!(task_id("pi", 12, 3).as_str(), "pi-12-3");
        assert_eq!(parse("pi", "pi-12-3"), Some((12, 3)));
        assert_eq!(parse("pi", "pi-x-3"), None);
        assert_eq!(parse("pi", "pi-1"), None);
        assert_eq!(parse("pi", "pie-1-1"), None);
        assert_eq!(parse("factorial", "pi-1-1"), None);
    }
}

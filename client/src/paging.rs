//! The whole cluster state, fetched in pages (`OperatorCall::GetStatePage`): at thousands of
//! agents one `ClusterState` is over a frame's limit and a long pause for the master, while a
//! page of [`crate::operator::STATE_PAGE`] items is neither. Pages are taken one after another,
//! so what comes back is not one instant's picture: an agent or task that stays is listed once,
//! one that comes or goes meanwhile may or may not be.

use crate::error::ClientError;
use crate::operator::OperatorClient;
use bramble_proto::messages::ClusterState;

/// Every page of the state, `limit` items at a time, put together.
pub(crate) async fn whole_state(
    op: &mut OperatorClient,
    limit: u32,
) -> Result<ClusterState, ClientError> {
    let first = op.state_page(None, limit).await?;
    let Some(mut state) = first.head.clone() else {
        return Err(ClientError::Unexpected(
            "the first page of the state came without its head".into(),
        ));
    };
    let mut next = first.next.clone();
    first.append_to(&mut state);
    while let Some(after) = next {
        let page = op.state_page(Some(after.clone()), limit).await?;
        let empty = page.agents.is_empty() && page.tasks.is_empty() && page.offers.is_empty();
        // A page that lists nothing and points where it started would be asked forever.
        if empty && page.next.as_ref() == Some(&after) {
            return Err(ClientError::Unexpected(format!(
                "the master's state pages do not advance past {after:?}"
            )));
        }
        next = page.next.clone();
        page.append_to(&mut state);
    }
    // Pages list agents by id; operators read them by hostname, as the one-reply state did.
    state
        .agents
        .sort_by(|a, b| a.hostname.cmp(&b.hostname).then(a.id.cmp(&b.id)));
    state.offers_outstanding = state.offers.len() as u64;
    Ok(state)
}

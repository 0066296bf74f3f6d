//! The cluster's state in pages through the operator client (issue 17): what `bramble
//! status|agents` and `OperatorClient::state` read on a real master over QUIC. The pages put
//! together are the one-reply state, item for item; the counts agree with both.

use bramble_client::OperatorClient;
use bramble_proto::messages::{ClusterState, OperatorCall, OperatorReply};
use bramble_proto::{Resources, TaskState};
use bramble_tests::framework::shell_task;
use bramble_tests::InProcessCluster;

fn agent_ids(s: &ClusterState) -> Vec<String> {
    s.agents.iter().map(|a| a.id.to_string()).collect()
}

fn task_ids(s: &ClusterState) -> Vec<String> {
    s.tasks.iter().map(|t| t.id.to_string()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_pages_the_state_and_gets_what_one_reply_holds() {
    let names = ["pa", "pb", "pc", "pd", "pe"];
    let c = InProcessCluster::start(|_| {}, &names, Resources::new(4.0, 1024), false).await;
    let mut fw = c.framework("pager").await;
    let offer = fw.first_offer().await;
    let tasks: Vec<_> = (0..3)
        .map(|i| shell_task(&offer, &format!("t{i}"), 0.5, 32, "sleep 600"))
        .collect();
    fw.launch(&offer, tasks);
    for i in 0..3 {
        fw.state(&format!("t{i}"), TaskState::Running).await;
    }

    let mut op = OperatorClient::connect(&c.cluster.cluster_dir(), c.master.addr)
        .await
        .expect("operator connection");

    // A page of nothing: the counts and the head, the summary `bramble status` prints.
    let first = op.state_page(None, 0).await.expect("first page");
    assert_eq!((first.counts.agents, first.counts.agents_connected), (5, 5));
    assert_eq!(
        first.counts.tasks_by_state.get(&TaskState::Running),
        Some(&3)
    );
    assert_eq!(first.counts.frameworks, 1);
    assert_eq!(first.counts.total, Resources::new(20.0, 5 * 1024));
    assert!(first.agents.is_empty() && first.tasks.is_empty());
    let head = first.head.expect("the first page carries the head");
    assert_eq!(head.frameworks.len(), 1);

    // Two items a page: several pages, each agent and task once, in key order.
    let mut after = first.next;
    let (mut pages, mut agents, mut tasks) = (0, Vec::new(), Vec::new());
    while let Some(cursor) = after {
        let page = op.state_page(Some(cursor), 2).await.expect("a page");
        assert!(page.head.is_none());
        assert!(page.agents.len() + page.tasks.len() + page.offers.len() <= 2);
        agents.extend(page.agents.iter().map(|a| a.id.to_string()));
        tasks.extend(page.tasks.iter().map(|t| t.id.to_string()));
        after = page.next;
        pages += 1;
        assert!(pages < 100, "the pages do not end");
    }
    assert!(
        pages >= 4,
        "5 agents and 3 tasks, two a page: {pages} pages"
    );
    let mut sorted = agents.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(agents, sorted, "agents listed once each, by id");
    assert_eq!(agents.len(), 5);
    assert_eq!(tasks, ["t0", "t1", "t2"]);

    // The client's whole state, one item a page or a thousand, is the one-reply state.
    let one_reply = match op.call(OperatorCall::GetState).await.expect("GetState") {
        OperatorReply::State(s) => s,
        other => panic!("GetState answered {other:?}"),
    };
    for limit in [1, 1000] {
        let paged = op.state_in_pages(limit).await.expect("paged state");
        assert_eq!(agent_ids(&paged), agent_ids(&one_reply), "limit {limit}");
        let hostnames: Vec<&str> = paged.agents.iter().map(|a| a.hostname.as_str()).collect();
        assert_eq!(hostnames, names, "sorted by hostname, as the one reply is");
        assert_eq!(task_ids(&paged), task_ids(&one_reply), "limit {limit}");
        let fws = |s: &ClusterState| {
            s.frameworks
                .iter()
                .map(|f| f.id.clone())
                .collect::<Vec<_>>()
        };
        assert_eq!(fws(&paged), fws(&one_reply), "limit {limit}");
        assert_eq!(paged.cluster_id, one_reply.cluster_id);
    }
    op.close();
    fw.stop(false).await;
    c.shutdown().await;
}

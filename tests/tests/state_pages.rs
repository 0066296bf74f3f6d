//! The cluster's state in pages through the operator client (issue 17): what `bramble
//! status|agents` and `OperatorClient::state` read on a real master over QUIC. The pages put
//! together are the one-reply state, item for item; the counts agree with both.

use bramble_client::OperatorClient;
use bramble_proto::messages::{ClusterState, OperatorCall, OperatorReply};
use bramble_proto::{Resources, TaskState};
use bramble_tests::framework::shell_task;
use bramble_tests::InProcessCluster;
use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use serde_json::Value;
use std::net::SocketAddr;
use std::time::Duration;

/// `GET path` on the master's HTTP port: the status and the body as JSON.
async fn get(addr: SocketAddr, path: &str) -> (u16, Value) {
    let stream = tokio::net::TcpStream::connect(addr)
        .await
        .expect("connect to the master's HTTP port");
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .expect("HTTP handshake");
    tokio::spawn(conn);
    let req = hyper::Request::get(path)
        .header("host", addr.to_string())
        .body(Empty::<Bytes>::new())
        .expect("request");
    let res = sender.send_request(req).await.expect("HTTP request");
    let status = res.status().as_u16();
    let body = tokio::time::timeout(Duration::from_secs(30), res.into_body().collect())
        .await
        .expect("body within 30 s")
        .expect("body")
        .to_bytes();
    let json = serde_json::from_slice(&body)
        .unwrap_or_else(|e| panic!("{path}: not JSON ({e}): {}", String::from_utf8_lossy(&body)));
    (status, json)
}

/// Every item of a paged HTTP list (`list` is `agents` or `tasks`), `limit` a page: each
/// item's `id`, and how many pages it took. `filter` goes first in the query (`state=…&`).
async fn walk_http(addr: SocketAddr, list: &str, filter: &str, limit: u32) -> (Vec<String>, usize) {
    let (mut ids, mut pages, mut after) = (Vec::new(), 0, None::<String>);
    loop {
        let path = match &after {
            Some(a) => format!("/api/v1/{list}?{filter}limit={limit}&after={a}"),
            None => format!("/api/v1/{list}?{filter}limit={limit}"),
        };
        let (status, page) = get(addr, &path).await;
        assert_eq!(status, 200, "{path}: {page}");
        let items = page[list].as_array().expect("a list").clone();
        assert!(items.len() <= limit as usize, "{path}: {page}");
        ids.extend(
            items
                .iter()
                .map(|i| i["id"].as_str().expect("id").to_string()),
        );
        pages += 1;
        assert!(pages < 100, "the pages do not end");
        match page["next"].as_str() {
            Some(next) => after = Some(next.to_string()),
            None => return (ids, pages),
        }
    }
}

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

    // The same pages over HTTP.
    let http = c.master.http_addr.expect("the master serves HTTP");
    let (status, summary) = get(http, "/api/v1/summary").await;
    assert_eq!(status, 200, "{summary}");
    assert_eq!(summary["counts"]["agents"], 5, "{summary}");
    assert_eq!(
        summary["counts"]["tasks_by_state"]["Running"], 3,
        "{summary}"
    );
    assert_eq!(summary["frameworks"].as_array().map(Vec::len), Some(1));
    let (agents, pages) = walk_http(http, "agents", "", 2).await;
    assert_eq!(pages, 3, "5 agents, 2 a page");
    let mut by_id = agent_ids(&one_reply);
    by_id.sort();
    assert_eq!(agents, by_id);
    let (tasks, _) = walk_http(http, "tasks", "", 2).await;
    assert_eq!(tasks, ["t0", "t1", "t2"]);
    let (status, total) = get(http, "/api/v1/tasks?limit=1").await;
    assert_eq!((status, &total["total"]), (200, &Value::from(3)), "{total}");
    for bad in [
        "/api/v1/agents?limit=zero",
        "/api/v1/agents?limit=0",
        "/api/v1/agents?after=..",
        "/api/v1/tasks?after=no-framework",
        "/api/v1/tasks?page=2",
    ] {
        let (status, body) = get(http, bad).await;
        assert_eq!(status, 400, "{bad}: {body}");
        assert!(
            body["error"].as_str().is_some_and(|e| !e.is_empty()),
            "{bad}: {body}"
        );
    }

    fw.stop(false).await;
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tasks_are_listed_by_state_live_and_completed_a_page_at_a_time() {
    let c = InProcessCluster::start(|_| {}, &["pz"], Resources::new(4.0, 1024), false).await;
    let mut fw = c.framework("by-state").await;
    let offer = fw.first_offer().await;
    let mut tasks: Vec<_> = (0..5)
        .map(|i| shell_task(&offer, &format!("done{i}"), 0.1, 16, "true"))
        .collect();
    tasks.push(shell_task(&offer, "runner", 0.1, 16, "sleep 600"));
    fw.launch(&offer, tasks);
    for i in 0..5 {
        let end = fw.terminal(&format!("done{i}")).await;
        assert_eq!(end.state, TaskState::Finished, "{end:?}");
    }
    fw.state("runner", TaskState::Running).await;

    let http = c.master.http_addr.expect("the master serves HTTP");
    // Acknowledged, the finished ones leave the live tasks for the completed list.
    let state = bramble_tests::eventually(
        "five completed tasks counted in /api/v1/state",
        Duration::from_secs(20),
        || async {
            let (_, s) = get(http, "/api/v1/state").await;
            (s["completed_tasks_count"] == 5).then_some(s)
        },
    )
    .await;
    assert!(state.get("completed_tasks").is_none(), "{state}");
    assert_eq!(
        state["completed_tasks_url"],
        "/api/v1/tasks?state=completed"
    );
    let live: Vec<&str> = state["tasks"]
        .as_array()
        .expect("tasks")
        .iter()
        .filter_map(|t| t["id"].as_str())
        .collect();
    assert_eq!(live, ["runner"], "{state}");

    // Finished tasks, two a page: each once (in the order they were forgotten), over three
    // pages.
    let sorted = |mut ids: Vec<String>| {
        ids.sort();
        ids
    };
    for filter in ["finished", "TASK_FINISHED", "Finished"] {
        let (ids, pages) = walk_http(http, "tasks", &format!("state={filter}&"), 2).await;
        assert_eq!(
            sorted(ids),
            ["done0", "done1", "done2", "done3", "done4"],
            "{filter}"
        );
        assert_eq!(pages, 3, "{filter}");
    }
    let (ids, _) = walk_http(http, "tasks", "state=TASK_RUNNING&", 2).await;
    assert_eq!(ids, ["runner"]);
    // A comma list: the live one first, then the completed ones.
    let (mut ids, pages) = walk_http(http, "tasks", "state=running,completed&", 4).await;
    assert_eq!(ids.first().map(String::as_str), Some("runner"), "{ids:?}");
    ids.remove(0);
    assert_eq!(sorted(ids), ["done0", "done1", "done2", "done3", "done4"]);
    assert_eq!(pages, 2);
    let (status, page) = get(http, "/api/v1/tasks?state=completed&limit=1").await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(page["total"], 5, "{page}");
    assert_eq!(page["tasks"][0]["state"], "Finished", "{page}");
    assert!(page["next"]
        .as_str()
        .is_some_and(|n| n.starts_with("completed:")));
    let (_, page) = get(http, "/api/v1/tasks?state=killed").await;
    assert_eq!(
        (&page["total"], &page["next"]),
        (&Value::from(0), &Value::Null)
    );

    for bad in [
        "/api/v1/tasks?state=sleeping",
        "/api/v1/tasks?state=finished,nope",
        "/api/v1/tasks?state=",
        "/api/v1/tasks?state=finished&after=completed:x",
    ] {
        let (status, body) = get(http, bad).await;
        assert_eq!(status, 400, "{bad}: {body}");
        let said = body["error"].as_str().unwrap_or_default();
        assert!(
            said.contains("unknown state") || said.contains("is not a task"),
            "{bad}: {body}"
        );
    }
    let (_, body) = get(http, "/api/v1/tasks?state=sleeping").await;
    let said = body["error"].as_str().unwrap_or_default();
    assert!(
        said.contains("\"sleeping\"") && said.contains("finished") && said.contains("completed"),
        "names the word and the states there are: {said}"
    );

    fw.stop(false).await;
    c.shutdown().await;
}

//! The replicated store on a real one-node replica: large rows, orphaned pieces, the term fence.
use super::*;
use crate::store::{AgentRecord, FrameworkRecord, TaskRecord};
use bramble_proto::identity::{init_cluster, Credentials, Role as CertRole};
use bramble_proto::task::{CommandInfo, TaskInfo, UpdateSource};
use bramble_proto::{AgentId, FrameworkId, Resources, TaskId, TaskState, TaskStatus};
use bramble_replica::{ReplicaConfig, Role, Tuning};
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

const CLUSTER: &str = "cluster-a";

/// A group of one on loopback, leading; `dir` keeps its store across starts.
async fn one_node(dir: &Path, listen: SocketAddr) -> Replica {
    let cluster = dir.join("cluster");
    if !cluster.exists() {
        init_cluster(&cluster, "replicated-store").expect("cluster");
    }
    let creds = Credentials::load(&cluster, CertRole::Node).expect("node credentials");
    let config = ReplicaConfig {
        id: 1,
        peers: BTreeMap::from([(1, listen)]),
        bootstrap: true,
        tuning: Tuning::default(),
    };
    let replica = Replica::start(config, &dir.join("replica"), &creds)
        .await
        .expect("replica");
    let deadline = Instant::now() + Duration::from_secs(30);
    while replica.role() != Role::Leader {
        assert!(Instant::now() < deadline, "the single node never led");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    replica
}

fn free_udp() -> SocketAddr {
    let s = std::net::UdpSocket::bind("127.0.0.1:0").expect("udp port");
    s.local_addr().expect("addr")
}

/// A task whose record is about `data` bytes (its TaskInfo data) plus `update` bytes (its
/// terminal update's data), the bytes varied so misplaced pieces show.
fn task(id: &str, data: usize, update: usize) -> TaskRecord {
    let fw = FrameworkId("fw/1".into());
    let bytes = |n: usize, seed: usize| (0..n).map(|i| ((i * 7 + seed) % 251) as u8).collect();
    let mut terminal = TaskStatus::new(
        fw.clone(),
        TaskId(id.into()),
        TaskState::Finished,
        UpdateSource::Executor,
    );
    terminal.data = bytes(update, 3);
    TaskRecord {
        framework_id: fw,
        info: TaskInfo {
            task_id: TaskId(id.into()),
            name: id.into(),
            agent_id: AgentId("a1".into()),
            resources: Resources::new(0.5, 64),
            command: Some(CommandInfo::shell("true")),
            executor: None,
            data: bytes(data, 1),
            mesos: None,
            image: None,
            artifacts: Vec::new(),
        },
        state: TaskState::Finished,
        message: String::new(),
        reason: None,
        launched_at: 1.0,
        started_at: Some(2.0),
        ended_at: Some(3.0),
        terminal: Some(terminal),
        resend_by_master: false,
    }
}

fn write(r: &TaskRecord) -> Batch {
    Batch {
        tasks: vec![(
            (r.framework_id.clone(), r.info.task_id.clone()),
            Some(r.clone()),
        )],
        ..Batch::default()
    }
}

fn remove(r: &TaskRecord) -> Batch {
    Batch {
        tasks: vec![((r.framework_id.clone(), r.info.task_id.clone()), None)],
        ..Batch::default()
    }
}

/// How many pieces and manifests the map holds.
async fn chunk_rows(replica: &Replica) -> (usize, usize) {
    let pieces = replica.list_local(CHUNKS, "").await.expect("list");
    let manifests = replica.list_local(CHUNKED, "").await.expect("list");
    (pieces.len(), manifests.len())
}

/// A master's store is fenced to the term it was opened in: a store of an ended term (a
/// master deposed, perhaps elected again since) commits nothing. The replica's own test
/// (`replica/tests/cluster.rs`) goes through real elections; here the store is opened with
/// the term before the current one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_of_an_ended_term_writes_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let replica = one_node(dir.path(), free_udp()).await;
    let now = replica.term();
    let (store, _) = Replicated::open(replica.clone(), CLUSTER, now)
        .await
        .expect("open");
    let before = task("before", 10, 10);
    store
        .commit(&write(&before))
        .await
        .expect("a commit in the term");

    let (stale, recovered) = Replicated::open(replica.clone(), CLUSTER, now - 1)
        .await
        .expect("opening reads only");
    assert_eq!(recovered.tasks, vec![before.clone()]);
    let refused = stale.commit(&write(&task("after", 10, 10))).await;
    assert!(
        matches!(
            refused,
            Err(ReplicatedError::Replica {
                source: ReplicaError::Fenced { .. },
                ..
            })
        ),
        "{refused:?}"
    );
    assert_eq!(store.load().await.expect("load").tasks, vec![before]);
    replica.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_row_round_trips_is_overwritten_deleted_and_loaded_after_a_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let listen = free_udp();
    let replica = one_node(dir.path(), listen).await;
    let (store, recovered) = Replicated::open(replica.clone(), CLUSTER, replica.term())
        .await
        .expect("open");
    assert!(recovered.is_empty());

    // 1 MiB of task data plus 300 KiB of update data: over a value and an entry.
    let big = task("t1", 1 << 20, 300 * 1024);
    let small = task("t2", 10, 10);
    let mut batch = write(&big);
    batch.tasks.extend(write(&small).tasks);
    store.commit(&batch).await.expect("commit a large row");
    assert_eq!(
        store.load().await.expect("load").tasks,
        vec![big.clone(), small.clone()]
    );
    let len = encode(&big).len();
    assert_eq!(chunk_rows(&replica).await, (len.div_ceil(CHUNK_BYTES), 1));
    // Only the manifest is under the row's table's name, not in the table.
    assert_eq!(replica.list_local(TASKS, "").await.expect("list").len(), 1);

    // Overwritten by a larger one: the old pieces go.
    let bigger = task("t1", 1 << 20, 600 * 1024);
    store.commit(&write(&bigger)).await.expect("commit");
    let len = encode(&bigger).len();
    assert_eq!(chunk_rows(&replica).await, (len.div_ceil(CHUNK_BYTES), 1));
    assert_eq!(
        store.load().await.expect("load").tasks,
        vec![bigger.clone(), small.clone()]
    );

    // Overwritten by a small one: no piece or manifest is left.
    let shrunk = task("t1", 100, 100);
    store.commit(&write(&shrunk)).await.expect("commit");
    assert_eq!(chunk_rows(&replica).await, (0, 0));
    assert_eq!(
        store.load().await.expect("load").tasks,
        vec![shrunk.clone(), small.clone()]
    );

    // Large again, then deleted: nothing is left.
    store.commit(&write(&big)).await.expect("commit");
    store.commit(&remove(&big)).await.expect("commit");
    assert_eq!(chunk_rows(&replica).await, (0, 0));
    assert_eq!(store.load().await.expect("load").tasks, vec![small.clone()]);

    // Large once more, then the node restarts: the next leader loads it whole.
    store.commit(&write(&bigger)).await.expect("commit");
    drop(store);
    replica.shutdown().await.expect("shutdown");
    drop(replica);
    let replica = one_node(dir.path(), listen).await;
    let (store, recovered) = Replicated::open(replica.clone(), CLUSTER, replica.term())
        .await
        .expect("reopen");
    assert_eq!(recovered.tasks, vec![bigger.clone(), small.clone()]);
    // And keeps it: deleting it after the restart removes its pieces.
    store.commit(&remove(&bigger)).await.expect("commit");
    assert_eq!(chunk_rows(&replica).await, (0, 0));
    replica.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pieces_of_a_write_a_leader_never_finished_are_deleted_and_never_loaded() {
    let dir = tempfile::tempdir().expect("tempdir");
    let replica = one_node(dir.path(), free_udp()).await;
    let (store, _) = Replicated::open(replica.clone(), CLUSTER, replica.term())
        .await
        .expect("open");
    let old = task("t1", 1 << 20, 0);
    store.commit(&write(&old)).await.expect("commit");
    // A leader that died after writing a newer version's pieces, before its manifest:
    // every entry but the last one(s), which hold the manifest.
    let newer = task("t1", 900 * 1024, 0);
    let mut after = store.chunking().clone();
    let entries = entries(&write(&newer), &mut after);
    let unfinished: Vec<Command> = entries
        .into_iter()
        .filter(|e| {
            let Command::Batch(cmds) = e else {
                return true;
            };
            cmds.iter()
                .all(|c| matches!(c, Command::Put { table, .. } if table == CHUNKS))
        })
        .collect();
    assert!(!unfinished.is_empty());
    for e in unfinished {
        replica.write_as_leader(e).await.expect("write pieces");
    }
    let (pieces_before, _) = chunk_rows(&replica).await;
    drop(store);
    let (store, recovered) = Replicated::open(replica.clone(), CLUSTER, replica.term())
        .await
        .expect("reopen");
    // The previous value, whole; the unfinished pieces gone.
    assert_eq!(recovered.tasks, vec![old.clone()]);
    let len = encode(&old).len();
    assert!(pieces_before > len.div_ceil(CHUNK_BYTES));
    assert_eq!(chunk_rows(&replica).await, (len.div_ceil(CHUNK_BYTES), 1));
    // A new generation never reuses an unfinished one's keys.
    store.commit(&write(&newer)).await.expect("commit");
    assert_eq!(store.load().await.expect("load").tasks, vec![newer]);
    replica.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kills_round_trip_under_escaped_keys() {
    let dir = tempfile::tempdir().expect("tempdir");
    let replica = one_node(dir.path(), free_udp()).await;
    let (store, recovered) = Replicated::open(replica.clone(), CLUSTER, replica.term())
        .await
        .expect("open");
    // A group written before kills were kept has none.
    assert!(recovered.kills.is_empty());
    let k1 = (FrameworkId("fw/1".into()), TaskId("t/1".into()));
    let k2 = (FrameworkId("fw".into()), TaskId("1/t/1".into()));
    store
        .commit(&Batch {
            kills: vec![(k1.clone(), true), (k2.clone(), true)],
            ..Batch::default()
        })
        .await
        .expect("commit");
    let mut kills = store.load().await.expect("load").kills;
    kills.sort();
    assert_eq!(kills, vec![k2.clone(), k1.clone()]);
    store
        .commit(&Batch {
            kills: vec![(k1, false)],
            ..Batch::default()
        })
        .await
        .expect("commit");
    assert_eq!(store.load().await.expect("load").kills, vec![k2]);
    replica.shutdown().await.expect("shutdown");
}

#[test]
fn piece_keys_parse_from_the_right_whatever_the_row_key_holds() {
    let head = format!(
        "{TASKS}/{}/{}",
        escape("fw/1"),
        "a/0000000000000001/00000002"
    );
    let key = chunk_key(&head, 5, 7);
    assert_eq!(parse_chunk_key(&key), Some((head.as_str(), 5, 7)));
    assert_eq!(parse_chunk_key("tasks/x/5/7"), None);
    assert_eq!(parse_chunk_key("nonsense"), None);
}

#[test]
fn a_small_batch_stays_one_entry_and_a_large_row_comes_after_its_pieces() {
    let mut chunking = Chunking::default();
    let small = task("s", 10, 10);
    let e = entries(&write(&small), &mut chunking);
    assert_eq!(e.len(), 1);
    let big = task("b", 1 << 20, 0);
    let mut batch = write(&small);
    batch.tasks.extend(write(&big).tasks);
    let e = entries(&batch, &mut chunking);
    assert!(e.len() > 1);
    for entry in &e {
        assert!(entry.validate().is_ok());
        let bytes = postcard::to_allocvec(entry).expect("encode");
        assert!(bytes.len() <= MAX_COMMAND_BYTES, "{}", bytes.len());
    }
    // The manifest comes after every piece, in the last entry.
    let commands: Vec<&Command> = e
        .iter()
        .flat_map(|entry| match entry {
            Command::Batch(cmds) => cmds.iter().collect(),
            other => vec![other],
        })
        .collect();
    let is_put = |c: &Command, t: &str| matches!(c, Command::Put { table, .. } if table == t);
    let manifest = commands
        .iter()
        .position(|c| is_put(c, CHUNKED))
        .expect("a manifest");
    let last_piece = commands
        .iter()
        .rposition(|c| is_put(c, CHUNKS))
        .expect("pieces");
    assert!(last_piece < manifest);
    let Some(Command::Batch(last)) = e.last() else {
        panic!("{e:?}")
    };
    assert!(last.iter().any(|c| is_put(c, CHUNKED)));
    assert_eq!(chunking.chunked.len(), 1);
}

#[test]
fn framework_ids_with_slashes_make_distinct_keys() {
    let a = format!("{}/{}", escape("a/b"), "c");
    let b = format!("{}/{}", escape("a"), "b/c");
    assert_ne!(a, b);
    assert_eq!(split_key(&a), Some(("a/b".to_string(), "c")));
    assert_eq!(split_key(&b), Some(("a".to_string(), "b/c")));
    let odd = format!("{}/k", escape("50%2F"));
    assert_eq!(split_key(&odd), Some(("50%2F".to_string(), "k")));
}

#[test]
fn a_batch_becomes_one_entry_and_a_huge_one_several_in_order() {
    let agent = |i: usize| AgentRecord {
        id: AgentId(format!("a{i}")),
        hostname: "x".repeat(1000),
        address: "127.0.0.1:1".parse().expect("addr"),
        total: Resources::new(1.0, 1),
        attributes: Default::default(),
        executors: Vec::new(),
    };
    let small = Batch {
        agents: vec![(AgentId("a1".into()), Some(agent(1)))],
        fences: vec![(FrameworkId("fw".into()), Some(3))],
        fence_high: Some(3),
        ..Batch::default()
    };
    let e = entries(&small, &mut Chunking::default());
    assert_eq!(e.len(), 1);
    let Command::Batch(cmds) = &e[0] else {
        panic!("{e:?}")
    };
    assert_eq!(cmds.len(), 3);
    let big = Batch {
        agents: (0..2000)
            .map(|i| (AgentId(format!("a{i}")), Some(agent(i))))
            .collect(),
        frameworks: vec![(FrameworkId("fw".into()), None::<FrameworkRecord>)],
        ..Batch::default()
    };
    let e = entries(&big, &mut Chunking::default());
    assert!(e.len() > 1, "{}", e.len());
    let mut n = 0;
    for entry in &e {
        let bytes = postcard::to_allocvec(entry).expect("encode");
        assert!(bytes.len() <= MAX_COMMAND_BYTES, "{}", bytes.len());
        let Command::Batch(cmds) = entry else {
            panic!("not a batch")
        };
        assert!(entry.validate().is_ok());
        n += cmds.len();
    }
    assert_eq!(n, 2001);
}

//! Launching: a framework accepts offers with tasks. The offers must be known, its own and
//! on one agent; each task is validated (ids, command xor executor, fits what is left) and a
//! failure becomes a `TASK_ERROR` with a reason. Valid tasks go to the agent in one
//! `RunTasks` (several if their data would not fit one frame; a task that cannot fit one on
//! its own is a `TASK_ERROR`, never a frame that would close the agent's link); what the
//! accept left unused goes back behind the framework's filter.

use super::feed::ClusterEvent;
use super::tasks::TaskEntry;
use super::Master;
use bramble_proto::codec::{payload_size, MAX_FRAME_BYTES};
use bramble_proto::messages::{Filters, MasterEvent, MasterToAgent, TaskSummary};
use bramble_proto::task::{TaskInfo, UpdateSource};
use bramble_proto::{
    AgentId, ExecutorId, FrameworkId, OfferId, Resources, TaskId, TaskReason, TaskState, TaskStatus,
};
use std::collections::{HashMap, HashSet};
use std::time::Instant;
use tracing::{debug, info};

impl Master {
    pub(super) fn accept(
        &mut self,
        fw: &FrameworkId,
        offer_ids: Vec<OfferId>,
        tasks: Vec<TaskInfo>,
        filters: Filters,
        now: Instant,
    ) {
        // All offers must exist, be this framework's, and be on one agent.
        let mut problem: Option<String> = None;
        let mut agent: Option<AgentId> = None;
        let mut pool = Resources::default();
        if offer_ids.is_empty() {
            problem = Some("accept names no offers".into());
        }
        for id in &offer_ids {
            match self.offers.get(id) {
                None => {
                    problem = Some(format!(
                    "offer {id} is unknown or no longer valid (rescinded, expired or already used)"
                ))
                }
                Some(o) if &o.framework_id != fw => {
                    problem = Some(format!("offer {id} was made to another framework"))
                }
                Some(o) => {
                    if agent.as_ref().is_some_and(|a| a != &o.agent_id) {
                        problem = Some("offers in one accept must be on the same agent".into());
                    }
                    agent = Some(o.agent_id.clone());
                    pool.add(&o.resources);
                }
            }
        }
        let (agent_id, problem) = match (agent, problem) {
            (Some(a), None) => (a, None),
            (_, p) => (AgentId(String::new()), p.or(Some("no valid offer".into()))),
        };
        if let Some(why) = problem {
            // Valid offers among the bad ones are left outstanding for the framework to reuse.
            for t in tasks {
                self.task_error(fw, &t, TaskReason::InvalidOffer, &why);
            }
            return;
        }
        for id in &offer_ids {
            self.offers.remove(id);
        }

        let name = self
            .frameworks
            .get(fw)
            .map(|f| f.info.name.clone())
            .unwrap_or_default();
        let offered = pool.clone();
        let mut remaining = pool;
        let mut launched = Vec::new();
        let mut ids_in_accept: HashSet<TaskId> = HashSet::new();
        let mut new_executors: HashMap<ExecutorId, Resources> = HashMap::new();
        for task in tasks {
            if let Err(why) = run_tasks_fits(fw, &name, &task) {
                self.task_error(fw, &task, TaskReason::InvalidTask, &why);
                continue;
            }
            let needed = self.resources_needed(fw, &agent_id, &task, &new_executors);
            let verdict = self.validate_task(
                fw,
                &agent_id,
                &task,
                &ids_in_accept,
                &offered,
                &remaining,
                &needed,
            );
            match verdict {
                Err((reason, why)) => self.task_error(fw, &task, reason, &why),
                Ok(()) => {
                    // `validate_task` checked that `needed` fits in `remaining`.
                    remaining = remaining.checked_sub(&needed).unwrap_or_default();
                    if let Some(e) = &task.executor {
                        let already = self.agents.get(&agent_id).is_some_and(|a| {
                            a.executors
                                .contains_key(&(fw.clone(), e.executor_id.clone()))
                        });
                        if !already && !new_executors.contains_key(&e.executor_id) {
                            new_executors.insert(e.executor_id.clone(), e.resources.clone());
                        }
                    }
                    ids_in_accept.insert(task.task_id.clone());
                    launched.push(task);
                }
            }
        }
        if let Some(a) = self.agents.get_mut(&agent_id) {
            if !new_executors.is_empty() {
                self.dirty_agents.insert(agent_id.clone());
            }
            for (eid, res) in new_executors {
                a.executors.insert((fw.clone(), eid), res);
            }
        }
        self.release_with_filter(fw, &agent_id, &remaining, filters, now);
        if launched.is_empty() {
            return;
        }
        self.feed.counters().tasks_launched(fw, launched.len());
        // One line per launch, not per task: a framework launching thousands of tiny tasks a
        // second would otherwise flood the journal (each task is at debug).
        match launched.as_slice() {
            [t] => {
                info!(framework = %fw, task = %t.task_id, agent = %agent_id, resources = %t.resources, "launching task")
            }
            [first, .., last] => {
                info!(framework = %fw, tasks = launched.len(), first = %first.task_id, last = %last.task_id, agent = %agent_id, "launching tasks")
            }
            [] => {}
        }
        if let Some(f) = self.frameworks.get_mut(fw) {
            for t in &launched {
                debug!(framework = %fw, task = %t.task_id, agent = %agent_id, resources = %t.resources, "launching task");
                f.tasks.insert(
                    t.task_id.clone(),
                    TaskEntry {
                        info: t.clone(),
                        state: TaskState::Staging,
                        message: String::new(),
                        terminal: None,
                        resend_by_master: false,
                        kill_requested: false,
                        reason: None,
                        launched_at: bramble_proto::unix_now(),
                        started_at: None,
                        ended_at: None,
                    },
                );
            }
        }
        for t in &launched {
            self.dirty_task(fw, &t.task_id);
            self.emit_task(fw, &t.task_id);
        }
        // As few RunTasks as fit a frame each: one, unless the tasks carry a lot of data.
        for tasks in frame_sized(fw, &name, launched) {
            self.send_agent(
                &agent_id,
                MasterToAgent::RunTasks {
                    framework_id: fw.clone(),
                    framework_name: name.clone(),
                    tasks,
                },
            );
        }
    }

    /// Task resources plus, for a custom executor not yet running there, the executor's own.
    fn resources_needed(
        &self,
        fw: &FrameworkId,
        agent: &AgentId,
        task: &TaskInfo,
        new_executors: &HashMap<ExecutorId, Resources>,
    ) -> Resources {
        let mut needed = task.resources.clone();
        if let Some(e) = &task.executor {
            let running = self.agents.get(agent).is_some_and(|a| {
                a.executors
                    .contains_key(&(fw.clone(), e.executor_id.clone()))
            });
            if !running && !new_executors.contains_key(&e.executor_id) {
                needed.add(&e.resources);
            }
        }
        needed
    }

    #[allow(clippy::too_many_arguments)]
    fn validate_task(
        &self,
        fw: &FrameworkId,
        agent: &AgentId,
        task: &TaskInfo,
        ids_in_accept: &HashSet<TaskId>,
        offered: &Resources,
        remaining: &Resources,
        needed: &Resources,
    ) -> Result<(), (TaskReason, String)> {
        // Ids become directories on the agent (`bramble_proto::ids` has the rule).
        task.task_id
            .check()
            .map_err(|e| (TaskReason::InvalidTask, e.to_string()))?;
        let duplicate = ids_in_accept.contains(&task.task_id)
            || self
                .frameworks
                .get(fw)
                .and_then(|f| f.tasks.get(&task.task_id))
                .is_some();
        if duplicate {
            return Err((
                TaskReason::DuplicateTaskId,
                format!(
                    "task id {} is already in use by this framework",
                    task.task_id
                ),
            ));
        }
        if task.command.is_some() == task.executor.is_some() {
            return Err((
                TaskReason::InvalidTask,
                "a task needs exactly one of a command or an executor".into(),
            ));
        }
        if let Some(e) = &task.executor {
            e.executor_id
                .check()
                .map_err(|e| (TaskReason::InvalidTask, e.to_string()))?;
        }
        if let Some(image) = &task.image {
            self.check_image_task(agent, task, image)?;
        }
        // How many, and each one's uri, name and digest: refused here with the reason rather
        // than failing on the agent.
        bramble_proto::artifact::check_artifacts(&task.artifacts)
            .map_err(|why| (TaskReason::InvalidTask, why))?;
        if &task.agent_id != agent {
            return Err((
                TaskReason::InvalidOffer,
                format!(
                    "task names agent {} but the offer is for {agent}",
                    task.agent_id
                ),
            ));
        }
        // Its container's memory limit comes from it (with its executor's share): without
        // memory a task would run with no limit at all.
        if task.resources.mem_mib == 0 {
            return Err((
                TaskReason::InvalidTask,
                "a task must ask for some memory (mem > 0): its memory limit comes from it".into(),
            ));
        }
        if !offered.contains(needed) {
            let shortfall = offered.shortfall(needed).unwrap_or_default();
            let reason = if offered
                .checked_sub(&Resources {
                    ports: Vec::new(),
                    ..needed.clone()
                })
                .is_some()
            {
                TaskReason::ResourcesNotInOffer
            } else {
                TaskReason::TaskTooLarge
            };
            return Err((
                reason,
                format!("task needs more than its offer has: {shortfall}"),
            ));
        }
        if !remaining.contains(needed) {
            let shortfall = remaining.shortfall(needed).unwrap_or_default();
            return Err((
                TaskReason::ResourcesNotInOffer,
                format!(
                    "offer's resources already used by earlier tasks in this accept: {shortfall}"
                ),
            ));
        }
        Ok(())
    }

    fn task_error(&mut self, fw: &FrameworkId, task: &TaskInfo, reason: TaskReason, why: &str) {
        info!(framework = %fw, task = %task.task_id, ?reason, "refusing task: {why}");
        let mut status = TaskStatus::new(
            fw.clone(),
            task.task_id.clone(),
            TaskState::Error,
            UpdateSource::Master,
        )
        .with_reason(reason, why);
        status.agent_id = Some(task.agent_id.clone());
        self.feed.emit(|| {
            ClusterEvent::Task(TaskSummary {
                id: task.task_id.clone(),
                name: task.name.clone(),
                framework_id: fw.clone(),
                agent_id: task.agent_id.clone(),
                state: TaskState::Error,
                message: why.to_string(),
                resources: task.resources.clone(),
                reason: Some(reason),
                launched_at: status.timestamp,
                started_at: None,
                ended_at: Some(status.timestamp),
            })
        });
        self.send_framework(fw, MasterEvent::Update(status));
    }
}

/// Bytes a `RunTasks` for `fw` named `name` takes beyond its tasks (a task list's length
/// prefix included, at its largest).
fn run_tasks_overhead(fw: &FrameworkId, name: &str) -> usize {
    let empty = MasterToAgent::RunTasks {
        framework_id: fw.clone(),
        framework_name: name.to_string(),
        tasks: Vec::new(),
    };
    payload_size(&empty).unwrap_or(MAX_FRAME_BYTES) + LENGTH_PREFIX_MAX
}

const LENGTH_PREFIX_MAX: usize = 5;

fn task_size(task: &TaskInfo) -> usize {
    payload_size(task).unwrap_or(MAX_FRAME_BYTES)
}

/// A task is refused at the accept if even a `RunTasks` of its own would not fit a frame: sent,
/// it would close the agent's connection instead of failing this one task.
fn run_tasks_fits(fw: &FrameworkId, name: &str, task: &TaskInfo) -> Result<(), String> {
    let size = run_tasks_overhead(fw, name) + task_size(task);
    if size > MAX_FRAME_BYTES {
        return Err(format!(
            "the task's launch would be {size} bytes with the framework's name, over the {MAX_FRAME_BYTES}-byte frame limit; carry less data in the task"
        ));
    }
    Ok(())
}

/// Splits `tasks` into lists whose `RunTasks` each fit a frame; every task fits alone
/// (`run_tasks_fits`).
fn frame_sized(fw: &FrameworkId, name: &str, tasks: Vec<TaskInfo>) -> Vec<Vec<TaskInfo>> {
    let overhead = run_tasks_overhead(fw, name);
    let mut lists: Vec<Vec<TaskInfo>> = Vec::new();
    let mut current: Vec<TaskInfo> = Vec::new();
    let mut size = overhead;
    for task in tasks {
        let t = task_size(&task);
        if !current.is_empty() && size + t > MAX_FRAME_BYTES {
            lists.push(std::mem::take(&mut current));
            size = overhead;
        }
        size += t;
        current.push(task);
    }
    if !current.is_empty() {
        lists.push(current);
    }
    lists
}

impl Master {
    /// A task with a container image needs a command (the image's process) and an agent that
    /// advertised a container runtime; anything else is refused with what is missing.
    fn check_image_task(
        &self,
        agent: &AgentId,
        task: &TaskInfo,
        image: &str,
    ) -> Result<(), (TaskReason, String)> {
        if task.executor.is_some() {
            return Err((
                TaskReason::InvalidTask,
                format!("image {image:?}: a container image is for command tasks only, not custom executors"),
            ));
        }
        let capable = self.agents.get(agent).is_some_and(|a| {
            a.attributes
                .contains_key(bramble_proto::task::CONTAINERS_ATTRIBUTE)
        });
        if !capable {
            return Err((
                TaskReason::InvalidTask,
                format!(
                    "task asks for image {image:?} but agent {agent} has no container runtime \
                     (no {:?} attribute: set [containers] runtime in its config)",
                    bramble_proto::task::CONTAINERS_ATTRIBUTE
                ),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use crate::state::testing::*;
    use bramble_proto::codec::MAX_FRAME_BYTES;
    use bramble_proto::messages::{MasterEvent, MasterToAgent};
    use bramble_proto::{Resources, TaskReason, TaskState};
    use std::time::Instant;

    #[test]
    fn accepted_tasks_go_to_their_agent_in_one_run_tasks() {
        let now = Instant::now();
        let mut m = master(now);
        let (mut agent, mut fw) = agent_and_framework(&mut m, now);
        drain(&mut agent);
        let offer = offers(&drain(&mut fw)).remove(0);
        accept(&mut m, &offer, vec![task_info("t1"), task_info("t2")], now);
        let sent = drain(&mut agent);
        let launched: Vec<Vec<String>> = sent
            .iter()
            .filter_map(|msg| match msg {
                MasterToAgent::RunTasks { tasks, .. } => Some(
                    tasks
                        .iter()
                        .map(|t| t.task_id.as_str().to_string())
                        .collect(),
                ),
                _ => None,
            })
            .collect();
        assert_eq!(launched, vec![vec!["t1".to_string(), "t2".to_string()]]);
        let states: Vec<TaskState> = m.snapshot().tasks.iter().map(|t| t.state).collect();
        assert_eq!(states, vec![TaskState::Staging, TaskState::Staging]);
    }

    /// The task lists of the `RunTasks` in `sent`, by id.
    fn run_tasks_ids(sent: &[MasterToAgent]) -> Vec<Vec<String>> {
        sent.iter()
            .filter_map(|msg| match msg {
                MasterToAgent::RunTasks { tasks, .. } => Some(
                    tasks
                        .iter()
                        .map(|t| t.task_id.as_str().to_string())
                        .collect(),
                ),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn tasks_whose_data_would_overflow_one_frame_go_in_several_run_tasks() {
        let now = Instant::now();
        let mut m = master(now);
        let (mut agent, mut fw) = agent_and_framework(&mut m, now);
        drain(&mut agent);
        let offer = offers(&drain(&mut fw)).remove(0);
        let big = |id: &str| {
            let mut t = task_info(id);
            t.resources = Resources::new(0.1, 1);
            t.data = vec![1; 400 * 1024];
            t
        };
        accept(&mut m, &offer, vec![big("t1"), big("t2"), big("t3")], now);
        let sent = drain(&mut agent);
        for msg in &sent {
            let len = bramble_proto::codec::encode_frame(msg, MAX_FRAME_BYTES)
                .map(|f| f.len())
                .unwrap_or(usize::MAX);
            assert!(
                len <= MAX_FRAME_BYTES + 4,
                "a {len}-byte frame to the agent"
            );
        }
        assert_eq!(
            run_tasks_ids(&sent),
            vec![
                vec!["t1".to_string(), "t2".to_string()],
                vec!["t3".to_string()]
            ]
        );
    }

    #[test]
    fn a_task_that_cannot_fit_a_frame_is_a_task_error_not_a_broken_agent_link() {
        let now = Instant::now();
        let mut m = master(now);
        let (mut agent, mut fw) = agent_and_framework(&mut m, now);
        drain(&mut agent);
        let offer = offers(&drain(&mut fw)).remove(0);
        let mut huge = task_info("huge");
        huge.resources = Resources::new(0.1, 1);
        huge.data = vec![1; MAX_FRAME_BYTES];
        let mut small = task_info("small");
        small.resources = Resources::new(0.1, 1);
        accept(&mut m, &offer, vec![huge, small], now);
        assert_eq!(
            run_tasks_ids(&drain(&mut agent)),
            vec![vec!["small".to_string()]]
        );
        let refused: Vec<_> = drain(&mut fw)
            .into_iter()
            .filter_map(|e| match e {
                MasterEvent::Update(s) => Some((s.task_id.as_str().to_string(), s.state)),
                _ => None,
            })
            .collect();
        assert_eq!(refused, vec![("huge".to_string(), TaskState::Error)]);
    }

    #[test]
    fn a_task_id_used_twice_in_one_accept_is_refused_with_task_error() {
        let now = Instant::now();
        let mut m = master(now);
        let (_agent, mut fw) = agent_and_framework(&mut m, now);
        let offer = offers(&drain(&mut fw)).remove(0);
        accept(&mut m, &offer, vec![task_info("t1"), task_info("t1")], now);
        let refused: Vec<_> = drain(&mut fw)
            .into_iter()
            .filter_map(|e| match e {
                MasterEvent::Update(s) => Some((s.state, s.reason)),
                _ => None,
            })
            .collect();
        assert_eq!(
            refused,
            vec![(TaskState::Error, Some(TaskReason::DuplicateTaskId))]
        );
        assert_eq!(m.snapshot().tasks.len(), 1);
    }

    /// Issue 16: task and executor ids become directories on the agent; one that could leave
    /// the work dir or cannot be a file name is a TASK_ERROR and never reaches the agent.
    #[test]
    fn tasks_whose_ids_cannot_name_a_directory_are_refused_and_not_launched() {
        let now = Instant::now();
        let mut m = master(now);
        let (mut agent, mut fw) = agent_and_framework(&mut m, now);
        drain(&mut agent);
        let long = "t".repeat(10 * 1024);
        let bad_ids = [
            "../../etc",
            "a/b",
            "..",
            "nul\0",
            "esc\u{1b}",
            long.as_str(),
        ];
        let mut tasks: Vec<_> = bad_ids.iter().map(|id| task_info(id)).collect();
        for (i, bad) in [".", "..", "x/y", "nul\0"].into_iter().enumerate() {
            let mut t = task_info(&format!("on-executor-{i}"));
            t.command = None;
            t.executor = Some(bramble_proto::task::ExecutorInfo {
                executor_id: bramble_proto::ExecutorId(bad.into()),
                name: "e".into(),
                command: bramble_proto::task::CommandInfo::shell("true"),
                resources: Resources::default(),
            });
            tasks.push(t);
        }
        let offer = offers(&drain(&mut fw)).remove(0);
        accept(&mut m, &offer, tasks, now);
        let refused: Vec<_> = drain(&mut fw)
            .into_iter()
            .filter_map(|e| match e {
                MasterEvent::Update(s) => Some((s.state, s.reason, s.message)),
                _ => None,
            })
            .collect();
        assert_eq!(refused.len(), 10, "{refused:?}");
        for (state, reason, message) in &refused {
            assert_eq!(
                (*state, *reason),
                (TaskState::Error, Some(TaskReason::InvalidTask))
            );
            assert!(message.contains(" id ") && message.len() < 200, "{message}");
        }
        let sent = drain(&mut agent);
        assert!(
            !sent
                .iter()
                .any(|m| matches!(m, MasterToAgent::RunTasks { .. })),
            "{sent:?}"
        );
    }

    #[test]
    fn a_task_without_memory_is_refused_with_a_reason() {
        let now = Instant::now();
        let mut m = master(now);
        let (mut agent, mut fw) = agent_and_framework(&mut m, now);
        drain(&mut agent);
        let offer = offers(&drain(&mut fw)).remove(0);
        let mut no_mem = task_info("no-mem");
        no_mem.resources = Resources::new(0.5, 0);
        accept(&mut m, &offer, vec![no_mem], now);
        let refused = drain(&mut fw)
            .into_iter()
            .find_map(|e| match e {
                MasterEvent::Update(s) => Some(s),
                _ => None,
            })
            .expect("a TASK_ERROR");
        assert_eq!(refused.state, TaskState::Error);
        assert_eq!(refused.reason, Some(TaskReason::InvalidTask));
        assert!(refused.message.contains("mem > 0"), "{}", refused.message);
        assert!(drain(&mut agent).is_empty(), "nothing reaches the agent");
    }

    #[test]
    fn a_task_with_too_many_or_bad_artifacts_is_refused_and_nothing_is_launched() {
        use bramble_proto::artifact::{Artifact, MAX_ARTIFACTS};
        let now = Instant::now();
        let mut m = master(now);
        let (mut agent, mut fw) = agent_and_framework(&mut m, now);
        drain(&mut agent);
        let offer = offers(&drain(&mut fw)).remove(0);
        let mut many = task_info("many");
        many.resources = Resources::new(0.1, 8);
        many.artifacts = (0..=MAX_ARTIFACTS)
            .map(|i| Artifact::new(format!("master:f{i}")))
            .collect();
        let mut bad = task_info("bad");
        bad.resources = Resources::new(0.1, 8);
        bad.artifacts = vec![Artifact::new("master:../master.redb")];
        let mut fine = task_info("fine");
        fine.resources = Resources::new(0.1, 8);
        fine.artifacts = (0..MAX_ARTIFACTS)
            .map(|i| Artifact::new(format!("master:f{i}")))
            .collect();
        accept(&mut m, &offer, vec![many, bad, fine], now);
        let refused = refusals(drain(&mut fw));
        assert_eq!(refused.len(), 2, "{refused:?}");
        assert_eq!(refused[0].0, "many");
        assert_eq!(refused[0].1, TaskState::Error);
        assert!(refused[0].2.contains(&format!("at most {MAX_ARTIFACTS}")));
        assert_eq!(refused[1].0, "bad");
        assert!(refused[1].2.contains(".."), "{}", refused[1].2);
        assert_eq!(
            run_tasks_ids(&drain(&mut agent)),
            vec![vec!["fine".to_string()]]
        );
    }

    #[test]
    fn a_task_larger_than_its_offer_is_refused_and_nothing_is_launched() {
        let now = Instant::now();
        let mut m = master(now);
        let (mut agent, mut fw) = agent_and_framework(&mut m, now);
        drain(&mut agent);
        let offer = offers(&drain(&mut fw)).remove(0);
        let mut huge = task_info("huge");
        huge.resources = Resources::new(4.0, 64);
        accept(&mut m, &offer, vec![huge], now);
        let refused = drain(&mut fw)
            .into_iter()
            .find_map(|e| match e {
                MasterEvent::Update(s) => Some(s),
                _ => None,
            })
            .expect("a TASK_ERROR");
        assert_eq!(refused.state, TaskState::Error);
        assert_eq!(refused.reason, Some(TaskReason::TaskTooLarge));
        assert!(drain(&mut agent).is_empty());
    }

    /// The framework's updates as (task, state, message).
    fn refusals(events: Vec<MasterEvent>) -> Vec<(String, TaskState, String)> {
        events
            .into_iter()
            .filter_map(|e| match e {
                MasterEvent::Update(s) => {
                    Some((s.task_id.as_str().to_string(), s.state, s.message))
                }
                _ => None,
            })
            .collect()
    }

    #[test]
    fn an_image_task_on_an_agent_without_a_container_runtime_is_refused_with_the_reason() {
        let now = Instant::now();
        let mut m = master(now);
        let (mut agent, mut fw) = agent_and_framework(&mut m, now);
        drain(&mut agent);
        let offer = offers(&drain(&mut fw)).remove(0);
        let mut task = task_info("boxed");
        task.image = Some("busybox".into());
        accept(&mut m, &offer, vec![task], now);
        assert!(run_tasks_ids(&drain(&mut agent)).is_empty());
        let refused = refusals(drain(&mut fw));
        assert_eq!(refused.len(), 1, "{refused:?}");
        assert_eq!(refused[0].1, TaskState::Error);
        assert!(
            refused[0].2.contains("no container runtime"),
            "{}",
            refused[0].2
        );
    }

    #[test]
    fn an_image_task_goes_to_an_agent_advertising_containers() {
        use bramble_proto::messages::AgentToMaster;
        use bramble_proto::AgentId;
        let now = Instant::now();
        let mut m = master(now);
        let mut agent = connect_agent(&mut m, 1, now);
        m.handle(
            crate::state::Input::FromAgent {
                conn: 1,
                msg: AgentToMaster::Register {
                    agent_id: Some(AgentId("a1".into())),
                    hostname: "a1".into(),
                    resources: Resources::new(2.0, 1024),
                    attributes: [(
                        bramble_proto::task::CONTAINERS_ATTRIBUTE.to_string(),
                        "crun".to_string(),
                    )]
                    .into(),
                    tasks: Vec::new(),
                },
            },
            now,
        );
        let mut fw = connect_framework(&mut m, 2, Some("fw1"), now);
        settle(&mut m, now);
        drain(&mut agent);
        let offer = offers(&drain(&mut fw)).remove(0);
        let mut task = task_info("boxed");
        task.image = Some("busybox".into());
        accept(&mut m, &offer, vec![task], now);
        assert_eq!(
            run_tasks_ids(&drain(&mut agent)),
            vec![vec!["boxed".to_string()]]
        );
    }
}

"""A pymesos framework with a custom executor (echo_executor.py, a pymesos
MesosExecutorDriver program) that exchanges framework messages both ways.

It launches N tasks whose TaskInfo.data is a number, on one executor per agent. The executor
answers each with a framework message carrying the square (executor -> scheduler) and what it
sees of its MESOS_* environment; for each result the scheduler sends ``ping K`` (scheduler ->
executor) and waits for ``pong K`` back. It checks: every task RUNNING then FINISHED with the
result in TaskStatus.data, every result and every pong arrived, the executor saw the
environment the Mesos executor API promises (agent endpoint as ip:port, framework and
executor ids, sandbox as its working directory, a stout grace period, its own session). Then
it SHUTDOWNs each executor (a raw call: pymesos has no helper for it), waits for the executors'
FAILURE events where the master sends them, and tears down.

    custom_executor.py HOST:PORT [--tasks N] [--task-cpus C] [--deadline S]
"""

import json
import os
import re
import sys
import threading

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from pymesos import MesosSchedulerDriver, Scheduler, decode_data, encode_data  # noqa: E402

import common  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
EXECUTOR_ID = "echo-executor"
EXECUTOR_CPUS, EXECUTOR_MEM = 0.1, 32
TERMINAL = {"TASK_FINISHED", "TASK_FAILED", "TASK_KILLED", "TASK_LOST", "TASK_ERROR",
            "TASK_DROPPED", "TASK_GONE", "TASK_GONE_BY_OPERATOR", "TASK_UNKNOWN"}


def executor_info(deadline):
    """The executor as Mesos users ship a Python one: the interpreter and the script, with
    PYTHONPATH passed through CommandInfo.environment."""
    env = [dict(name="PYTHONPATH", value=os.environ.get("PYTHONPATH", ""))]
    return dict(
        executor_id=dict(value=EXECUTOR_ID),
        name="echo executor (pymesos)",
        command=dict(value="%s %s %d" % (sys.executable, os.path.join(HERE, "echo_executor.py"),
                                        int(deadline)),
                     environment=dict(variables=env)),
        resources=common.resources(EXECUTOR_CPUS, EXECUTOR_MEM))


class CustomExecutor(Scheduler):
    def __init__(self, args, verdict):
        self.args = args
        self.verdict = verdict
        self.executor = executor_info(args.deadline)
        self.pending = list(range(1, args.tasks + 1))
        self.states = {}
        self.results = {}      # task id -> result from the framework message
        self.status_data = {}  # task id -> result from TASK_FINISHED's data
        self.pings = set()
        self.pongs = set()
        self.executors = {}    # agent id -> executor's environment report
        self.lost = set()      # agents whose executor the master reported lost (FAILURE)
        self.all_lost = threading.Event()
        self.framework_id = None
        self.shutdown_sent = False

    def registered(self, driver, framework_id, master_info):
        self.framework_id = framework_id["value"]
        common.emit("registered", framework_id=self.framework_id)

    def resourceOffers(self, driver, offers):
        for offer in offers:
            cpus, mem = common.scalar(offer, "cpus"), common.scalar(offer, "mem")
            running = any(e["value"] == EXECUTOR_ID for e in offer.get("executor_ids", []))
            if not running:
                cpus -= EXECUTOR_CPUS
                mem -= EXECUTOR_MEM
            tasks = []
            want_cpus, want_mem = self.args.task_cpus, self.args.task_mem
            while self.pending and cpus >= want_cpus and mem >= want_mem:
                n = self.pending.pop(0)
                tid = "echo-%d" % n
                tasks.append(dict(
                    name=tid, task_id=dict(value=tid), agent_id=offer["agent_id"],
                    resources=common.resources(want_cpus, want_mem),
                    executor=self.executor, data=encode_data(str(n).encode("utf-8"))))
                cpus -= want_cpus
                mem -= want_mem
            if tasks:
                common.emit("launch", agent=offer["agent_id"]["value"],
                            tasks=[t["name"] for t in tasks])
                driver.launchTasks(offer["id"], tasks, dict(refuse_seconds=1.0))
            else:
                driver.declineOffer(offer["id"], dict(refuse_seconds=60.0))

    def statusUpdate(self, driver, status):
        tid = status["task_id"]["value"]
        self.states.setdefault(tid, []).append(status["state"])
        common.emit("update", task=tid, state=status["state"], message=status.get("message"))
        if status["state"] == "TASK_FINISHED" and "data" in status:
            self.status_data[tid] = int(decode_data(status["data"]).decode("utf-8"))
        self.maybe_done(driver)

    def frameworkMessage(self, driver, executor_id, agent_id, data):
        msg = json.loads(decode_data(data).decode("utf-8"))
        common.emit("message", executor=executor_id["value"], agent=agent_id["value"],
                    kind=msg.get("kind"))
        if executor_id["value"] != EXECUTOR_ID:
            self.verdict.fail("message from unknown executor %s" % executor_id)
            return
        if msg["kind"] == "result":
            self.results[msg["task"]] = msg["result"]
            self.executors[agent_id["value"]] = msg
            k = msg["n"]
            self.pings.add(k)
            driver.sendFrameworkMessage(executor_id, agent_id,
                                        encode_data(("ping %d" % k).encode("utf-8")))
        elif msg["kind"] == "pong":
            self.pongs.add(msg["n"])
        self.maybe_done(driver)

    def executorLost(self, driver, executor_id, agent_id, status):
        common.emit("executor_lost", executor=executor_id["value"], agent=agent_id["value"],
                    status=status)
        self.lost.add(agent_id["value"])
        if self.shutdown_sent and self.lost >= set(self.executors):
            self.all_lost.set()

    def error(self, driver, message):
        self.verdict.fail("ERROR event: %s" % message)

    def maybe_done(self, driver):
        finished = [t for t, s in self.states.items() if s[-1] in TERMINAL]
        if (len(finished) == self.args.tasks and len(self.results) == self.args.tasks
                and self.pongs == self.pings and not self.shutdown_sent):
            self.shutdown_sent = True
            for agent in self.executors:
                # pymesos has no SHUTDOWN helper; the call is what any v1 client would post.
                driver._send(dict(type="SHUTDOWN", framework_id=dict(value=self.framework_id),
                                  shutdown=dict(executor_id=dict(value=EXECUTOR_ID),
                                                agent_id=dict(value=agent))))
            common.emit("shutdown_sent", agents=sorted(self.executors))
            if self.lost >= set(self.executors):
                self.all_lost.set()
            self.verdict.ok()

    def check(self):
        problems = []
        want = {"echo-%d" % n: n * n for n in range(1, self.args.tasks + 1)}
        for tid, square in want.items():
            seen = self.states.get(tid, [])
            dedup = [s for i, s in enumerate(seen) if i == 0 or seen[i - 1] != s]
            if dedup != ["TASK_RUNNING", "TASK_FINISHED"]:
                problems.append("%s went %s" % (tid, dedup))
            if self.results.get(tid) != square:
                problems.append("%s: message result %s, wanted %s"
                                % (tid, self.results.get(tid), square))
            if self.status_data.get(tid) != square:
                problems.append("%s: TASK_FINISHED data %s, wanted %s"
                                % (tid, self.status_data.get(tid), square))
        if self.lost != set(self.executors):
            problems.append("FAILURE (executor lost) after SHUTDOWN from %s, executors on %s"
                            % (sorted(self.lost), sorted(self.executors)))
        if self.pongs != self.pings:
            problems.append("pings %s but pongs %s" % (sorted(self.pings), sorted(self.pongs)))
        for agent, report in self.executors.items():
            problems += ["executor on %s: %s" % (agent, p) for p in self.env_problems(agent, report)]
        return problems

    def env_problems(self, agent, report):
        env, problems = report["env"], []
        endpoint = env.get("MESOS_AGENT_ENDPOINT") or ""
        if not re.fullmatch(r"[0-9.]+:[0-9]+|\[[0-9a-fA-F:]+\]:[0-9]+", endpoint):
            problems.append("MESOS_AGENT_ENDPOINT %r is not ip:port" % endpoint)
        if env.get("MESOS_FRAMEWORK_ID") != self.framework_id:
            problems.append("MESOS_FRAMEWORK_ID %r" % env.get("MESOS_FRAMEWORK_ID"))
        if env.get("MESOS_EXECUTOR_ID") != EXECUTOR_ID:
            problems.append("MESOS_EXECUTOR_ID %r" % env.get("MESOS_EXECUTOR_ID"))
        if agent not in (env.get("MESOS_SLAVE_ID"), env.get("MESOS_AGENT_ID")):
            problems.append("MESOS_SLAVE_ID/MESOS_AGENT_ID %r/%r, agent %s"
                            % (env.get("MESOS_SLAVE_ID"), env.get("MESOS_AGENT_ID"), agent))
        sandbox = env.get("MESOS_DIRECTORY")
        if not sandbox or os.path.realpath(sandbox) != os.path.realpath(report["cwd"]):
            problems.append("MESOS_DIRECTORY %r is not the working directory %r"
                            % (sandbox, report["cwd"]))
        if not env.get("MESOS_SANDBOX"):
            problems.append("MESOS_SANDBOX unset")
        grace = env.get("MESOS_EXECUTOR_SHUTDOWN_GRACE_PERIOD") or ""
        if not re.fullmatch(r"[0-9.]+(ns|us|ms|secs|mins|hrs|days|weeks)", grace):
            problems.append("grace period %r is not a stout duration" % grace)
        if not report.get("own_session"):
            problems.append("not in its own session (sid %s, pid %s)"
                            % (report.get("sid"), report.get("pid")))
        return problems


def main():
    p = common.parser(__doc__)
    p.add_argument("--tasks", type=int, default=4)
    p.add_argument("--task-cpus", type=float, default=0.1,
                   help="cpus per task (big enough and tasks spread over agents)")
    p.add_argument("--task-mem", type=float, default=16)
    p.add_argument("--lost-wait", type=float, default=10.0,
                   help="seconds to wait for FAILURE after SHUTDOWN")
    args = p.parse_args()

    verdict = common.Verdict()
    sched = CustomExecutor(args, verdict)
    driver = MesosSchedulerDriver(
        sched, common.framework_info(args.name or "py-custom-executor"), args.master,
        principal=args.principal, secret=args.secret)
    # The verdict comes once SHUTDOWN went out; the executors then exit and the master
    # reports each one lost (FAILURE with its wait status).
    why = common.run_until(driver, verdict, args.deadline)
    if not why and verdict.failure is None:
        sched.all_lost.wait(args.lost_wait)
    fid = sched.framework_id
    common.stop(driver)
    if why or verdict.failure:
        common.deadline_exit(why or verdict.failure, states=sched.states)
    problems = sched.check()
    gone = fid is not None and common.framework_gone(
        args.master, fid, args.principal, args.secret)
    if not gone:
        problems.append("framework %s still active after TEARDOWN" % fid)
    common.finish(not problems, problems=problems, framework_id=fid,
                  results=sched.results, pongs=sorted(sched.pongs),
                  agents=sorted(sched.executors), executors_lost=sorted(sched.lost),
                  executor_env=sched.executors)


if __name__ == "__main__":
    main()

"""A pymesos framework that runs N shell tasks (TaskInfo.command, no executor) and checks the
Mesos command-task contract end to end: every task goes TASK_STARTING -> TASK_RUNNING ->
TASK_FINISHED in that order (one extra ``exit 3`` task must end TASK_FAILED), every update
that carries a uuid also carries the agent_id and is acknowledged explicitly by this
framework, and TEARDOWN at the end removes the framework from the master.

    command_tasks.py HOST:PORT [--tasks N] [--command CMD] [--fail-one] [--deadline S]
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from pymesos import MesosSchedulerDriver, Scheduler  # noqa: E402

import common  # noqa: E402

EXPECTED = ["TASK_STARTING", "TASK_RUNNING", "TASK_FINISHED"]
TERMINAL = {"TASK_FINISHED", "TASK_FAILED", "TASK_KILLED", "TASK_LOST", "TASK_ERROR",
            "TASK_DROPPED", "TASK_GONE", "TASK_GONE_BY_OPERATOR", "TASK_UNKNOWN"}


class CommandTasks(Scheduler):
    def __init__(self, args, verdict):
        self.args = args
        self.verdict = verdict
        self.to_launch = ["cmd-%d" % i for i in range(args.tasks)]
        if args.fail_one:
            self.to_launch.append("cmd-fails")
        self.total = len(self.to_launch)
        self.states = {}       # task id -> [state, ...] in arrival order
        self.agents = {}       # task id -> agent id
        self.acked = 0
        self.framework_id = None

    def registered(self, driver, framework_id, master_info):
        self.framework_id = framework_id["value"]
        common.emit("registered", framework_id=self.framework_id, master=master_info)

    def resourceOffers(self, driver, offers):
        for offer in offers:
            cpus, mem = common.scalar(offer, "cpus"), common.scalar(offer, "mem")
            tasks = []
            while self.to_launch and cpus >= self.args.cpus and mem >= self.args.mem:
                tid = self.to_launch.pop(0)
                line = "exit 3" if tid == "cmd-fails" else self.args.command
                tasks.append(dict(
                    name=tid, task_id=dict(value=tid), agent_id=offer["agent_id"],
                    resources=common.resources(self.args.cpus, self.args.mem),
                    command=dict(value=line, shell=True)))
                cpus -= self.args.cpus
                mem -= self.args.mem
            if tasks:
                common.emit("launch", offer=offer["id"]["value"],
                            agent=offer["agent_id"]["value"], tasks=[t["name"] for t in tasks])
                driver.launchTasks(offer["id"], tasks, dict(refuse_seconds=1.0))
            else:
                driver.declineOffer(offer["id"], dict(refuse_seconds=60.0))

    def statusUpdate(self, driver, status):
        tid = status["task_id"]["value"]
        state = status["state"]
        self.states.setdefault(tid, []).append(state)
        if "agent_id" in status:
            self.agents[tid] = status["agent_id"]["value"]
        common.emit("update", task=tid, state=state, uuid="uuid" in status,
                    source=status.get("source"), message=status.get("message"))
        if "uuid" in status:
            if "agent_id" not in status:
                self.verdict.fail("update for %s has a uuid but no agent_id" % tid)
                return
            driver.acknowledgeStatusUpdate(status)
            self.acked += 1
        done = [t for t, s in self.states.items() if s[-1] in TERMINAL]
        if len(done) == self.total:
            self.verdict.ok()

    def error(self, driver, message):
        self.verdict.fail("ERROR event: %s" % message)

    def check(self):
        """Every failure of the command-task contract, as strings."""
        problems = []
        for tid, seen in sorted(self.states.items()):
            # At-least-once delivery may repeat an update; order is what matters.
            dedup = [s for i, s in enumerate(seen) if i == 0 or seen[i - 1] != s]
            if tid == "cmd-fails":
                if dedup[-1] != "TASK_FAILED":
                    problems.append("%s ended %s, wanted TASK_FAILED" % (tid, dedup))
            elif dedup != EXPECTED:
                problems.append("%s went %s, wanted %s" % (tid, dedup, EXPECTED))
        missing = self.total - len(self.states)
        if missing:
            problems.append("%d tasks never got an update" % missing)
        return problems


def main():
    p = common.parser(__doc__)
    p.add_argument("--tasks", type=int, default=4)
    p.add_argument("--command", default="echo hello from $(hostname); sleep 0.2")
    p.add_argument("--cpus", type=float, default=0.1)
    p.add_argument("--mem", type=float, default=16)
    p.add_argument("--fail-one", action="store_true", help="also launch an `exit 3` task")
    args = p.parse_args()

    verdict = common.Verdict()
    sched = CommandTasks(args, verdict)
    driver = MesosSchedulerDriver(
        sched, common.framework_info(args.name or "py-command-tasks"), args.master,
        implicit_acknowledgements=False, principal=args.principal, secret=args.secret)
    why = common.run_until(driver, verdict, args.deadline)
    fid = sched.framework_id
    common.stop(driver)
    if why or verdict.failure:
        common.deadline_exit(why or verdict.failure, states=sched.states)
    problems = sched.check()
    gone = fid is not None and common.framework_gone(
        args.master, fid, args.principal, args.secret)
    if not gone:
        problems.append("framework %s still active after TEARDOWN" % fid)
    common.finish(not problems, problems=problems, framework_id=fid, tasks=sched.total,
                  acked=sched.acked, agents=sorted(set(sched.agents.values())),
                  states=sched.states)


if __name__ == "__main__":
    main()

"""Framework failover with pymesos, as two processes.

The first process subscribes with a failover_timeout, launches a long command task, waits for
TASK_RUNNING (acknowledged), and goes away without TEARDOWN (``stop(failover=True)``). While
nobody is subscribed the master must keep the framework (listed, not connected) and its task.
A second process subscribes with the same framework id: pymesos reports that as
``reregistered``; explicit and implicit RECONCILE must both report the task still
TASK_RUNNING; it kills the task (TASK_KILLED) and tears down.

    failover.py HOST:PORT [--failover-timeout S] [--deadline S]
"""

import os
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from pymesos import MesosSchedulerDriver, Scheduler  # noqa: E402

import common  # noqa: E402

TASK_ID = "long-task"


class FirstLife(Scheduler):
    """Launches the long task and reports once its RUNNING is acknowledged."""

    def __init__(self, verdict):
        self.verdict = verdict
        self.launched = False
        self.framework_id = None
        self.agent_id = None

    def registered(self, driver, framework_id, master_info):
        self.framework_id = framework_id["value"]
        common.emit("registered", framework_id=self.framework_id)

    def resourceOffers(self, driver, offers):
        for offer in offers:
            if not self.launched and common.scalar(offer, "cpus") >= 0.1:
                self.launched = True
                task = dict(name=TASK_ID, task_id=dict(value=TASK_ID),
                            agent_id=offer["agent_id"], resources=common.resources(0.1, 16),
                            command=dict(value="sleep 600"))
                driver.launchTasks(offer["id"], [task])
            else:
                driver.declineOffer(offer["id"], dict(refuse_seconds=60.0))

    def statusUpdate(self, driver, status):
        common.emit("update", task=status["task_id"]["value"], state=status["state"])
        if "uuid" in status:
            driver.acknowledgeStatusUpdate(status)
        if status["state"] == "TASK_RUNNING":
            self.agent_id = status["agent_id"]["value"]
            self.verdict.ok()
        elif status["state"] != "TASK_STARTING":
            self.verdict.fail("the long task went %s" % status["state"])

    def error(self, driver, message):
        self.verdict.fail("ERROR event: %s" % message)


class SecondLife(Scheduler):
    """Re-subscribes under the first life's id, reconciles, kills the task."""

    def __init__(self, framework_id, verdict):
        self.framework_id = framework_id
        self.verdict = verdict
        self.reregistered_as = None
        self.registered_fresh = False
        self.explicit = threading.Event()
        self.implicit = threading.Event()
        self.reconciled = []    # states reported by the master's reconciliation
        self.killed = False
        self.errors = []

    def registered(self, driver, framework_id, master_info):
        # pymesos says `registered` only for a framework without an id: a new framework.
        self.registered_fresh = True
        self.verdict.fail("subscribed as a NEW framework %s" % framework_id["value"])

    def reregistered(self, driver, master_info):
        self.reregistered_as = driver.framework_id
        common.emit("reregistered", framework_id=driver.framework_id)
        if driver.framework_id != self.framework_id:
            self.verdict.fail("re-subscribed as %s, not %s" % (driver.framework_id,
                                                               self.framework_id))
            return
        driver.reconcileTasks([dict(task_id=dict(value=TASK_ID))])

    def resourceOffers(self, driver, offers):
        for offer in offers:
            driver.declineOffer(offer["id"], dict(refuse_seconds=60.0))

    def statusUpdate(self, driver, status):
        state = status["state"]
        tid = status["task_id"]["value"]
        from_reconcile = "uuid" not in status
        common.emit("update", task=tid, state=state, reason=status.get("reason"),
                    reconcile=from_reconcile)
        if "uuid" in status:
            driver.acknowledgeStatusUpdate(status)
        if tid != TASK_ID:
            self.verdict.fail("update for unknown task %s" % tid)
            return
        if from_reconcile and not self.explicit.is_set():
            self.reconciled.append(("explicit", state))
            self.explicit.set()
            driver.reconcileTasks([])  # implicit: every task the master knows for us
        elif from_reconcile and not self.implicit.is_set():
            self.reconciled.append(("implicit", state))
            self.implicit.set()
            driver.killTask(dict(value=TASK_ID))
        elif state == "TASK_KILLED":
            self.killed = True
            self.verdict.ok()
        elif state in ("TASK_FINISHED", "TASK_FAILED", "TASK_LOST", "TASK_ERROR"):
            self.verdict.fail("the long task went %s" % state)

    def error(self, driver, message):
        self.errors.append(message)
        self.verdict.fail("ERROR event: %s" % message)


def first(args):
    verdict = common.Verdict()
    sched = FirstLife(verdict)
    driver = MesosSchedulerDriver(
        sched, common.framework_info("py-failover", failover_timeout=args.failover_timeout),
        args.master, implicit_acknowledgements=False,
        principal=args.principal, secret=args.secret)
    why = common.run_until(driver, verdict, args.deadline)
    # Go away without TEARDOWN: the framework and its task must outlive this process.
    common.stop(driver, failover=True)
    if why or verdict.failure:
        common.deadline_exit(why or verdict.failure)
    common.finish(True, framework_id=sched.framework_id, agent_id=sched.agent_id,
                  task_id=TASK_ID)


def second(args):
    verdict = common.Verdict()
    sched = SecondLife(args.framework_id, verdict)
    info = common.framework_info("py-failover", failover_timeout=args.failover_timeout,
                                 id=dict(value=args.framework_id))
    driver = MesosSchedulerDriver(sched, info, args.master, implicit_acknowledgements=False,
                                  principal=args.principal, secret=args.secret)
    why = common.run_until(driver, verdict, args.deadline)
    common.stop(driver)
    if why or verdict.failure:
        common.deadline_exit(why or verdict.failure, reconciled=sched.reconciled)
    problems = []
    for kind, state in sched.reconciled:
        if state != "TASK_RUNNING":
            problems.append("%s reconciliation said %s, wanted TASK_RUNNING" % (kind, state))
    if len(sched.reconciled) != 2:
        problems.append("reconciliation answers: %s" % sched.reconciled)
    if not common.framework_gone(args.master, args.framework_id, args.principal, args.secret):
        problems.append("framework still active after TEARDOWN")
    common.finish(not problems, problems=problems, framework_id=sched.reregistered_as,
                  reconciled=sched.reconciled, killed=sched.killed)


def framework_view(args, framework_id):
    """What the master's /master/state says about one framework."""
    state = common.get_json(args.master, "/master/state", args.principal, args.secret) or {}
    mine = [f for f in state.get("frameworks", []) if f.get("id") == framework_id]
    tasks = [t for f in mine for t in f.get("tasks", [])]
    return dict(listed=bool(mine),
                connected=mine[0].get("connected") if mine else None,
                task_states=[t.get("state") for t in tasks])


def while_away(args, framework_id, deadline_s=10.0):
    """What the master says about the framework once no process is subscribed.

    The first process has exited, so its connection is closed; the master notices the
    closed stream promptly but not instantly, so poll (with a deadline) until it lists the
    framework as disconnected, and report the last view either way."""
    until = time.monotonic() + deadline_s
    while True:
        view = framework_view(args, framework_id)
        if view["connected"] is not True or time.monotonic() >= until:
            return view
        time.sleep(0.05)


def orchestrate(args):
    common_args = [args.master, "--failover-timeout", str(args.failover_timeout),
                   "--deadline", str(args.deadline / 2)]
    if args.principal is not None:
        common_args += ["--principal", args.principal, "--secret", args.secret]
    me = os.path.abspath(__file__)
    one = common.Child("first", [me, "--phase", "first"] + common_args).result(args.deadline / 2)
    if not one.get("ok"):
        common.finish(False, problems=["first life: %s" % one.get("error")])
    fid = one["framework_id"]
    # The child prints its result before the interpreter exits; its socket closes at exit.
    try:
        one.proc.wait(timeout=args.deadline / 4)
    except Exception:  # noqa: BLE001 - a child that will not exit is reported below as connected
        pass
    away = while_away(args, fid)
    common.emit("while_away", **away)
    problems = []
    if not away["listed"]:
        problems.append("the master forgot framework %s within its failover timeout" % fid)
    if away["connected"] is True:
        problems.append("the master lists %s as connected with no process subscribed" % fid)
    if away["task_states"] and away["task_states"] != ["TASK_RUNNING"]:
        problems.append("task states while away: %s" % away["task_states"])
    two = common.Child("second", [me, "--phase", "second", "--framework-id", fid]
                       + common_args).result(args.deadline / 2)
    if not two.get("ok"):
        problems.append("second life: %s" % (two.get("error") or two.get("problems")))
    common.finish(not problems, problems=problems, framework_id=fid,
                  resubscribed_as=two.get("framework_id"), reconciled=two.get("reconciled"),
                  killed=two.get("killed"), while_away=away)


def main():
    p = common.parser(__doc__)
    p.add_argument("--phase", choices=["all", "first", "second"], default="all")
    p.add_argument("--framework-id")
    p.add_argument("--failover-timeout", type=float, default=60.0)
    args = p.parse_args()
    {"all": orchestrate, "first": first, "second": second}[args.phase](args)


if __name__ == "__main__":
    main()

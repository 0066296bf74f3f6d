"""HTTP Basic credentials on the scheduler API, with pymesos, against a master that has a
credentials file (principal/secret pairs). Each case is its own process:

* holder: the first principal with its secret subscribes, launches a long task and holds it;
* wrong secret and no credentials at all: refused (pymesos raises on the 401, or gets an
  ERROR event) and never registered;
* the second principal with its own right secret: registers a framework of its own (so its
  credentials are good) and tears it down;
* takeover: the second principal subscribes with the holder's framework id: refused; then it
  posts KILL for the holder's task with the holder's stream id: the task survives;
* the holder then checks it was never failed over or disconnected, that its task is still
  TASK_RUNNING (explicit reconcile), kills it and tears down.

    credentials.py HOST:PORT --principal P --secret S --other-principal P2 --other-secret S2
"""

import os
import sys
import threading

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from pymesos import MesosSchedulerDriver, Scheduler  # noqa: E402

import common  # noqa: E402

TASK_ID = "held-task"


class Holder(Scheduler):
    def __init__(self, verdict):
        self.verdict = verdict
        self.launched = False
        self.framework_id = None
        self.errors = []
        self.disconnects = 0
        self.reconciled = threading.Event()
        self.reconciled_state = None
        self.killed = threading.Event()
        self.states = []

    def registered(self, driver, framework_id, master_info):
        self.framework_id = framework_id["value"]

    def reregistered(self, driver, master_info):
        self.errors.append("re-subscribed (the stream was lost or taken over)")

    def disconnected(self, driver):
        self.disconnects += 1

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
        state = status["state"]
        self.states.append(state)
        common.emit("update", task=status["task_id"]["value"], state=state,
                    reconcile="uuid" not in status)
        if "uuid" not in status:
            self.reconciled_state = state
            self.reconciled.set()
        elif state == "TASK_RUNNING":
            self.verdict.ok()
        elif state == "TASK_KILLED":
            self.killed.set()

    def error(self, driver, message):
        self.errors.append("ERROR event: %s" % message)
        self.verdict.fail("ERROR event: %s" % message)


def holder(args):
    verdict = common.Verdict()
    sched = Holder(verdict)
    driver = MesosSchedulerDriver(
        sched, common.framework_info("py-credentials-holder"), args.master,
        principal=args.principal, secret=args.secret)
    why = common.run_until(driver, verdict, args.deadline)
    if why or verdict.failure:
        common.stop(driver)
        common.deadline_exit(why or verdict.failure)
    common.emit("holding", framework_id=sched.framework_id, stream_id=driver.stream_id,
                task_id=TASK_ID)
    # Hold until the orchestrator has tried everything (a line on stdin, or EOF).
    sys.stdin.readline()
    problems = list(sched.errors)
    if sched.disconnects:
        problems.append("disconnected %d times while holding" % sched.disconnects)
    driver.reconcileTasks([dict(task_id=dict(value=TASK_ID))])
    if not sched.reconciled.wait(10):
        problems.append("no answer to reconcile")
    elif sched.reconciled_state != "TASK_RUNNING":
        problems.append("held task is %s, wanted TASK_RUNNING" % sched.reconciled_state)
    driver.killTask(dict(value=TASK_ID))
    if not sched.killed.wait(10):
        problems.append("own KILL did not end the task")
    common.stop(driver)
    if not common.framework_gone(args.master, sched.framework_id, args.principal, args.secret):
        problems.append("framework still active after TEARDOWN")
    common.finish(not problems, problems=problems, framework_id=sched.framework_id,
                  states=sched.states)


class Attempt(Scheduler):
    """Subscribes and records whether the master took it or refused it."""

    def __init__(self, verdict):
        self.verdict = verdict
        self.outcome = None

    def registered(self, driver, framework_id, master_info):
        self.outcome = ("registered", framework_id["value"])
        self.verdict.ok()

    def reregistered(self, driver, master_info):
        self.outcome = ("registered", driver.framework_id)
        self.verdict.ok()

    def resourceOffers(self, driver, offers):
        for offer in offers:
            driver.declineOffer(offer["id"], dict(refuse_seconds=60.0))

    def error(self, driver, message):
        if self.outcome is None:
            self.outcome = ("refused", "ERROR event: %s" % message)
        self.verdict.ok()

    def disconnected(self, driver):
        if self.outcome is None:
            self.outcome = ("refused", "stream closed before SUBSCRIBED")
            self.verdict.ok()


def attempt(args):
    """One subscription; the result says whether it went as --expect says."""
    verdict = common.Verdict()
    sched = Attempt(verdict)
    info = common.framework_info("py-credentials-" + args.phase)
    if args.framework_id:
        info["id"] = dict(value=args.framework_id)
    driver = MesosSchedulerDriver(sched, info, args.master,
                                  principal=args.principal, secret=args.secret)
    why = common.run_until(driver, verdict, args.deadline)
    if why and why.startswith("driver error"):
        sched.outcome = ("refused", why)  # e.g. "Failed with HTTP 401"
    outcome = sched.outcome or ("nothing", why or "no answer")
    # A framework of our own goes (TEARDOWN); never tear down one we must not own.
    common.stop(driver, failover=outcome[0] != "registered" or bool(args.framework_id))
    extra = {}
    if args.phase == "takeover" and args.stream_id:
        extra["kill_status"] = post_kill(args)
    common.emit("outcome", outcome=outcome[0], detail=outcome[1], **extra)
    common.finish(outcome[0] == args.expect, outcome=outcome[0], detail=outcome[1], **extra)


def post_kill(args):
    """KILL for the holder's task under the other principal, with the holder's stream id:
    what a framework of another principal could try. Returns the HTTP status."""
    import json
    from http.client import HTTPConnection
    host, port = args.master.rsplit(":", 1)
    body = json.dumps(dict(type="KILL", framework_id=dict(value=args.framework_id),
                           kill=dict(task_id=dict(value=TASK_ID))))
    headers = {"Content-Type": "application/json", "Mesos-Stream-Id": args.stream_id,
               "Authorization": "Basic " + common.b64("%s:%s" % (args.principal, args.secret))}
    conn = HTTPConnection(host, int(port), timeout=10)
    try:
        conn.request("POST", "/api/v1/scheduler", body=body, headers=headers)
        resp = conn.getresponse()
        resp.read()
        return resp.status
    except OSError as e:
        return "error: %s" % e
    finally:
        conn.close()


def orchestrate(args):
    me = os.path.abspath(__file__)
    step = args.deadline / 6

    def argv(phase, principal, secret, expect, *extra):
        a = [me, args.master, "--phase", phase, "--expect", expect, "--deadline", str(step)]
        if principal is not None:
            a += ["--principal", principal, "--secret", secret]
        return a + list(extra)

    hold = common.Child("holder", argv("holder", args.principal, args.secret, "registered"))
    held = hold.wait_for("holding", step)
    if held is None or held.get("event") != "holding":
        hold.kill()
        common.finish(False, problems=["the holder never held its task: %s" % held])
    fid, stream = held["framework_id"], held["stream_id"]
    cases = {
        "wrong_secret": argv("wrong", args.principal, args.secret + "-wrong", "refused"),
        "no_credentials": argv("none", None, None, "refused"),
        "other_principal_own_framework": argv("other", args.other_principal,
                                              args.other_secret, "registered"),
        "other_principal_takeover": argv("takeover", args.other_principal, args.other_secret,
                                         "refused", "--framework-id", fid,
                                         "--stream-id", stream or ""),
    }
    problems, outcomes = [], {}
    for name, a in cases.items():
        r = common.Child(name, a).result(step + 5)
        outcomes[name] = {k: r.get(k) for k in ("outcome", "detail", "kill_status", "error")}
        if not r.get("ok"):
            problems.append("%s: %s" % (name, r.get("outcome") or r.get("error")))
    hold.tell("check")
    r = hold.result(step + 15)
    outcomes["holder"] = {k: r.get(k) for k in ("problems", "error", "states")}
    if not r.get("ok"):
        problems.append("holder: %s" % (r.get("problems") or r.get("error")))
    common.finish(not problems, problems=problems, framework_id=fid, outcomes=outcomes)


def main():
    p = common.parser(__doc__)
    p.add_argument("--phase", default="all",
                   choices=["all", "holder", "wrong", "none", "other", "takeover"])
    p.add_argument("--expect", choices=["registered", "refused"], default="registered")
    p.add_argument("--other-principal")
    p.add_argument("--other-secret")
    p.add_argument("--framework-id")
    p.add_argument("--stream-id")
    args = p.parse_args()
    if args.phase == "all":
        if None in (args.principal, args.secret, args.other_principal, args.other_secret):
            p.error("--principal, --secret, --other-principal and --other-secret are needed")
        orchestrate(args)
    elif args.phase == "holder":
        holder(args)
    else:
        attempt(args)


if __name__ == "__main__":
    main()

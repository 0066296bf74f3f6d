"""Tiny-task benchmark through the Mesos scheduler API with pymesos: N no-op command tasks
(``true``), at most --in-flight at once (0: as many as the offers hold; 1: one task's
launch -> TASK_FINISHED round trip alone). Prints the same numbers as the native SDK's
``bramble bench tasks`` (tasks/s from the first launch to the last FINISHED, launch ->
FINISHED latency percentiles) as the final JSON line, for bench/mesos.sh.

    bench_tasks.py HOST:PORT [--count N] [--in-flight K] [--deadline S]
"""

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from pymesos import MesosSchedulerDriver, Scheduler  # noqa: E402

import common  # noqa: E402

NEED_CPUS, NEED_MEM = 0.01, 1
TERMINAL = {"TASK_FINISHED", "TASK_FAILED", "TASK_KILLED", "TASK_LOST", "TASK_ERROR",
            "TASK_DROPPED", "TASK_GONE", "TASK_GONE_BY_OPERATOR", "TASK_UNKNOWN"}


class Tiny(Scheduler):
    def __init__(self, count, in_flight, verdict):
        self.count = count
        self.in_flight = in_flight
        self.verdict = verdict
        self.launched = self.finished = self.failed = 0
        self.started_at = {}
        self.latencies = []
        self.first_launch = self.last_finish = None

    def resourceOffers(self, driver, offers):
        for offer in offers:
            cpus, mem = common.scalar(offer, "cpus"), common.scalar(offer, "mem")
            tasks = []
            now = time.monotonic()
            while (self.launched < self.count and cpus >= NEED_CPUS and mem >= NEED_MEM
                   and (self.in_flight == 0
                        or self.launched - self.finished - self.failed < self.in_flight)):
                tid = "tiny-%d" % self.launched
                self.launched += 1
                self.started_at[tid] = now
                tasks.append(dict(name="tiny", task_id=dict(value=tid),
                                  agent_id=offer["agent_id"],
                                  resources=common.resources(NEED_CPUS, NEED_MEM),
                                  command=dict(value="true")))
                cpus -= NEED_CPUS
                mem -= NEED_MEM
            if tasks:
                if self.first_launch is None:
                    self.first_launch = now
                driver.launchTasks(offer["id"], tasks, dict(refuse_seconds=0.0))
            else:
                driver.declineOffer(offer["id"], dict(refuse_seconds=1.0))

    def statusUpdate(self, driver, status):
        if status["state"] not in TERMINAL:
            return
        t0 = self.started_at.pop(status["task_id"]["value"], None)
        if t0 is None:
            return
        self.latencies.append((time.monotonic() - t0) * 1000.0)
        if status["state"] == "TASK_FINISHED":
            self.finished += 1
        else:
            self.failed += 1
        if self.finished + self.failed == self.count:
            self.last_finish = time.monotonic()
            self.verdict.ok()

    def error(self, driver, message):
        self.verdict.fail("ERROR event: %s" % message)


def percentile(sorted_ms, p):
    if not sorted_ms:
        return 0.0
    return sorted_ms[int(round((len(sorted_ms) - 1) * p))]


def main():
    p = common.parser(__doc__)
    p.add_argument("--count", type=int, default=1000)
    p.add_argument("--in-flight", type=int, default=0)
    args = p.parse_args()
    verdict = common.Verdict()
    sched = Tiny(args.count, args.in_flight, verdict)
    driver = MesosSchedulerDriver(sched, common.framework_info(args.name or "py-bench"),
                                  args.master, principal=args.principal, secret=args.secret)
    why = common.run_until(driver, verdict, args.deadline)
    common.stop(driver)
    if why or verdict.failure:
        common.deadline_exit(why or verdict.failure, finished=sched.finished,
                             failed=sched.failed)
    lat = sorted(sched.latencies)
    wall = sched.last_finish - sched.first_launch
    common.finish(sched.failed == 0, path="MesosCommand", tasks=args.count,
                  in_flight=args.in_flight, wall_s=wall,
                  tasks_per_s=args.count / wall if wall > 0 else 0.0,
                  latency_p50_ms=percentile(lat, 0.5), latency_p99_ms=percentile(lat, 0.99),
                  failed=sched.failed)


if __name__ == "__main__":
    main()

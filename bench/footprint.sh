#!/usr/bin/env bash
# Footprint (issues 3 and 15): a master and two agents as real processes on loopback (release
# build, default logging, agents of 1 CPU and 512 MiB):
#   1. idle: resident memory of the three together and CPU of each over an IDLE-second window
#      after both agents registered (targets: <= 30 MiB together, <= 0.5% of a core each);
#   2. then N no-op tasks through the custom executor against that cluster
#      (`bramble bench tasks --existing`), and, once it has settled (polled with a deadline:
#      the framework gone, no tasks, no executors, nothing allocated in the master's state, and
#      no child processes left under either agent), resident memory again:
#      back within 10% of idle (finished tasks and their updates are forgotten once
#      acknowledged, so nothing may grow per task). A second run of N follows: memory that
#      grows again with it grows per task; memory that stays is a one-off high-water mark.
#      "After" is measured like idle, over a QUIET-second window once settled (CPU over the
#      window, RSS at its end): the master and agent give a burst's freed memory back to the
#      OS in the first quiet second after it (bramble_proto::memory). The RSS at the moment
#      the cluster settled is reported beside it (`rss_mib_at_settle`).
# Prints one JSON object. bench/realcluster.py starts and tears down the processes.
#
# Usage: bench/footprint.sh [--short] [IDLE seconds, default 30] [N tasks, default 10000]
#   --short: IDLE=5, N=1000 (same release build): a quick look, not the figure of record.
# QUIET is 5 s either way. BRAMBLE_BIN=DIR measures the binaries in DIR instead of building
# (to compare two builds on one machine, interleaved).
set -euo pipefail
cd "$(dirname "$0")/.."
short=0
if [ "${1:-}" = --short ]; then short=1; shift; fi
if [ "$short" = 1 ]; then idle=${1:-5}; count=${2:-1000}; else idle=${1:-30}; count=${2:-10000}; fi
bin=${BRAMBLE_BIN:-}
if [ -z "$bin" ]; then
  cargo build --release -q --locked -p bramble -p bramble-master -p bramble-agent
  bin=target/release
fi
exec python3 - "$bin" "$idle" "$count" <<'PY'
import json, sys, time
sys.path.insert(0, "bench")
from realcluster import HZ, RealCluster, cpu_ticks, rss_mib, wait_until

B, idle_s, count = sys.argv[1], float(sys.argv[2]), int(sys.argv[3])
quiet_s = 5.0

with RealCluster(B, agents=2, cpus=1, mem=512, prefix="bramble-footprint-") as c:
    def rss_all():
        r = {name: round(rss_mib(p.pid), 2) for name, p in c.procs.items()}
        r["total"] = round(sum(r.values()), 2)
        return r

    def window(seconds):
        """CPU of each process over `seconds`, and RSS at the end."""
        t0 = {n: cpu_ticks(p.pid) for n, p in c.procs.items()}
        time.sleep(seconds)  # the measurement window itself, not a wait for an event
        t1 = {n: cpu_ticks(p.pid) for n, p in c.procs.items()}
        cpu = {n: round(100 * (t1[n] - t0[n]) / HZ / seconds, 3) for n in c.procs}
        return rss_all(), cpu

    idle_rss, idle_cpu = window(idle_s)

    def run_and_settle():
        run = c.bench_tasks("--path", "executor", "--count", str(count))
        started = time.monotonic()
        wait_until("the cluster to settle after the run", c.settled, 60)
        settle_s, at_settle = time.monotonic() - started, rss_all()
        rss, cpu = window(quiet_s)
        return run, settle_s, at_settle, rss, cpu
    run, settle_s, settle_rss, after_rss, after_cpu = run_and_settle()
    # A second run tells a one-off high-water mark (allocator, buffers) from growth per task.
    run2, settle2_s, settle2_rss, after2_rss, after2_cpu = run_and_settle()

    growth = 100 * (after_rss["total"] / idle_rss["total"] - 1)
    report = {
        "cluster": "master + 2 agents (1 CPU, 512 MiB each), release, real processes on loopback",
        "idle": {
            "window_s": idle_s,
            "rss_mib": idle_rss,
            "cpu_pct_of_core": idle_cpu,
            "target": {"rss_mib.total": "<= 30", "cpu_pct_of_core": "<= 0.5 each"},
            "met": {"rss_mib.total": idle_rss["total"] <= 30,
                    "cpu_pct_of_core": all(v <= 0.5 for v in idle_cpu.values())},
        },
        "after_tasks": {
            "tasks": count,
            "run": {k: run[k] for k in ("tasks_per_s", "latency_p50_ms", "latency_p99_ms",
                                        "in_flight_max_seen", "failed")},
            "settle_s": round(settle_s, 2),
            "settled_when": "master: no tasks, no connected framework, no executors, nothing "
                            "allocated; agents: no child processes",
            "quiet_window_s": quiet_s,
            "rss_mib_at_settle": settle_rss,
            "rss_mib": after_rss,
            "cpu_pct_of_core": after_cpu,
            "growth_pct": round(growth, 2),
            "growth_pct_at_settle": round(100 * (settle_rss["total"] / idle_rss["total"] - 1), 2),
            "target": "rss_mib.total within 10% of idle",
            "met": growth <= 10,
        },
        "after_second_run": {
            "tasks": count,
            "run": {k: run2[k] for k in ("tasks_per_s", "latency_p50_ms", "latency_p99_ms",
                                         "failed")},
            "settle_s": round(settle2_s, 2),
            "rss_mib_at_settle": settle2_rss,
            "rss_mib": after2_rss,
            "cpu_pct_of_core": after2_cpu,
            "growth_pct_vs_idle": round(100 * (after2_rss["total"] / idle_rss["total"] - 1), 2),
            "kib_per_task_vs_first_run": round(
                1024 * (after2_rss["total"] - after_rss["total"]) / count, 3),
        },
    }
    report["all_met"] = all([*report["idle"]["met"].values(), report["after_tasks"]["met"]])
    print(json.dumps(report, indent=1))
    if run["failed"] or run2["failed"]:
        sys.exit(1)
PY

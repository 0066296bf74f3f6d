#!/usr/bin/env bash
# Where the tiny-task path spends its CPU (issue 15): a master and two agents (1 CPU each) as
# real processes (bench/realcluster.py), N no-op tasks through the custom executor
# (`bramble bench tasks --existing`) and, once the executors are up, `perf record -g` for SECS
# seconds on the master, the agents, their executors and the bench framework at once. Prints
# one JSON object: for each process the CPU it used in the window (seconds and % of a core),
# its top symbols by self time (`perf report --no-children`, relative to that process) and,
# from a second window of `perf trace -s`, the syscalls its threads spent most time in
# (blocking ones such as fsync included: the path may wait more than it computes); for each
# executor, the CFS throttling of its cgroup during the record window.
# perf.data stays in OUT for `perf report -i OUT/perf.data` or flamegraphs.
#
# perf needs symbols and the release profile strips them, so this builds with
# CARGO_PROFILE_RELEASE_STRIP=false into its own target dir (target/profiling by default, a
# second release build; set PROFILE_TARGET_DIR to reuse one already built that way).
#
# Usage: bench/profile.sh [N tasks, default 10000] [SECS, default 5] [TOP, default 15] [OUT]
set -euo pipefail
cd "$(dirname "$0")/.."
command -v perf >/dev/null || { echo "bench/profile.sh needs perf (apt-get install linux-perf)" >&2; exit 1; }
count=${1:-10000}; secs=${2:-5}; top=${3:-15}
out=${4:-$(mktemp -d /tmp/bramble-profile-XXXXXX)}; mkdir -p "$out"
target=${PROFILE_TARGET_DIR:-target/profiling}
CARGO_TARGET_DIR=$target CARGO_PROFILE_RELEASE_STRIP=false \
  cargo build --release -q --locked -p bramble -p bramble-master -p bramble-agent
exec python3 - "$target/release" "$count" "$secs" "$top" "$out" <<'PY'
import json, os, re, subprocess, sys, time
sys.path.insert(0, "bench")
from realcluster import HZ, RealCluster, children, cpu_ticks, wait_until

B, count, secs, top, out = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
data = os.path.join(out, "perf.data")
LINE = re.compile(r"^\s*([\d.]+)%\s+(\S+)\s+\[(.)\]\s+(.*?)(\s+-\s+-)?\s*$")
SECTION = re.compile(r"^\s*(.+) \((\d+)\), \d+ events")
SYSCALL = re.compile(r"^\s*(\w+)\s+(\d+)\s+(\d+)\s+([\d.]+)\s+[\d.]+\s+[\d.]+\s+([\d.]+)")
# Where an idle thread sits: time in these is waiting for work, not work.
WAITS = {"epoll_wait", "epoll_pwait", "futex", "poll", "ppoll", "nanosleep",
         "clock_nanosleep", "wait4", "rt_sigtimedwait", "select", "pselect6"}

def top_symbols(pid):
    cmd = ["perf", "report", "-i", data, "--no-children", "--stdio", "-g", "none",
           "--percentage", "relative", "--pid", str(pid), "--sort", "dso,symbol"]
    rep = subprocess.run(cmd, capture_output=True, text=True)
    rows = []
    for line in rep.stdout.splitlines():
        m = LINE.match(line)
        if m:
            rows.append({"self_pct": float(m[1]), "dso": m[2],
                         "where": "kernel" if m[3] == "k" else "user", "symbol": m[4].strip()})
    return rows[:top]

def syscalls(text, tids):
    """`perf trace -s` output summed per process (threads mapped through `tids`)."""
    per, owner = {}, None
    for line in text.splitlines():
        m = SECTION.match(line)
        if m:
            owner = tids.get(int(m[2]))
            continue
        m = SYSCALL.match(line)
        if m and owner:
            row = per.setdefault(owner, {}).setdefault(m[1], {"calls": 0, "total_ms": 0.0,
                                                               "max_ms": 0.0})
            row["calls"] += int(m[2])
            row["total_ms"] += float(m[4])
            row["max_ms"] = max(row["max_ms"], float(m[5]))
    return {p: sorted(({"syscall": k, **v, "total_ms": round(v["total_ms"], 1)}
                       for k, v in rows.items() if k not in WAITS),
                      key=lambda r: -r["total_ms"])[:top] for p, rows in per.items()}

def cpu_cgroup(pid):
    """The cpu cgroup directory of `pid` (v1 `cpu` hierarchy or v2), None if not found."""
    try:
        with open(f"/proc/{pid}/cgroup") as f:
            lines = [l.rstrip("\n").split(":", 2) for l in f]
    except OSError:
        return None
    for _, controllers, path in lines:
        if "cpu" in controllers.split(","):
            for mount in ("/sys/fs/cgroup/cpu", "/sys/fs/cgroup/cpu,cpuacct"):
                if os.path.exists(mount + path):
                    return mount + path
    for _, controllers, path in lines:
        if controllers == "" and os.path.exists("/sys/fs/cgroup" + path + "/cpu.max"):
            return "/sys/fs/cgroup" + path
    return None

def throttling(d):
    """CFS quota and throttling counters of cgroup dir `d` (v1 or v2 names)."""
    if not d:
        return None
    out = {}
    try:
        with open(os.path.join(d, "cpu.stat")) as f:
            for line in f:
                k, v = line.split()
                out[k] = int(v)
        quota = os.path.join(d, "cpu.cfs_quota_us")
        if os.path.exists(quota):
            with open(quota) as f:
                q = int(f.read())
                out["quota_cpus"] = None if q < 0 else q / 100000
        else:
            with open(os.path.join(d, "cpu.max")) as f:
                q = f.read().split()[0]
                out["quota_cpus"] = None if q == "max" else int(q) / 100000
    except (OSError, ValueError):
        return None
    return out

def cgroup_delta(a, b):
    """Throttling within the record window: periods, throttled periods and time."""
    if not a or not b:
        return None
    d = {k: b[k] - a[k] for k in b if k in a and k != "quota_cpus"}
    return {"quota_cpus_at_end": b.get("quota_cpus"), "periods": d.get("nr_periods"),
            "throttled_periods": d.get("nr_throttled"),
            "throttled_ms": (d["throttled_time"] / 1e6 if "throttled_time" in d
                             else d.get("throttled_usec", 0) / 1e3)}

def thread_ids(procs):
    tids = {}
    for name, pid in procs.items():
        try:
            tids.update({int(t): name for t in os.listdir(f"/proc/{pid}/task")})
        except OSError:
            pass
    return tids

with RealCluster(B, agents=2, cpus=1, mem=512, prefix="bramble-profile-") as c:
    bench = c.bench_tasks("--path", "executor", "--count", str(count), wait=False)
    executors = wait_until("the executors to start",
                           lambda: [k for a in c.agents for k in children(c.pid(a))], 60, 0.05)
    procs = {n: p.pid for n, p in c.procs.items()}
    procs.update({f"executor_{i + 1}": pid for i, pid in enumerate(executors)})
    procs["bench"] = bench.pid
    before = {n: cpu_ticks(pid) for n, pid in procs.items()}
    # The agents put each executor in a cgroup with a CFS quota of its tasks' CPUs: a quota
    # that throttles shows as time stalled in the executor, not as work.
    groups = {n: cpu_cgroup(pid) for n, pid in procs.items() if n.startswith("executor_")}
    thr_before = {n: throttling(d) for n, d in groups.items()}
    perf = ["perf", "record", "-g", "-o", data, "-p", ",".join(map(str, procs.values())),
            "--", "sleep", str(secs)]
    rec = subprocess.run(perf, capture_output=True, text=True)
    after = {}
    for n, pid in procs.items():
        try:
            after[n] = cpu_ticks(pid)
        except OSError:
            after[n] = None  # ended inside the window
    thr_after = {n: throttling(d) for n, d in groups.items()}
    # Then where their threads block: syscalls by time spent in them (off-CPU included).
    tids = thread_ids(procs)
    trace_out = os.path.join(out, "trace.txt")
    tr = subprocess.run(["perf", "trace", "-s", "-o", trace_out, "-p",
                         ",".join(map(str, procs.values())), "--", "sleep", str(secs)],
                        capture_output=True, text=True)
    with open(trace_out) as f:
        by_syscall = syscalls(f.read(), tids) if tr.returncode == 0 else {}
    still_running = bench.poll() is None
    stdout, stderr = bench.communicate(timeout=900)
    if bench.returncode != 0 or rec.returncode != 0:
        raise SystemExit(f"bench or perf failed:\n{stderr[-2000:]}\n{rec.stderr[-2000:]}")
    run = json.loads(stdout.strip().splitlines()[-1])
    report = {
        "command": " ".join(perf),
        "report_command": f"perf report -i {data} --no-children --stdio -g none "
                          "--percentage relative --pid PID --sort dso,symbol",
        "trace_command": "perf trace -s -p PIDS -- sleep SECS (after the record window; "
                         "waits for work left out: " + ", ".join(sorted(WAITS)) + ")",
        "window_s": secs,
        "run_outlasted_window": still_running,
        "run": {k: run[k] for k in ("tasks", "tasks_per_s", "latency_p50_ms",
                                    "latency_p99_ms", "in_flight_max_seen", "failed")},
        "processes": {
            n: {"pid": pid,
                "cpu_s": None if after[n] is None else (after[n] - before[n]) / HZ,
                "cpu_pct_of_core": None if after[n] is None
                else round(100 * (after[n] - before[n]) / HZ / secs, 1),
                "top_self": top_symbols(pid),
                "syscalls_by_time": by_syscall.get(n, []),
                **({"cgroup_cpu": cgroup_delta(thr_before.get(n), thr_after.get(n))}
                   if n in groups else {})}
            for n, pid in procs.items()
        },
        "perf_data": data,
    }
    print(json.dumps(report, indent=1))
PY

#!/usr/bin/env bash
# Master restart benchmark (issue 6, durable master): 3 real agents on loopback, the master
# SIGKILLed and started again on the same state dir N times (default 5). Each run measures
# master process start -> all 3 agents re-registered, read from the restarted master's own log
# ("agent re-registered after master failover", timestamped by the master) and checked with
# `bramble agents --json` (3 agents, all connected, the same ids as before). Prints one JSON
# object (median/max in ms, target < 2000). Release binaries; the agents run with the
# default heartbeat interval (1 s), so this is what an operator would see.
# An agent notices the new master on its next packet (heartbeat), which the restarted master
# answers with a QUIC stateless reset; it then reconnects after 100 ms.
# Usage: bench/master_restart.sh [runs] [seconds the cluster stays up between kills, default 2;
# a random 0-1 s is added so kills fall at any phase of the heartbeats]
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-5}
settle=${2:-2}
cargo build --release -q --locked --bins
exec python3 - "$runs" "$settle" <<'PY'
import datetime, json, os, random, re, shutil, signal, socket, statistics, subprocess, sys, tempfile, time

runs, settle = int(sys.argv[1]), float(sys.argv[2])
B = os.path.abspath("target/release")
work = tempfile.mkdtemp(prefix="bramble-restart-")
cluster = os.path.join(work, "cluster")
procs = []

def free_port():
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port

def spawn(name, args):
    log = open(os.path.join(work, name + ".log"), "w")
    p = subprocess.Popen([os.path.join(B, args[0])] + args[1:], stdin=subprocess.DEVNULL,
                         stdout=subprocess.DEVNULL, stderr=log,
                         env=dict(os.environ, RUST_LOG="info", NO_COLOR="1"),
                         start_new_session=True)
    procs.append(p)
    return p, log.name

def cleanup():
    for p in procs:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()
    shutil.rmtree(work, ignore_errors=True)

def agents_json(port):
    out = subprocess.run([os.path.join(B, "bramble"), "--cluster", cluster,
                          "--master", f"127.0.0.1:{port}", "agents", "--json"],
                         capture_output=True, text=True, timeout=20)
    return json.loads(out.stdout) if out.returncode == 0 else None

def wait_until(what, check, deadline_s=30.0):
    until = time.monotonic() + deadline_s
    while time.monotonic() < until:
        v = check()
        if v:
            return v
        time.sleep(0.005)
    raise SystemExit(f"timed out after {deadline_s}s waiting for {what}")

STAMP = re.compile(r"^(\S+Z)\s+INFO .*agent re-registered after master failover")

def reregistered_at(log):
    """Master-side timestamps (Unix seconds) of agents re-registering after failover."""
    stamps = []
    with open(log) as f:
        for line in f:
            m = STAMP.match(line)
            if m:
                t = datetime.datetime.fromisoformat(m.group(1).replace("Z", "+00:00"))
                stamps.append(t.timestamp())
    return stamps

try:
    subprocess.run([os.path.join(B, "bramble"), "cluster", "init", cluster, "--name", "bench"],
                   check=True, stdout=subprocess.DEVNULL)
    port = free_port()
    state = os.path.join(work, "master-state")
    open(os.path.join(work, "master.toml"), "w").close()
    master_args = ["bramble-master", "--cluster", cluster, "--listen", f"127.0.0.1:{port}",
                   "--http", "127.0.0.1:0", "--state-dir", state,
                   "--config", os.path.join(work, "master.toml")]
    master, _ = spawn("master-0", master_args)
    for i in range(3):
        open(os.path.join(work, f"agent{i}.toml"), "w").close()
        spawn(f"agent{i}", ["bramble-agent", "--cluster", cluster, "--master",
                            f"127.0.0.1:{port}", "--work-dir", os.path.join(work, f"agent{i}"),
                            "--cpus", "1", "--mem", "256", "--no-cgroups",
                            "--config", os.path.join(work, f"agent{i}.toml")])

    def connected():
        a = agents_json(port)
        return a if a and len(a) == 3 and all(x["connected"] for x in a) else None
    first = wait_until("3 agents registered", connected)
    ids = sorted(a["id"] for a in first)

    took = []
    for run in range(1, runs + 1):
        # The cluster runs a while before each crash, as it would, at a random phase of the
        # agents' heartbeats (an agent notices the new master on its next packet).
        time.sleep(settle + random.random())
        os.killpg(master.pid, signal.SIGKILL)
        master.wait()
        started = time.time()
        master, log = spawn(f"master-{run}", master_args)
        stamps = wait_until(f"run {run}: 3 agents re-registered",
                            lambda: (lambda s: s if len(s) >= 3 else None)(reregistered_at(log)))
        back = wait_until(f"run {run}: 3 agents connected (operator API)", connected)
        assert sorted(a["id"] for a in back) == ids, (ids, back)
        took.append((max(stamps[:3]) - started) * 1000.0)
    print(json.dumps({
        "master_restart": {
            "runs": runs,
            "agents": 3,
            "seconds_up_between_kills": f"{settle} + U(0,1)",
            "start_to_all_reregistered_ms": {
                "median": round(statistics.median(took), 1),
                "max": round(max(took), 1),
                "min": round(min(took), 1),
                "each": [round(t, 1) for t in took],
            },
            "agent_heartbeat_interval_ms": 1000,
            "target": "max < 2000 ms",
        }
    }, indent=1))
finally:
    cleanup()
PY

#!/usr/bin/env bash
# Mesos-API task benchmark (issue 14): a pymesos framework (tests/mesos/bench_tasks.py, the
# Mesos v1 scheduler API over HTTP) next to the native SDK (`bramble bench tasks --existing`,
# QUIC) in the same run, on the same cluster: one master and one agent as real processes on
# loopback. Both run no-op command tasks (`true`): N as fast as the offers allow (tasks/s,
# launch->FINISHED p50/p99), then M one at a time (the round trip launch->FINISHED alone).
# The order alternates native, Mesos, native, Mesos so drift hits both. Prints one JSON object
# with each side's numbers and the Mesos/native ratios. Status updates stay durable on both
# paths (the agent fsyncs before sending); pymesos acknowledges each update with an HTTP call.
#
# Usage: bench/mesos.sh [--short] [N tasks, default 1000] [M round trips, default 100]
#   --short: debug binaries (the ones CI builds anyway), N=40, M=5, no cgroups: a few
#   seconds, run by .ci/run to keep the script working.
set -euo pipefail
cd "$(dirname "$0")/.."
short=0
if [ "${1:-}" = --short ]; then short=1; shift; fi
if [ "$short" = 1 ]; then
  cargo build -q --locked --bins
  B=target/debug
  count=${1:-40}; trips=${2:-5}
else
  cargo build --release -q --locked --bins
  B=target/release
  count=${1:-1000}; trips=${2:-100}
fi
tests/mesos/setup-venv.sh
venv=${BRAMBLE_MESOS_VENV:-tests/mesos/.venv}
exec python3 - "$B" "$count" "$trips" "$short" "$venv" <<'PY'
import json, os, shutil, signal, socket, subprocess, sys, tempfile, time

B, count, trips, short, venv = (os.path.abspath(sys.argv[1]), int(sys.argv[2]),
                                int(sys.argv[3]), sys.argv[4] == "1", os.path.abspath(sys.argv[5]))
work = tempfile.mkdtemp(prefix="bramble-mesos-bench-")
cluster = os.path.join(work, "cluster")
procs = []

def free_port(kind):
    s = socket.socket(socket.AF_INET, kind)
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port

def spawn(name, args):
    log = open(os.path.join(work, name + ".log"), "w")
    p = subprocess.Popen([os.path.join(B, args[0])] + args[1:], stdin=subprocess.DEVNULL,
                         stdout=subprocess.DEVNULL, stderr=log,
                         env=dict(os.environ, RUST_LOG="warn", NO_COLOR="1"),
                         start_new_session=True)
    procs.append(p)
    return p

def cleanup():
    for p in procs:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()
    shutil.rmtree(work, ignore_errors=True)

def wait_until(what, check, deadline_s=30.0):
    until = time.monotonic() + deadline_s
    while time.monotonic() < until:
        v = check()
        if v:
            return v
        time.sleep(0.05)
    raise SystemExit(f"timed out after {deadline_s}s waiting for {what}")

def last_json(out, what):
    for line in reversed(out.strip().splitlines()):
        try:
            return json.loads(line)
        except ValueError:
            continue
    raise SystemExit(f"{what} printed no JSON")

try:
    subprocess.run([os.path.join(B, "bramble"), "cluster", "init", cluster, "--name", "bench"],
                   check=True, stdout=subprocess.DEVNULL)
    quic, http, agent_http = free_port(socket.SOCK_DGRAM), free_port(socket.SOCK_STREAM), \
        free_port(socket.SOCK_STREAM)
    master_toml = os.path.join(work, "master.toml")
    # The throwaway cluster's pace (`bramble bench tasks` without --existing).
    with open(master_toml, "w") as f:
        f.write("heartbeat_interval_ms = 500\nagent_timeout_secs = 5\n"
                "allocation_interval_ms = 250\n")
    spawn("master", ["bramble-master", "--cluster", cluster, "--listen", f"127.0.0.1:{quic}",
                     "--http", f"127.0.0.1:{http}", "--state-dir", os.path.join(work, "state"),
                     "--config", master_toml])
    agent_toml = os.path.join(work, "agent.toml")
    with open(agent_toml, "w") as f:
        f.write(f"heartbeat_interval_ms = 500\n[mesos]\nlisten = \"127.0.0.1:{agent_http}\"\n")
    spawn("agent", ["bramble-agent", "--cluster", cluster, "--master", f"127.0.0.1:{quic}",
                    "--work-dir", os.path.join(work, "agent"), "--cpus", "2", "--mem", "4096",
                    "--config", agent_toml] + (["--no-cgroups"] if short else []))
    op = [os.path.join(B, "bramble"), "--cluster", cluster, "--master", f"127.0.0.1:{quic}"]

    def agent_up():
        out = subprocess.run(op + ["agents", "--json"], capture_output=True, text=True,
                             timeout=20)
        if out.returncode != 0:
            return None
        agents = json.loads(out.stdout)
        return agents if len(agents) == 1 and agents[0]["connected"] else None
    wait_until("the agent registered", agent_up)

    def native(n, in_flight):
        out = subprocess.run(op + ["bench", "tasks", "--existing", "--path", "command",
                                   "--count", str(n), "--in-flight", str(in_flight)],
                             capture_output=True, text=True, timeout=600)
        if out.returncode != 0:
            raise SystemExit(f"bramble bench tasks failed:\n{out.stderr}")
        return last_json(out.stdout, "bramble bench tasks")

    def mesos(n, in_flight):
        out = subprocess.run([os.path.join(venv, "bin/python"), "tests/mesos/bench_tasks.py",
                              f"127.0.0.1:{http}", "--count", str(n),
                              "--in-flight", str(in_flight), "--deadline", "540"],
                             capture_output=True, text=True, timeout=600,
                             env=dict(os.environ, PYTHONPATH=os.path.join(venv, "pure")))
        r = last_json(out.stdout, "bench_tasks.py")
        if out.returncode != 0 or not r.get("ok"):
            raise SystemExit(f"bench_tasks.py failed: {r}\n{out.stderr[-3000:]}")
        return {k: v for k, v in r.items() if k not in ("event", "ok")}

    nat_tp = native(count, 0)
    mes_tp = mesos(count, 0)
    nat_rt = native(trips, 1)
    mes_rt = mesos(trips, 1)

    def ratio(a, b):
        return round(a / b, 3) if b else None
    print(json.dumps({
        "cluster": "1 master + 1 agent (2 cpus), real processes on loopback"
                   + (", debug build, no cgroups (--short)" if short else ", release build"),
        "throughput": {
            "native_sdk": nat_tp,
            "mesos_pymesos": mes_tp,
            "mesos_over_native_tasks_per_s": ratio(mes_tp["tasks_per_s"],
                                                   nat_tp["tasks_per_s"]),
        },
        "round_trip_one_at_a_time": {
            "native_sdk": nat_rt,
            "mesos_pymesos": mes_rt,
            "mesos_over_native_p50": ratio(mes_rt["latency_p50_ms"], nat_rt["latency_p50_ms"]),
        },
        "note": "bench/tasks.sh is the native path's before/after control (throwaway cluster)",
    }, indent=1))
finally:
    cleanup()
PY

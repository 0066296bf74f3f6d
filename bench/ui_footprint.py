#!/usr/bin/env python3
"""UI footprint benchmark: the master's RSS and CPU during a pi job with the web UI open in
headless Chromium (page loaded, event stream connected) against the same job without it.

Each run starts a fresh master and two agents (real processes on loopback), runs
`bramble pi` to the end, and samples the master's /proc every 100 ms. Runs alternate
without/with so drift hits both; medians are reported. One JSON object on stdout.
Target (issue 8): the UI adds <= 2 MiB RSS and <= 1% of a core.

    python3 bench/ui_footprint.py [--debug] [--runs N] [--terms 2e10] [--tasks 64]

Needs Chromium (/usr/bin/chromium or $CHROMIUM) and `npm ci --prefix tests/browser`.
Uses release binaries unless --debug (the build the tests use).
"""
import argparse, json, os, signal, socket, statistics, subprocess, sys, tempfile, time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CLK = os.sysconf("SC_CLK_TCK")


def free_port(kind):
    s = socket.socket(socket.AF_INET, kind)
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK  # utime + stime


def status_kib(pid, key):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return 0


def wait_for(what, check, timeout=30.0):
    until = time.time() + timeout
    while time.time() < until:
        try:
            if check():
                return
        except Exception:
            pass
        time.sleep(0.1)
    raise SystemExit(f"timed out waiting for {what}")


def run(bins, mode, args, work):
    quic, http = free_port(socket.SOCK_DGRAM), free_port(socket.SOCK_STREAM)
    d = tempfile.mkdtemp(prefix=f"{mode}-", dir=work)
    empty = os.path.join(d, "empty.toml")
    open(empty, "w").close()
    cluster = os.path.join(work, "cluster")
    log = open(os.path.join(d, "processes.log"), "w")
    procs = []

    def spawn(cmd, **kw):
        p = subprocess.Popen(cmd, stdout=kw.pop("stdout", subprocess.DEVNULL), stderr=log,
                             start_new_session=True, **kw)
        procs.append(p)
        return p

    try:
        master = spawn([f"{bins}/bramble-master", "--config", empty, "--cluster", cluster,
                        "--listen", f"127.0.0.1:{quic}", "--http", f"127.0.0.1:{http}",
                        "--state-dir", os.path.join(d, "state")])
        for i in range(2):
            spawn([f"{bins}/bramble-agent", "--config", empty, "--cluster", cluster,
                   "--master", f"127.0.0.1:{quic}", "--work-dir", os.path.join(d, f"agent-{i}"),
                   "--cpus", "1", "--mem", "512", "--no-cgroups"])
        base = f"http://127.0.0.1:{http}"
        wait_for("two agents", lambda: json.load(urllib.request.urlopen(f"{base}/health"))["agents"] == 2)
        if mode == "with":
            page = spawn(["node", os.path.join(ROOT, "tests/browser/hold.mjs"), base],
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
            line = page.stdout.readline().strip()
            if line != "ready":
                raise SystemExit(f"the page did not connect: {line!r}")
        time.sleep(1.0)  # let start-up settle
        rss_start = status_kib(master.pid, "VmRSS")
        cpu0, t0 = cpu_seconds(master.pid), time.time()
        job = subprocess.Popen([f"{bins}/bramble", "--master", f"127.0.0.1:{quic}", "--cluster",
                                cluster, "pi", "--terms", args.terms, "--tasks", args.tasks,
                                "--executor", f"{bins}/bramble", "--json"],
                               stdout=subprocess.PIPE, stderr=log, text=True)
        rss_max = rss_start
        while job.poll() is None:
            rss_max = max(rss_max, status_kib(master.pid, "VmRSS"))
            time.sleep(0.1)
        wall = time.time() - t0
        cpu = cpu_seconds(master.pid) - cpu0
        if job.returncode != 0:
            raise SystemExit(f"pi job failed ({job.returncode}); see {log.name}")
        return {
            "wall_s": round(wall, 2),
            "master_cpu_s": round(cpu, 3),
            "master_cpu_pct_of_core": round(100 * cpu / wall, 3),
            "rss_start_kib": rss_start,
            "rss_max_kib": rss_max,
            "vm_hwm_kib": status_kib(master.pid, "VmHWM"),
        }
    finally:
        for p in reversed(procs):
            try:
                os.killpg(p.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        for p in procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--debug", action="store_true")
    ap.add_argument("--runs", type=int, default=2)
    ap.add_argument("--terms", default="2e10")
    ap.add_argument("--tasks", default="64")
    args = ap.parse_args()
    profile = [] if args.debug else ["--release"]
    subprocess.run(["cargo", "build", "--quiet", "--locked", "--bins", *profile], cwd=ROOT, check=True)
    target = os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target"))
    bins = os.path.join(target, "debug" if args.debug else "release")
    with tempfile.TemporaryDirectory(prefix="bramble-ui-bench-") as work:
        subprocess.run([f"{bins}/bramble", "cluster", "init", os.path.join(work, "cluster")],
                       check=True, stdout=subprocess.DEVNULL)
        results = {"without": [], "with": []}
        for _ in range(args.runs):
            for mode in ("without", "with"):
                results[mode].append(run(bins, mode, args, work))
                print(f"{mode}: {results[mode][-1]}", file=sys.stderr)

    def med(mode, key):
        return round(statistics.median(r[key] for r in results[mode]), 3)

    rss_delta = med("with", "rss_max_kib") - med("without", "rss_max_kib")
    cpu_delta = med("with", "master_cpu_pct_of_core") - med("without", "master_cpu_pct_of_core")
    print(json.dumps({
        "benchmark": "ui_footprint",
        "profile": "debug" if args.debug else "release",
        "terms": args.terms, "tasks": args.tasks, "agents": 2, "runs": args.runs,
        "without_ui": {k: med("without", k) for k in results["without"][0]},
        "with_ui": {k: med("with", k) for k in results["with"][0]},
        "ui_adds": {"rss_max_kib": rss_delta, "cpu_pct_of_core": round(cpu_delta, 3)},
        "target": {"rss_kib": 2048, "cpu_pct_of_core": 1.0},
        "meets_target": rss_delta <= 2048 and cpu_delta <= 1.0,
        "runs_detail": results,
    }, indent=2))


if __name__ == "__main__":
    main()

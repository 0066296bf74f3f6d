"""A master and agents as real processes on loopback, for the bench scripts that measure the
processes themselves (bench/footprint.sh, bench/profile.sh): a fresh cluster identity in a temp
dir, free ports, each process in its own session with its log in the temp dir, and a
`bramble` operator command line for it. Everything goes (SIGKILL to each process group, the
temp dir removed) on `close()`; use it as a context manager.

Process figures come from /proc: CPU ticks (utime + stime), resident memory, children.
"""
import json, os, shutil, signal, socket, subprocess, tempfile, time

HZ = os.sysconf("SC_CLK_TCK")


def free_port(kind):
    s = socket.socket(socket.AF_INET, kind)
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def wait_until(what, check, deadline_s, every_s=0.25):
    """Polls `check` until it returns something true; exits with `what` at the deadline."""
    until = time.monotonic() + deadline_s
    while time.monotonic() < until:
        v = check()
        if v:
            return v
        time.sleep(every_s)
    raise SystemExit(f"timed out after {deadline_s}s waiting for {what}")


def cpu_ticks(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime + stime


def rss_mib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise SystemExit(f"no VmRSS for pid {pid}")


def children(pid):
    kids = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/stat") as f:
                    if int(f.read().rsplit(")", 1)[1].split()[1]) == pid:
                        kids.append(int(d))
            except (OSError, ValueError, IndexError):
                pass  # gone meanwhile
    return kids


class RealCluster:
    """A master and `agents` agents (`cpus`, `mem` MiB each), registered when this returns."""

    def __init__(self, bin_dir, agents=2, cpus=1, mem=512, prefix="bramble-bench-"):
        self.bin = os.path.abspath(bin_dir)
        self.work = tempfile.mkdtemp(prefix=prefix)
        self.procs = {}
        try:
            self._start(agents, cpus, mem)
        except BaseException:
            self.close()
            raise

    def _spawn(self, name, args):
        log = open(os.path.join(self.work, name + ".log"), "w")
        self.procs[name] = subprocess.Popen(
            [os.path.join(self.bin, args[0])] + args[1:], stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL, stderr=log, env=dict(os.environ, NO_COLOR="1"),
            start_new_session=True)

    def _start(self, agents, cpus, mem):
        cluster = os.path.join(self.work, "cluster")
        subprocess.run([os.path.join(self.bin, "bramble"), "cluster", "init", cluster,
                        "--name", "bench"], check=True, stdout=subprocess.DEVNULL)
        quic, http = free_port(socket.SOCK_DGRAM), free_port(socket.SOCK_STREAM)
        master_toml = os.path.join(self.work, "master.toml")
        with open(master_toml, "w") as f:
            f.write("heartbeat_interval_ms = 1000\n")
        self._spawn("master", ["bramble-master", "--cluster", cluster, "--listen",
                               f"127.0.0.1:{quic}", "--http", f"127.0.0.1:{http}",
                               "--state-dir", os.path.join(self.work, "ms"),
                               "--config", master_toml])
        self.agents = [f"agent_{i}" for i in range(1, agents + 1)]
        for name in self.agents:
            toml = os.path.join(self.work, name + ".toml")
            with open(toml, "w") as f:  # agents sharing a host: each its own Mesos API port
                f.write("[mesos]\nlisten = \"127.0.0.1:0\"\n")
            self._spawn(name, ["bramble-agent", "--cluster", cluster,
                               "--master", f"127.0.0.1:{quic}", "--work-dir",
                               os.path.join(self.work, name), "--cpus", str(cpus),
                               "--mem", str(mem), "--config", toml])
        self.op = [os.path.join(self.bin, "bramble"), "--cluster", cluster,
                   "--master", f"127.0.0.1:{quic}"]
        wait_until(f"{agents} agents registered",
                   lambda: (s := self.state()) and
                   sum(a["connected"] for a in s["agents"]) == agents, 30)

    def pid(self, name):
        return self.procs[name].pid

    def state(self):
        """The master's state (`bramble status --json`), None if it did not answer."""
        out = subprocess.run(self.op + ["status", "--json"], capture_output=True, text=True,
                             timeout=20)
        return json.loads(out.stdout) if out.returncode == 0 else None

    def settled(self):
        """No tasks, no connected framework, no executors, nothing allocated in the master's
        state, and no child process left under any agent (the master forgets an executor
        before its agent has reaped the process)."""
        s = self.state()
        if not s:
            return False
        quiet = (not s["tasks"] and not any(f["connected"] for f in s["frameworks"])
                 and all(not a["executors"] and a["allocated"]["cpus_milli"] == 0
                         for a in s["agents"]))
        return quiet and not any(children(self.pid(a)) for a in self.agents)

    def bench_tasks(self, *args, wait=True):
        """`bramble bench tasks --existing ARGS` against this cluster: its JSON report, or the
        running process with `wait=False`."""
        cmd = self.op + ["bench", "tasks", "--existing", *args]
        if not wait:
            return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                    text=True)
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
        if out.returncode != 0:
            raise SystemExit(f"bramble bench tasks failed:\n{out.stderr[-3000:]}")
        return json.loads(out.stdout.strip().splitlines()[-1])

    def close(self):
        # Executors may live in sessions of their own: find them before their agent goes.
        leftovers = [k for a in getattr(self, "agents", []) if self.procs.get(a)
                     for k in children(self.procs[a].pid)]
        for pid in leftovers:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        for p in self.procs.values():
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
        shutil.rmtree(self.work, ignore_errors=True)

    def __enter__(self):
        return self

    def __exit__(self, *_):
        self.close()

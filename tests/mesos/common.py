"""What the Python test frameworks in tests/mesos/ share: the command line, the JSON lines
they print, running a pymesos driver under a deadline, and offer arithmetic.

Every framework here is a plain pymesos program, as a Mesos user would write one: it takes the
master's ``host:port`` first, prints one JSON object per line on stdout (``{"event": ...}``),
ends with one ``{"event": "result", "ok": true|false, ...}`` line, and exits 0 only when every
check passed (1 when a check failed, 2 when its own deadline ran out). pymesos logs to stderr.

pymesos runs the event stream on its own I/O thread and calls the scheduler's callbacks there;
an exception on that thread (an HTTP error, a bad event) is re-raised in the main thread
through SIGINT. ``run_until`` turns both a callback's verdict and that exception into a value,
so a framework never hangs and never dies without saying why.
"""

import argparse
import base64
import json
import os
import sys
import threading
import time

import pymesos  # noqa: F401  (sets up pymesos's SIGINT hook before any driver starts)


def emit(event, **fields):
    """One machine-readable line on stdout."""
    print(json.dumps(dict(event=event, **fields), sort_keys=True), flush=True)


def finish(ok, **fields):
    """The last line, then the exit status the harness reads."""
    emit("result", ok=bool(ok), **fields)
    sys.stdout.flush()
    os._exit(0 if ok else 1)


def parser(description):
    p = argparse.ArgumentParser(description=description)
    p.add_argument("master", help="the master's HTTP host:port (Mesos's :5050)")
    p.add_argument("--deadline", type=float, default=60.0,
                   help="seconds before this framework gives up (exit 2)")
    p.add_argument("--principal", help="HTTP Basic principal")
    p.add_argument("--secret", help="HTTP Basic secret")
    p.add_argument("--name", default=None, help="framework name")
    return p


def framework_info(name, **extra):
    """A FrameworkInfo as pymesos takes it. user "" lets the master pick the task user."""
    info = dict(user="", name=name, hostname=os.uname().nodename)
    info.update(extra)
    return info


def b64(text):
    return base64.b64encode(text.encode("utf-8")).decode("ascii")


def unb64(data):
    return base64.b64decode(data).decode("utf-8")


def scalar(offer, name):
    """The sum of an offer's scalar resource ``name`` (0 when absent)."""
    return sum(r.get("scalar", {}).get("value", 0.0)
               for r in offer.get("resources", []) if r.get("name") == name)


def resources(cpus, mem):
    return [dict(name="cpus", type="SCALAR", scalar=dict(value=cpus)),
            dict(name="mem", type="SCALAR", scalar=dict(value=mem))]


class Verdict:
    """Set once from a callback (on pymesos's thread): done, with or without a failure."""

    def __init__(self):
        self.done = threading.Event()
        self.failure = None

    def ok(self):
        self.done.set()

    def fail(self, why):
        if self.failure is None:
            self.failure = why
        self.done.set()


def run_until(driver, verdict, deadline_s):
    """Starts ``driver`` and waits for ``verdict`` or the deadline. Returns ``None`` when the
    verdict came, else a string saying what ended the wait (the deadline, the driver's I/O
    thread dying with an exception, or the driver stopping by itself)."""
    until = time.monotonic() + deadline_s
    try:
        driver.start()
        while not verdict.done.wait(0.05):
            if time.monotonic() > until:
                return "deadline of %.0f s passed" % deadline_s
            if driver.aborted:
                return "the driver stopped"
    except KeyboardInterrupt:
        return "interrupted"
    except Exception as e:  # pymesos re-raises its I/O thread's exception here
        return "driver error: %s: %s" % (type(e).__name__, e)
    return None


def stop(driver, failover=False, timeout=10.0):
    """Stops ``driver`` (TEARDOWN unless ``failover``) and waits for its I/O thread, bounded."""
    try:
        driver.stop(failover=failover)
    except TypeError:  # the executor driver's stop() takes no argument
        driver.stop()
    t = driver._io_thread
    if t is not None:
        t.join(timeout)


def get_json(master, path, principal=None, secret=None, timeout=5.0):
    """GET ``path`` on the master's HTTP port as JSON (``None`` on any failure)."""
    from http.client import HTTPConnection
    host, port = master.rsplit(":", 1)
    headers = {}
    if principal is not None and secret is not None:
        headers["Authorization"] = "Basic " + b64("%s:%s" % (principal, secret))
    conn = HTTPConnection(host, int(port), timeout=timeout)
    try:
        conn.request("GET", path, headers=headers)
        resp = conn.getresponse()
        body = resp.read()
        return json.loads(body.decode("utf-8")) if resp.status == 200 else None
    except (OSError, ValueError):
        return None
    finally:
        conn.close()


def framework_gone(master, framework_id, principal=None, secret=None, deadline_s=10.0):
    """Waits until /master/state no longer lists ``framework_id`` as an active framework
    (TEARDOWN took effect). Returns whether it did within the deadline."""
    until = time.monotonic() + deadline_s
    while time.monotonic() < until:
        state = get_json(master, "/master/state", principal, secret)
        if state is not None:
            live = [f for f in state.get("frameworks", [])
                    if f.get("id") == framework_id and f.get("active", True)]
            if not live:
                return True
        time.sleep(0.1)
    return False


class Child:
    """Another phase of a scenario run as its own process (``python this_script.py ...``):
    its JSON lines are read on a thread, echoed wrapped as ``{"event": "child", "phase": ...}``
    and can be waited for one by one; its stdin stays open for ``tell``."""

    def __init__(self, phase, argv):
        import queue
        import subprocess
        self.phase = phase
        self.lines = queue.Queue()
        self.all = []
        self.proc = subprocess.Popen([sys.executable] + argv, stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True)
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for raw in self.proc.stdout:
            try:
                line = json.loads(raw)
            except ValueError:
                line = dict(event="text", text=raw.rstrip("\n"))
            self.all.append(line)
            emit("child", phase=self.phase, line=line)
            self.lines.put(line)
        self.lines.put(None)

    def wait_for(self, event, deadline_s):
        """The next line whose event is ``event`` (or the result line), else ``None``."""
        import queue
        until = time.monotonic() + deadline_s
        while True:
            left = until - time.monotonic()
            if left <= 0:
                return None
            try:
                line = self.lines.get(timeout=left)
            except queue.Empty:
                return None
            if line is None:
                return None
            if line.get("event") in (event, "result"):
                return line

    def tell(self, text):
        try:
            self.proc.stdin.write(text + "\n")
            self.proc.stdin.flush()
        except OSError:
            pass

    def result(self, deadline_s):
        """The child's result line once it exits (a failed one if it does not in time)."""
        line = self.wait_for("result", deadline_s)
        try:
            self.proc.wait(timeout=max(1.0, deadline_s))
        except Exception:
            self.proc.kill()
            self.proc.wait()
        if line is None or line.get("event") != "result":
            return dict(event="result", ok=False,
                        error="%s phase ended without a result (exit %s)"
                        % (self.phase, self.proc.returncode))
        return line

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def deadline_exit(why, **fields):
    emit("result", ok=False, error=why, **fields)
    sys.stdout.flush()
    os._exit(2 if why.startswith("deadline") else 1)

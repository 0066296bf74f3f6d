"""The custom executor of custom_executor.py: a pymesos MesosExecutorDriver program the agent
starts as ``<venv python> echo_executor.py`` (PYTHONPATH comes in CommandInfo.environment).

For each task it reports TASK_RUNNING, sends the scheduler a framework message with the
task's result (the square of the number in TaskInfo.data) and what it sees of its environment
(the MESOS_* variables, its working directory, whether it leads its own session), then
TASK_FINISHED carrying the result in TaskStatus.data. A framework message ``ping N`` from the
scheduler is answered with ``pong N``. It exits on SHUTDOWN, or after --deadline seconds so a
lost executor never lingers.
"""

import json
import os
import sys
import threading
import time

from pymesos import Executor, MesosExecutorDriver, decode_data, encode_data

MESOS_VARS = ("MESOS_AGENT_ENDPOINT", "MESOS_FRAMEWORK_ID", "MESOS_EXECUTOR_ID",
              "MESOS_DIRECTORY", "MESOS_SANDBOX", "MESOS_SLAVE_ID", "MESOS_AGENT_ID",
              "MESOS_EXECUTOR_SHUTDOWN_GRACE_PERIOD", "MESOS_CHECKPOINT")


def message(driver, **fields):
    driver.sendFrameworkMessage(encode_data(json.dumps(fields).encode("utf-8")))


class EchoExecutor(Executor):
    def registered(self, driver, executor_info, framework_info, agent_info):
        print("registered on agent %s" % agent_info.get("id"), file=sys.stderr, flush=True)

    def launchTask(self, driver, task):
        # pymesos calls back on its I/O thread: do the work on another one.
        threading.Thread(target=self.run_task, args=(driver, task), daemon=True).start()

    def run_task(self, driver, task):
        tid = task["task_id"]
        driver.sendStatusUpdate(dict(task_id=tid, state="TASK_RUNNING"))
        n = int(decode_data(task["data"]).decode("utf-8"))
        result = n * n
        sid = os.getsid(0)
        message(driver, kind="result", task=tid["value"], n=n, result=result,
                env={k: os.environ.get(k) for k in MESOS_VARS}, cwd=os.getcwd(),
                pid=os.getpid(), sid=sid,
                # Started under `sh -c`: the session leader is this process or its shell.
                own_session=sid in (os.getpid(), os.getppid()))
        driver.sendStatusUpdate(dict(task_id=tid, state="TASK_FINISHED",
                                     data=encode_data(str(result).encode("utf-8"))))

    def frameworkMessage(self, driver, data):
        text = decode_data(data).decode("utf-8")
        if text.startswith("ping "):
            message(driver, kind="pong", n=int(text.split()[1]))

    def shutdown(self, driver):
        print("shutdown", file=sys.stderr, flush=True)


def main():
    deadline = float(sys.argv[1]) if len(sys.argv) > 1 else 120.0
    driver = MesosExecutorDriver(EchoExecutor())
    driver.start()
    until = time.monotonic() + deadline
    while not driver.aborted and time.monotonic() < until:
        time.sleep(0.1)
    driver.stop()
    sys.exit(0)


if __name__ == "__main__":
    main()

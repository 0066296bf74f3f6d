#!/usr/bin/env python3
# The pi framework from "Mesos on a Raspberry Pi cluster part 2" (../../../shared/seeds/),
# the tutorial's Scala ExampleScheduler written in Python against pymesos: one task per
# offer, task N carries the odd number +-(2N+1), its executor (pi_executor.py) divides 4 by
# it and sends the quotient back as a framework message, and the scheduler adds the messages
# up, starting from 4:  pi = 4/1 - 4/3 + 4/5 - 4/7 ...
#
# Kept from the tutorial as it was: the task counter and its data, one task per offer with
# 1 cpu and 128 MB, the executor answering with a framework message and TASK_FINISHED, BigDecimal
# arithmetic (Python's Decimal), "Pi ~ ..." after every message. Added, because the tutorial
# "skipped over a lot of things": how many terms to compute (--tasks, default 100) and
# stopping after that many messages; an offer too small for a task is declined (the
# tutorial launched into any offer); the getExecutorInfo/getFrameworkInfo it did not show;
# the master's host:port from the command line.
#
#   python3 pi.py HOST:PORT [--tasks N]

import argparse
import os
import sys
from decimal import Decimal

from addict import Dict
from pymesos import MesosSchedulerDriver, Scheduler, decode_data, encode_data


def buildResource(name, value):
    return Dict(name=name, type="SCALAR", scalar=Dict(value=value))


def offered(offer, name):
    return sum(r.scalar.value for r in offer.resources if r.name == name)


class ExampleScheduler(Scheduler):
    def __init__(self, executorInfo, tasks):
        self.executorInfo = executorInfo
        self.tasks = tasks
        self.taskCounter = 0
        self.received = 0
        self.pi = Decimal(4)

    def resourceOffers(self, driver, offers):
        for offer in offers:
            if self.taskCounter >= self.tasks or \
               offered(offer, "cpus") < 1 or offered(offer, "mem") < 128:
                driver.declineOffer([offer.id])
                continue
            self.taskCounter += 1
            taskId = Dict(value=str(self.taskCounter))

            if self.taskCounter % 2 == 0:
                data = Decimal(self.taskCounter * 2 + 1)
            else:
                data = Decimal(-(self.taskCounter * 2 + 1))
            task = Dict()
            task.name = "task " + taskId.value
            task.task_id = taskId
            task.agent_id = offer.agent_id
            task.resources = [buildResource("cpus", 1), buildResource("mem", 128)]
            task.data = encode_data(str(data).encode("utf-8"))
            task.executor = self.executorInfo

            driver.launchTasks([offer.id], [task])

    def frameworkMessage(self, driver, executorId, slaveId, data):
        self.pi += Decimal(decode_data(data).decode("utf-8"))
        print("Pi ~ %s" % self.pi, flush=True)
        self.received += 1
        if self.received == self.tasks:
            driver.stop()


def getExecutorInfo():
    executor = Dict()
    executor.executor_id.value = "pi-executor"
    executor.name = "Pi Executor (Python)"
    # This directory's pi_executor.py, run by this Python, with this PYTHONPATH (pymesos).
    executor.command.value = "%s %s" % (
        sys.executable,
        os.path.join(os.path.dirname(os.path.abspath(__file__)), "pi_executor.py"))
    executor.command.environment.variables = [
        Dict(name="PYTHONPATH", value=os.environ.get("PYTHONPATH", ""))]
    return executor


def getFrameworkInfo():
    framework = Dict()
    framework.user = ""
    framework.name = "Pi Framework (Python)"
    return framework


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("mesosMaster", help="the master's host:port")
    parser.add_argument("--tasks", type=int, default=100, help="terms after the first")
    args = parser.parse_args()

    scheduler = ExampleScheduler(getExecutorInfo(), args.tasks)
    driver = MesosSchedulerDriver(scheduler, getFrameworkInfo(), args.mesosMaster,
                                  use_addict=True)
    driver.run()

#!/usr/bin/env python3
# The pi framework's executor from "Mesos on a Raspberry Pi cluster part 2"
# (../../../shared/seeds/), the tutorial's Scala ExampleExecutor written in Python against
# pymesos: divide 4 by the task's number, send the quotient back as a framework message,
# report TASK_FINISHED.

from decimal import Decimal

from addict import Dict
from pymesos import Executor, MesosExecutorDriver, decode_data, encode_data


class ExampleExecutor(Executor):
    def launchTask(self, driver, task):
        result = Decimal(4) / Decimal(decode_data(task.data).decode("utf-8"))

        driver.sendFrameworkMessage(encode_data(str(result).encode("utf-8")))
        status = Dict()
        status.task_id = task.task_id
        status.state = "TASK_FINISHED"

        driver.sendStatusUpdate(status)


if __name__ == "__main__":
    driver = MesosExecutorDriver(ExampleExecutor(), use_addict=True)
    status = driver.run()

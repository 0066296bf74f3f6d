#!/usr/bin/env python3
# The factorial framework's executor from the Mesos tutorial in ../../../shared/seeds/,
# ported from the old `mesos.native` bindings to pymesos (see factorial.py for the full list:
# imports, the driver constructor, addict Dicts and state names for mesos_pb2, base64 data,
# print()).

import sys
import threading

from addict import Dict
from pymesos import Executor, MesosExecutorDriver, decode_data, encode_data

#The Executor implementation.

class FactorialExecutor(Executor):

#This fucntion would be called when a task is launched, so we add our code here.
    def launchTask(self, driver, task):
        # Create a thread to run the task. Tasks should always be run in new
        # threads or processes, rather than inside launchTask itself.
        def run_task():
            print("Running task %s" % task.task_id.value)

#Update our factorial schedular that the task is started. In the factorial:Schedular code statusUpdate(self, driver, update) fucntion is invoked.
            update = Dict()
            update.task_id.value = task.task_id.value
            update.data = task.data
            update.state = "TASK_RUNNING"
            driver.sendStatusUpdate(update)

# This is where one would perform the factorial calculation.
            fact = 1
            for i in range(1, int(decode_data(task.data)) + 1):
                fact = fact * i

            print("Sending status update...")

#Finished now let us update the schedular with the result

            update = Dict()
            update.task_id.value = task.task_id.value
            update.state = "TASK_FINISHED"
            update.data = encode_data(("The factorial for %s is %s" % (decode_data(task.data).decode(), fact)).encode())
            driver.sendStatusUpdate(update)
            print("Sent status update")

        thread = threading.Thread(target=run_task)
        thread.start()


# The main function
if __name__ == "__main__":
    print("Starting executor")

#Specify the fucntion to be called when this executor is invoked.

    driver = MesosExecutorDriver(FactorialExecutor(), use_addict=True)
    sys.exit(0 if driver.run() is None else 1)

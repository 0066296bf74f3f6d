#!/usr/bin/env python3
# The factorial framework from the Mesos tutorial in ../../../shared/seeds/ (the "Apache
# Mesos" write-up's FactorialScheduler), ported from the old `mesos.native` bindings to
# pymesos so it runs on a bramble. What changed, and nothing else:
#   * imports: pymesos and addict instead of mesos.interface / mesos_pb2 / mesos.native;
#   * the driver constructor: pymesos's MesosSchedulerDriver(sched, framework, master,
#     use_addict=True, implicit_acknowledgements=...);
#   * the v1 JSON API's spellings where the protobuf ones no longer exist: messages are
#     addict Dicts instead of mesos_pb2 objects (a list instead of resources.add(), state
#     names instead of mesos_pb2 constants), `agent_id` instead of `slave_id`, and
#     TaskInfo.data / TaskStatus.data base64 (encode_data / decode_data);
#   * Python 3's print();
#   * the master's host:port and the numbers come from the command line (the tutorial had
#     "mesos_master:5050" and FACTS = ['5', '3']), and the executor is this directory's
#     factorial_executor.py run by the same Python (the tutorial put a `factorial_executor`
#     binary on every agent).
#
#   python3 factorial.py HOST:PORT [N ...]

import os
import sys

from addict import Dict
from pymesos import MesosSchedulerDriver, Scheduler, decode_data, encode_data

TOTAL_TASKS = 2
FACTS = ['5', '3']   #The numbers for which factorial should be calculated
TASK_CPUS = 1        #The number if cpus to be allocated for each task (each number)
TASK_MEM = 10        #The amount of memory to allocated for each task (each number)

#The interface implementation.

class FactorialScheduler(Scheduler):
    def __init__(self, implicitAcknowledgements, executor):
        self.implicitAcknowledgements = implicitAcknowledgements
        self.executor = executor
        self.taskData = {}
        self.tasksLaunched = 0
        self.tasksFinished = 0
        self.messagesSent = 0
        self.messagesReceived = 0

#This function is called when we register ourselves with the mesos master as a framework
    def registered(self, driver, frameworkId, masterInfo):
        print("Registered with framework ID %s" % frameworkId.value)

#This fucntion is called when we get a resource offer fromt the mesos master.
    def resourceOffers(self, driver, offers):
        for offer in offers:
#The first offer we got
            tasks = []
            offerCpus = 0
            offerMem = 0
            for resource in offer.resources:
                if resource.name == "cpus":
#The number if cpu's in this offer
                    offerCpus += resource.scalar.value
#The amount of memory in this offer
                elif resource.name == "mem":
                    offerMem += resource.scalar.value

            print("Received offer %s with cpus: %s and mem: %s" \
                  % (offer.id.value, offerCpus, offerMem))

            remainingCpus = offerCpus
            remainingMem = offerMem

            while self.tasksLaunched < TOTAL_TASKS and \
                  remainingCpus >= TASK_CPUS and \
                  remainingMem >= TASK_MEM:
                tid = self.tasksLaunched
                self.tasksLaunched += 1

                print("Launching task %d using offer %s" \
                      % (tid, offer.id.value))

#Create a task with one cpu and 10 mb of ram and have the data populated with the number for which factorial should be calculated.

                task = Dict()
                task.task_id.value = str(tid)
                task.agent_id.value = offer.agent_id.value
                task.name = "task %d" % tid
                task.data = encode_data(FACTS[self.tasksLaunched - 1].encode())
                task.executor = self.executor

                task.resources = []
                cpus = Dict()
                task.resources.append(cpus)
                cpus.name = "cpus"
                cpus.type = "SCALAR"
                cpus.scalar.value = TASK_CPUS

                mem = Dict()
                task.resources.append(mem)
                mem.name = "mem"
                mem.type = "SCALAR"
                mem.scalar.value = TASK_MEM

                tasks.append(task)
                self.taskData[task.task_id.value] = (
                    offer.agent_id, task.executor.executor_id)

                remainingCpus -= TASK_CPUS
                remainingMem -= TASK_MEM

            operation = Dict()
            operation.type = "LAUNCH"
            operation.launch.task_infos = tasks

#Launch the task

            driver.acceptOffers([offer.id], [operation])

#This fucntion is called whenever the executor updates its status , it can also be invoked by the master incase task is lost or terminated etc..

    def statusUpdate(self, driver, update):
        print("Task %s is in state %s and data %s" % \
            (update.task_id.value, update.state, decode_data(update.data or "").decode()))

        if update.state == "TASK_FINISHED":
            self.tasksFinished += 1

#Here we print the factorial as the executor updates it status as FINISHED and also adds the result in the update data.

            print(decode_data(update.data).decode())

#If we got factorial for all data , stop this framework.
            if self.tasksFinished == TOTAL_TASKS:
                print("All tasks done")
                driver.stop()
            slave_id, executor_id = self.taskData[update.task_id.value]

#Abort in case any tasks failed or lost etc..

        if update.state == "TASK_LOST" or \
           update.state == "TASK_KILLED" or \
           update.state == "TASK_FAILED":
            print("Aborting because task %s is in unexpected state %s with message '%s'" \
                % (update.task_id.value, update.state, update.message))
            driver.abort()

        # Explicitly acknowledge the update if implicit acknowledgements
        # are not being used.
        if not self.implicitAcknowledgements:
            driver.acknowledgeStatusUpdate(update)


#The main function
if __name__ == "__main__":
    if len(sys.argv) < 2:
        print("Usage: %s HOST:PORT [N ...]" % sys.argv[0])
        sys.exit(1)
    if len(sys.argv) > 2:
        FACTS = sys.argv[2:]
        TOTAL_TASKS = len(FACTS)

    implicitAcknowledgements = 1
    if os.getenv("MESOS_EXPLICIT_ACKNOWLEDGEMENTS"):
        implicitAcknowledgements = 0

#Instantiate the builtin ExecutorInfo Class
    executor = Dict()
    executor.executor_id.value = "default"

#This is where we tell the  name of the binary which should be invoked in the slave nodes: this directory's factorial_executor.py, run by this Python, with this PYTHONPATH (where pymesos is).
    executor.command.value = "%s %s" % (
        sys.executable,
        os.path.join(os.path.dirname(os.path.abspath(__file__)), "factorial_executor.py"))
    executor.command.environment.variables = [
        dict(name="PYTHONPATH", value=os.environ.get("PYTHONPATH", ""))]
    executor.name = "Factorial Executor (Python)"

#Instanitate the Framework
    framework = Dict()
    framework.user = "" # Have Mesos fill in the current user.
    framework.name = "Factorial Framework (Python)"

#Fill up connection details  to the mesos master and tell which is our schedular implementation class 'FactorialScheduler'.
    driver = MesosSchedulerDriver(
            FactorialScheduler(implicitAcknowledgements, executor),
            framework,
            sys.argv[1],
            use_addict=True,
            implicit_acknowledgements=implicitAcknowledgements)

#Run the scheduler (pymesos's run() returns once the driver has stopped).
    status = 0 if driver.run() is None else 1

# Ensure that the driver process terminates.
    driver.stop();
    sys.exit(status)

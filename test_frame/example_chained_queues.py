"""Two chained queues (seed README 2.4): step1 fans out more step1 calls and step2 calls.

A task that publishes inside its run passes its task id on as ``parent_task_id``.
"""
import time

from fsdf import BrokerEnum, task_deco


@task_deco('queue_test_step1', qps=0.5, broker_kind=BrokerEnum.LOCAL_PYTHON_QUEUE)
def step1(x):
    print(f'x is {x}')
    if x == 0:
        for i in range(1, 300):
            step1.pub(dict(x=x + i))
    for j in range(10):
        step2.push(x * 100 + j)  # push takes the arguments, pub takes a dict
    time.sleep(10)


@task_deco('queue_test_step2', qps=3, broker_kind=BrokerEnum.LOCAL_PYTHON_QUEUE)
def step2(y):
    print(f'y is {y}')
    time.sleep(10)


if __name__ == '__main__':
    step1.push(0)
    step1.consume()  # consume() returns at once, so one script can start several consumers
    step2.consume()

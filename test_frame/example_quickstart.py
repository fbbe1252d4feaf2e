"""Quick start (seed README 1.0.0.1): run ``task_fun`` 5 times a second whatever each call takes.

The SQLite broker needs no server. Publishing and consuming are usually two scripts; they
share one here for brevity.
"""
import time

from fsdf import BrokerEnum, task_deco


@task_deco('task_queue_name1', qps=5, broker_kind=BrokerEnum.PERSISTQUEUE)
def task_fun(x, y):
    print(f'{x} + {y} = {x + y}')
    time.sleep(3)  # fsdf runs enough calls at once to keep 5 starts a second


if __name__ == '__main__':
    for i in range(100):
        task_fun.push(i, y=i * 2)  # publishes {"x": i, "y": i * 2} to the queue
    task_fun.consume()  # starts consuming in background threads and returns

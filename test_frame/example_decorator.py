"""Decorator style (seed README 2.1): publish with ``pub``/``push``, consume with ``consume``.

Uses Redis: point ``REDIS_URL`` in distributed_frame_config.py (or FSDF_REDIS_URL) at your server.
"""
from fsdf import BrokerEnum, task_deco


@task_deco('queue_test_f01', qps=0.2, broker_kind=BrokerEnum.REDIS_ACK_ABLE)  # qps 0.2: one call every 5 s
def add(a, b):
    print(a + b)


if __name__ == '__main__':
    for i in range(10, 20):
        add.pub(dict(a=i, b=i * 2))  # publish a dict of keyword arguments
        add.push(i, b=i * 2)  # publish the call as you would write it
    add.consume()

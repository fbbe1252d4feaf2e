"""Timed publishing: date/interval/cron jobs publish, and several schedulers publish each run once."""
from __future__ import annotations

import json
import time

from fsdf import BrokerEnum, task_deco
from fsdf.scheduling import FsdfBackgroundScheduler, SqliteTickClaims

SCHEDULER = '''
import sys, time
from fsdf import task_deco, BrokerEnum
from fsdf.scheduling import FsdfBackgroundScheduler

@task_deco(sys.argv[1], broker_kind=BrokerEnum.PERSISTQUEUE)
def tick(n):
    pass

scheduler = FsdfBackgroundScheduler()
scheduler.add_timing_publish_job(tick, 'interval', seconds=1, kwargs={'n': 1})
scheduler.start()
time.sleep(float(sys.argv[2]))  # this process only schedules for that long
scheduler.shutdown()
'''


def publish_times(task) -> list[float]:
    broker = task.publisher.broker
    times = []
    while batch := broker.fetch(100, 0.05):
        times += [json.loads(d.body)['extra']['publish_time'] for d in batch]
    return sorted(times)


def test_two_scheduler_processes_publish_each_tick_once(queue_name, run_script) -> None:
    @task_deco(queue_name, broker_kind=BrokerEnum.PERSISTQUEUE)
    def tick(n):
        pass

    tick.clear()
    procs = [run_script(SCHEDULER, queue_name, '5') for _ in range(2)]
    for proc in procs:
        assert proc.wait(30) == 0
    times = publish_times(tick)
    # Both ran for ~5 s (started ~0.3 s apart): 4 to 6 ticks in all, never two in the same second.
    assert 4 <= len(times) <= 6, times
    gaps = [b - a for a, b in zip(times, times[1:])]
    assert all(gap > 0.8 for gap in gaps), gaps


def test_date_job_fires_once_at_its_time(queue_name) -> None:
    import datetime as dt

    @task_deco(queue_name, broker_kind=BrokerEnum.LOCAL_PYTHON_QUEUE)
    def once(x):
        pass

    scheduler = FsdfBackgroundScheduler(claims=SqliteTickClaims(':memory:'))
    when = dt.datetime.now() + dt.timedelta(seconds=1.5)
    scheduler.add_timing_publish_job(once, 'date', run_date=when, args=(7,))
    scheduler.start()
    try:
        deadline = time.monotonic() + 5
        while once.get_message_count() == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        published_at = time.time()
        assert abs(published_at - when.timestamp()) < 0.5
        assert not scheduler.get_jobs()  # a date job is done after its one run
    finally:
        scheduler.shutdown()
    [delivery] = once.publisher.broker.fetch(10, 0.05)
    assert json.loads(delivery.body)['x'] == 7


def test_cron_job_and_wrong_arguments(queue_name) -> None:
    import pytest

    @task_deco(queue_name, broker_kind=BrokerEnum.LOCAL_PYTHON_QUEUE)
    def every_second(x, y):
        pass

    scheduler = FsdfBackgroundScheduler(claims=SqliteTickClaims(':memory:'))
    with pytest.raises(TypeError, match="missing a required argument: 'y'"):
        scheduler.add_timing_publish_job(every_second, 'cron', second='*', args=(1,))
    scheduler.add_timing_publish_job(every_second, 'cron', second='*', args=(1, 2))
    scheduler.start()
    try:
        deadline = time.monotonic() + 5
        while every_second.get_message_count() < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        scheduler.shutdown()
    assert every_second.get_message_count() >= 2


def test_seed_style_add_job_with_timing_publish_deco(queue_name) -> None:
    from fsdf import fsdf_background_scheduler, timing_publish_deco

    @task_deco(queue_name, broker_kind=BrokerEnum.LOCAL_PYTHON_QUEUE)
    def consume_func(x, y):
        pass

    assert isinstance(fsdf_background_scheduler, FsdfBackgroundScheduler)
    publish = timing_publish_deco(consume_func)
    publish(5, y=6)
    assert consume_func.get_message_count() == 1

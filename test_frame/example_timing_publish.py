"""Timed publishing (seed README 2.5): interval, date and cron jobs that publish to a consumer.

Run two copies of this script at once: each due run is still published only once.
"""
import datetime

from fsdf import BrokerEnum, fsdf_background_scheduler, task_deco, timing_publish_deco


@task_deco('queue_test_666', broker_kind=BrokerEnum.PERSISTQUEUE)
def consume_func(x, y):
    print(f'{x} + {y} = {x + y}')


if __name__ == '__main__':
    # Every 3 seconds.
    fsdf_background_scheduler.add_timing_publish_job(consume_func, 'interval', seconds=3, kwargs={'x': 5, 'y': 6})
    # Once, ten seconds from now.
    fsdf_background_scheduler.add_timing_publish_job(
        consume_func, 'date', run_date=datetime.datetime.now() + datetime.timedelta(seconds=10), args=(5, 6))
    # Every day at 14:51:20.
    fsdf_background_scheduler.add_timing_publish_job(consume_func, 'cron', day_of_week='*', hour=14, minute=51,
                                                     second=20, args=(5, 6))
    # apscheduler's own add_job works too, with a publishing function.
    fsdf_background_scheduler.add_job(timing_publish_deco(consume_func), 'interval', id='seed_style', seconds=7,
                                      kwargs={'x': 1, 'y': 2})
    fsdf_background_scheduler.start()
    consume_func.consume()

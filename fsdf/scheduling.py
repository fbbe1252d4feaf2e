"""Timed publishing on apscheduler 3: jobs that publish calls, each due run published once
however many scheduler processes run the same jobs.

Every scheduler claims each (job id, run time) before publishing it, in SQLite (the processes of
one machine) or Redis (many machines); the loser of a claim skips that run. Interval jobs are
aligned to the epoch, so replicas started at different moments agree on the run times.
"""
from __future__ import annotations

import datetime as dt
import functools
import sqlite3
import threading
import time
from typing import TYPE_CHECKING, Any, Callable, Optional, Protocol

from apscheduler.executors.pool import BasePoolExecutor
from apscheduler.job import Job
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.schedulers.blocking import BlockingScheduler
from apscheduler.triggers.interval import IntervalTrigger

from fsdf._optional import import_optional
from fsdf.concurrency.executor import OwnThreadExecutor
from fsdf.config import settings
from fsdf.enums import BrokerEnum
from fsdf.publisher import Publisher

if TYPE_CHECKING:
    from fsdf.task import TaskFunction

CLAIM_TTL_SECONDS = 7 * 24 * 3600


class TickClaims(Protocol):
    """Decides which scheduler publishes a job's run: the first to claim it."""

    def claim(self, job_id: str, run_time: dt.datetime) -> bool:
        """True if this caller is the first to claim this run of this job."""


class SqliteTickClaims:
    """Claims in a SQLite file, shared by the scheduler processes of one machine."""

    def __init__(self, path: Optional[str] = None) -> None:
        self.path = path or str(settings.path('PERSIST_QUEUE_PATH') / 'fsdf_schedule.sqlite')
        settings.path('PERSIST_QUEUE_PATH').mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, timeout=30, check_same_thread=False)
        with self._db:
            self._db.execute('PRAGMA journal_mode=WAL')
            self._db.execute('CREATE TABLE IF NOT EXISTS fsdf_schedule_claims '
                             '(job_id TEXT, run_time REAL, claimed REAL, PRIMARY KEY (job_id, run_time))')

    def claim(self, job_id: str, run_time: dt.datetime) -> bool:
        now = time.time()
        with self._lock, self._db:
            self._db.execute('DELETE FROM fsdf_schedule_claims WHERE claimed < ?', (now - CLAIM_TTL_SECONDS,))
            return self._db.execute('INSERT OR IGNORE INTO fsdf_schedule_claims VALUES (?, ?, ?)',
                                    (job_id, run_time.timestamp(), now)).rowcount == 1


class RedisTickClaims:
    """Claims in Redis (``SET NX`` under ``fsdf:schedule:``), shared by schedulers on any machine."""

    def __init__(self, url: Optional[str] = None) -> None:
        connection = import_optional('fsdf.redis_connection', 'redis', 'schedule claims are kept in Redis')
        self._redis = connection.redis_client(url)

    def claim(self, job_id: str, run_time: dt.datetime) -> bool:
        key = f'fsdf:schedule:{job_id}:{run_time.timestamp():.6f}'
        return bool(self._redis.set(key, 1, nx=True, ex=CLAIM_TTL_SECONDS))


class OncePerTickExecutor(BasePoolExecutor):
    """apscheduler's pool executor that runs only the run times this scheduler claimed.

    Its threads are fsdf's own (``OwnThreadExecutor``), not concurrent.futures': those refuse
    every job once the main thread has ended, and a script that ends with ``consume()`` ends it at once.
    """

    def __init__(self, claims: Callable[[], TickClaims], max_workers: int = 10) -> None:
        super().__init__(OwnThreadExecutor(max_workers, name='fsdf-scheduler'))
        self.claims = claims

    def _do_submit_job(self, job: Job, run_times: list[dt.datetime]) -> None:
        store = self.claims()
        claimed = [run_time for run_time in run_times if store.claim(job.id, run_time)]
        # Submitted even when empty, so apscheduler's per-job instance count is released as usual.
        super()._do_submit_job(job, claimed)


def publish_message(queue_name: str, broker_kind: int, message: dict[str, Any]) -> str:
    """Publish one call (keyword arguments); the function scheduled jobs run. Returns the task id."""
    return Publisher(queue_name, BrokerEnum(broker_kind)).publish(message).task_id


def timing_publish_deco(task_fun: 'TaskFunction') -> Callable[..., Any]:
    """A function that publishes a call of ``task_fun`` with its arguments: a job for ``add_job``."""
    @functools.wraps(task_fun.function)
    def publish(*args: Any, **kwargs: Any) -> Any:
        return task_fun.push(*args, **kwargs)
    return publish


class _TimingPublishMixin:
    """What fsdf adds to apscheduler's schedulers."""

    add_job: Callable[..., Job]  # the apscheduler scheduler this is mixed into provides it

    def _setup(self, claims: Optional[TickClaims], kwargs: dict[str, Any]) -> None:
        self._claims = claims
        kwargs.setdefault('executors', {'default': OncePerTickExecutor(self.claims)})

    def claims(self) -> TickClaims:
        """The claim store: the one given, else SQLite under PERSIST_QUEUE_PATH (opened on first use)."""
        if self._claims is None:
            self._claims = SqliteTickClaims()
        return self._claims

    def add_timing_publish_job(self, task_fun: 'TaskFunction', trigger: str, *, args: tuple = (),
                               kwargs: Optional[dict[str, Any]] = None, id: Optional[str] = None,
                               replace_existing: bool = True, **trigger_args: Any) -> Job:
        """Publish ``task_fun(*args, **kwargs)`` on a 'date', 'interval' or 'cron' trigger.

        The job stores only the queue, the broker and the JSON arguments, so it works with
        persistent job stores too. Its id defaults to one derived from the queue, trigger and
        arguments, so replicas that add the same job agree on it.
        """
        message = task_fun.signature.arguments_of(tuple(args), dict(kwargs or {}))
        job_kwargs = {k: trigger_args.pop(k) for k in ('misfire_grace_time', 'coalesce', 'max_instances',
                                                         'next_run_time', 'jobstore', 'executor')
                      if k in trigger_args}
        job_id = id or f'{task_fun.queue_name}:{trigger}:{sorted(trigger_args.items())}:{sorted(message.items())}'
        if trigger == 'interval' and 'start_date' not in trigger_args:
            trigger = _epoch_aligned_interval(**trigger_args)
            trigger_args = {}
        return self.add_job(publish_message, trigger, args=(task_fun.queue_name, int(task_fun.broker_kind),
                                                            message),
                            id=job_id, name=f'publish to {task_fun.queue_name}', replace_existing=replace_existing,
                            **job_kwargs, **trigger_args)


class FsdfBackgroundScheduler(_TimingPublishMixin, BackgroundScheduler):
    """apscheduler's BackgroundScheduler that publishes each due run once across replicas."""

    def __init__(self, claims: Optional[TickClaims] = None, **kwargs: Any) -> None:
        self._setup(claims, kwargs)
        BackgroundScheduler.__init__(self, **kwargs)


class FsdfBlockingScheduler(_TimingPublishMixin, BlockingScheduler):
    """The same for a process that only schedules: ``start()`` blocks."""

    def __init__(self, claims: Optional[TickClaims] = None, **kwargs: Any) -> None:
        self._setup(claims, kwargs)
        BlockingScheduler.__init__(self, **kwargs)


def _epoch_aligned_interval(**interval: Any) -> IntervalTrigger:
    seconds = dt.timedelta(**{k: v for k, v in interval.items()
                              if k in ('weeks', 'days', 'hours', 'minutes', 'seconds')}).total_seconds()
    aligned = dt.datetime.fromtimestamp((time.time() // seconds) * seconds, dt.timezone.utc)
    others = {k: v for k, v in interval.items() if k not in ('weeks', 'days', 'hours', 'minutes', 'seconds')}
    return IntervalTrigger(seconds=seconds, start_date=aligned, **others)


fsdf_background_scheduler = FsdfBackgroundScheduler()

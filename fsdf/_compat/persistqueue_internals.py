"""persist-queue's ``SQLiteAckQueue`` internals: the table name hook, the writing connection and its lock.

fsdf keeps its queue in persist-queue's schema so other programs can use it, and adds its own tables
(leases, consumers, delayed messages) in the same database, written in the same transactions; that
needs the connection persist-queue writes with (``_putter``) and the lock it holds around writes
(``tran_lock``); fsdf reads message bodies with that connection too. The table is named after the queue by
overriding ``_table_name``.
"""
from __future__ import annotations

import sqlite3
import threading
from typing import cast

from persistqueue import SQLiteAckQueue


class QueueTable(SQLiteAckQueue):
    """persist-queue's acked queue in a table named after the queue itself (quoted for SQL)."""

    @property
    def _table_name(self) -> str:
        return '"{}"'.format(self.name.replace('"', '""'))


def writer(queue: SQLiteAckQueue) -> sqlite3.Connection:
    """The connection persist-queue writes with (with ``multithreading=True``, shared by all threads)."""
    return cast(sqlite3.Connection, queue._putter)  # persist-queue declares it None until its _init() opens it


def write_lock(queue: SQLiteAckQueue) -> threading.Lock:
    """The lock persist-queue holds around each write on ``writer(queue)``."""
    lock: threading.Lock = queue.tran_lock
    return lock


def table_name(queue: SQLiteAckQueue) -> str:
    """The queue's table name, quoted as persist-queue puts it in SQL."""
    name: str = queue._table_name
    return name

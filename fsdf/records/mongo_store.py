"""The MongoDB run store (``mongodb://...``): one store for consumers on many machines.

Collections ``fsdf_runs`` (``_id`` = task id), ``fsdf_rollups``, ``fsdf_tree_counts``,
``fsdf_consumers`` and ``fsdf_queues`` in the URL's database (``fsdf`` when it names none).
Records expire through a TTL index on ``expire_at``; :meth:`MongoRunStore.prune` also deletes
expired records itself, for servers whose TTL monitor is slow or absent. Pages are keyset pages on
``(end_time, _id)`` descending; keyword search is the text index over arguments, result and
exception. A flush is several unordered bulk writes, not one transaction (that needs a replica
set): a crash between them can leave rollups or tree counts one batch apart from the records.
The client is created by the process that uses the store (pymongo clients are not fork-safe).
"""
from __future__ import annotations

import datetime as dt
import re
import uuid
from collections import defaultdict
from typing import Any, Optional

from fsdf._optional import import_optional
from fsdf.records.model import GRANULARITIES, record_of
from fsdf.records.store import CONSUMERS_KEPT_SECONDS, Batch, RunFilter, RunStore

SERVER_TIMEOUT_MS = 2000  # a flush to a store that is away fails within this, and is retried later
_FILTER_FIELDS = ('queue', 'function', 'status', 'host', 'parent_task_id')
_TEXT_FIELDS = ('arguments', 'result', 'exception_type', 'exception_message')


class MongoRunStore(RunStore):
    """Run records and live state in MongoDB."""

    def __init__(self, url: str) -> None:
        pymongo = import_optional('pymongo', 'mongo', 'a mongodb:// RESULT_STORE_URL needs the pymongo client')
        self.url = url
        self._pymongo = pymongo
        self._client = pymongo.MongoClient(url, serverSelectionTimeoutMS=SERVER_TIMEOUT_MS,
                                           connectTimeoutMS=SERVER_TIMEOUT_MS, socketTimeoutMS=10 * SERVER_TIMEOUT_MS)
        db = self._client.get_default_database('fsdf')
        self._runs, self._rollups = db['fsdf_runs'], db['fsdf_rollups']
        self._trees, self._consumers, self._queues = db['fsdf_tree_counts'], db['fsdf_consumers'], db['fsdf_queues']
        self._indexed = False

    def _ensure_indexes(self) -> None:
        if self._indexed:
            return
        runs, desc = self._runs, self._pymongo.DESCENDING
        for name in (*_FILTER_FIELDS, 'root_task_id'):
            runs.create_index([(name, 1), ('end_time', desc)])
        runs.create_index([('end_time', desc)])
        runs.create_index('expire_at', expireAfterSeconds=0)
        runs.create_index([(name, 'text') for name in _TEXT_FIELDS], name='runs_text')
        self._rollups.create_index([('gran', 1), ('bucket', 1)])
        self._trees.create_index([('node', 1), ('kind', 1)])  # a node's counts, a page of nodes' counts ($in)
        self._indexed = True

    def close(self) -> None:
        self._client.close()

    # -- writing -------------------------------------------------------------------------
    def write(self, batch: Batch) -> None:
        self._ensure_indexes()
        ops = self._pymongo
        if batch.records or batch.rows:
            self._write_records([*batch.records, *map(record_of, batch.rows)])
        if batch.rollups:
            self._rollups.bulk_write([ops.UpdateOne(
                {'_id': f'{gran}|{bucket}|{queue}|{status}'},
                {'$inc': {'n': n, 'dur_sum': dur_sum}, '$max': {'dur_max': dur_max},
                 '$set': {'gran': gran, 'bucket': bucket, 'queue': queue, 'status': status}}, upsert=True)
                for (queue, status, gran, bucket), (n, dur_sum, dur_max) in batch.rollups.items()], ordered=False)
        if batch.consumers:
            # The id goes in the replacement too: some MongoDB-compatible servers give an upserted
            # replacement a fresh ObjectId, so each beat would add a consumer instead of replacing it.
            self._consumers.bulk_write([ops.ReplaceOne({'_id': cid}, {**info, '_id': cid}, upsert=True)
                                        for cid, info in batch.consumers.items()], ordered=False)
        if batch.queues:
            now = dt.datetime.now(dt.timezone.utc).timestamp()
            fresh = {'first_seen': now, 'paused': False}
            self._queues.bulk_write([ops.UpdateOne({'_id': name}, {'$set': {'broker_kind': kind},
                                                                   '$setOnInsert': fresh}, upsert=True)
                                     for name, kind in batch.queues.items()], ordered=False)

    def _write_records(self, records: list[dict[str, Any]]) -> None:
        ops = self._pymongo
        docs = {}
        for record in records:
            doc = {**record, 'expire_at': dt.datetime.fromtimestamp(record['expire_at'], dt.timezone.utc)}
            doc['_id'] = record['task_id'] or f'malformed-{uuid.uuid4().hex}'
            docs[doc['_id']] = doc
        deltas: dict[tuple[str, str, str], int] = defaultdict(int)
        for old in self._runs.find({'_id': {'$in': list(docs)}}, {'status': 1, 'parent_task_id': 1,
                                                                  'root_task_id': 1, 'task_id': 1}):
            _count_in_tree(deltas, old, -1)
        for doc in docs.values():
            _count_in_tree(deltas, doc, 1)
        self._runs.bulk_write([ops.ReplaceOne({'_id': key}, doc, upsert=True) for key, doc in docs.items()],
                              ordered=False)
        changes = [ops.UpdateOne({'_id': f'{node}|{kind}|{status}'},
                                 {'$inc': {'n': n}, '$set': {'node': node, 'kind': kind, 'status': status}},
                                 upsert=True) for (node, kind, status), n in deltas.items() if n]
        if changes:
            self._trees.bulk_write(changes, ordered=False)

    def prune(self, now: float, chunk: int = 2000) -> int:
        gone = self._runs.delete_many({'expire_at': {'$lt': dt.datetime.fromtimestamp(now, dt.timezone.utc)}})
        for gran, keep in GRANULARITIES:
            self._rollups.delete_many({'gran': gran, 'bucket': {'$lt': now - keep}})
        self._consumers.delete_many({'beat_time': {'$lt': now - CONSUMERS_KEPT_SECONDS}})
        return int(gone.deleted_count or 0)

    # -- reading -------------------------------------------------------------------------
    def page_runs(self, run_filter: RunFilter, limit: int, cursor: Optional[str],
                  fields: Optional[tuple[str, ...]] = None) -> tuple[list[dict[str, Any]], Optional[str]]:
        if run_filter.keyword:
            self._ensure_indexes()  # $text needs the text index, even on a store nothing wrote to yet
        query = _query(run_filter)
        if cursor:
            end_text, _, key = cursor.partition('|')
            end = float(end_text)
            query = {'$and': [query, {'$or': [{'end_time': {'$lt': end}}, {'end_time': end, '_id': {'$lt': key}}]}]}
        desc = self._pymongo.DESCENDING
        projection = None if fields is None else dict.fromkeys((*fields, 'end_time'), 1)  # end_time: the cursor's
        docs = list(self._runs.find(query, projection).sort([('end_time', desc), ('_id', desc)]).limit(limit + 1))
        page = [_record(doc, fields) for doc in docs[:limit]]
        if len(docs) <= limit:
            return page, None
        last = docs[limit - 1]
        return page, f'{last["end_time"]!r}|{last["_id"]}'

    def get_run(self, task_id: str) -> Optional[dict[str, Any]]:
        doc = self._runs.find_one({'_id': task_id})
        return _record(doc) if doc else None

    def tree_counts(self, task_id: str) -> dict[str, dict[str, int]]:
        counts: dict[str, dict[str, int]] = {'descendants': {}, 'children': {}}
        for doc in self._trees.find({'node': task_id}):
            if doc.get('n'):
                counts['descendants' if doc['kind'] == 'root' else 'children'][doc['status']] = doc['n']
        return counts

    def children_counts(self, task_ids: list[str]) -> dict[str, dict[str, int]]:
        counts: dict[str, dict[str, int]] = {task_id: {} for task_id in task_ids}
        for doc in self._trees.find({'node': {'$in': task_ids}, 'kind': 'parent'}):
            if doc.get('n'):
                counts[doc['node']][doc['status']] = doc['n']
        return counts

    def rollups(self, queue: Optional[str], granularity: int, since: float) -> list[dict[str, Any]]:
        query: dict[str, Any] = {'gran': granularity, 'bucket': {'$gte': int(since) - int(since) % granularity}}
        if queue is not None:
            query['queue'] = queue
        return [{'queue': d['queue'], 'status': d['status'], 'bucket': d['bucket'], 'count': d['n'],
                 'duration_sum': d['dur_sum'], 'duration_max': d['dur_max']}
                for d in self._rollups.find(query).sort('bucket', 1)]

    def consumers(self) -> list[dict[str, Any]]:
        return [{k: v for k, v in doc.items() if k != '_id'} for doc in self._consumers.find()]

    def queues(self) -> list[dict[str, Any]]:
        return [{'name': d['_id'], 'broker_kind': d.get('broker_kind'), 'first_seen': d.get('first_seen'),
                 'paused': bool(d.get('paused'))} for d in self._queues.find().sort('_id', 1)]

    def set_paused(self, queue: str, paused: bool) -> None:
        now = dt.datetime.now(dt.timezone.utc).timestamp()
        self._queues.update_one({'_id': queue}, {'$set': {'paused': paused, 'paused_at': now if paused else None},
                                                 '$setOnInsert': {'first_seen': now}}, upsert=True)

    def paused_queues(self) -> set[str]:
        return {doc['_id'] for doc in self._queues.find({'paused': True}, {'_id': 1})}


def _count_in_tree(deltas: dict[tuple[str, str, str], int], record: dict[str, Any], sign: int) -> None:
    task_id, status = record.get('task_id'), record.get('status')
    parent, root = record.get('parent_task_id'), record.get('root_task_id')
    if parent:
        deltas[(parent, 'parent', str(status))] += sign
    if root and root != task_id:
        deltas[(root, 'root', str(status))] += sign


def _query(run_filter: RunFilter) -> dict[str, Any]:
    query: dict[str, Any] = {}
    for name in _FILTER_FIELDS:
        value = getattr(run_filter, name)
        if value is not None:
            query[name] = value
    if run_filter.root_task_id is not None:  # descendants only, as in the SQLite store
        query['root_task_id'] = run_filter.root_task_id
        query['parent_task_id'] = {'$ne': None}
    if run_filter.since is not None or run_filter.until is not None:
        query['end_time'] = {**({'$gte': run_filter.since} if run_filter.since is not None else {}),
                             **({'$lt': run_filter.until} if run_filter.until is not None else {})}
    if run_filter.task_id:
        query['_id'] = {'$regex': '^' + re.escape(run_filter.task_id)}
    if run_filter.keyword:
        query['$text'] = {'$search': '"' + run_filter.keyword.replace('"', ' ') + '"'}
    return query


def _record(doc: dict[str, Any], fields: Optional[tuple[str, ...]] = None) -> dict[str, Any]:
    record = {k: v for k, v in doc.items() if k != '_id' and (fields is None or k in fields)}
    expire_at = record.get('expire_at')
    if isinstance(expire_at, dt.datetime):
        if expire_at.tzinfo is None:  # pymongo returns naive UTC datetimes by default
            expire_at = expire_at.replace(tzinfo=dt.timezone.utc)
        record['expire_at'] = expire_at.timestamp()
    return record

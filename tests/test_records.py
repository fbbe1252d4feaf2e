"""Run records, rollups, registry, pause/resume and the minute line, on SQLite and the MongoDB-wire server."""
from __future__ import annotations

import json
import os
import signal
import sys
import time
import uuid
from contextlib import ExitStack
from pathlib import Path
from typing import Any, Iterator

import pytest

import fsdf
from fsdf import BrokerEnum, ExceptionForRequeue, task_deco
from fsdf.brokers import get_broker
from fsdf.records import queries
from fsdf.records.sqlite_store import READERS
from fsdf.records.store import Batch, ReadTooLong, RunFilter, RunStore, open_store, quick_reads
from fsdf.records.writer import RecordWriter, _writers, flush_all
from helpers import wait_until
from web_data import flat_records, write_all

# Speeds, flush deadlines and the minute line are timed: under the parallel part's load they failed
# (a run expired before its turn, a speed ratio, a line's window). Run alone, after the parallel part.
pytestmark = pytest.mark.timing

LOCAL = BrokerEnum.LOCAL_PYTHON_QUEUE


def _use_store(url: str) -> None:
    os.environ['FSDF_RESULT_STORE_URL'] = url
    fsdf.patch_frame_config(RESULT_STORE_URL=url)


@pytest.fixture(params=['sqlite', 'mongo'])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[RunStore]:
    """A fresh run store, made the configured one (here and in scripts the test starts)."""
    if request.param == 'sqlite':
        url = f'sqlite:///{tmp_path}/runs.sqlite'
    else:
        server = request.getfixturevalue('mongo_server')
        url = f'mongodb://127.0.0.1:{server.port}/fsdf_rec_{uuid.uuid4().hex[:8]}'
    previous = fsdf.config.settings.RESULT_STORE_URL
    _use_store(url)
    opened = open_store(url)
    yield opened
    flush_all(1)
    _use_store(previous)
    os.environ.pop('FSDF_RESULT_STORE_URL', None)
    opened.close()


@pytest.fixture
def sqlite_store(tmp_path: Path) -> Iterator[RunStore]:
    url = f'sqlite:///{tmp_path}/runs.sqlite'
    previous = fsdf.config.settings.RESULT_STORE_URL
    _use_store(url)
    opened = open_store(url)
    yield opened
    flush_all(1)
    _use_store(previous)
    os.environ.pop('FSDF_RESULT_STORE_URL', None)


def _records(store: RunStore, **filters: Any) -> list[dict[str, Any]]:
    flush_all()
    found, cursor = [], None
    while True:
        page = queries.list_runs(**filters, cursor=cursor, limit=100, store=store)
        found.extend(page.records)
        cursor = page.next_cursor
        if cursor is None:
            return found


# -- records ---------------------------------------------------------------------------------
def test_every_status_gives_its_record(store: RunStore, queue_name: str) -> None:
    requeued_once: set[int] = set()

    @task_deco(queue_name, broker_kind=LOCAL, run_records=True, max_retry_times=1, msg_expire_seconds=0.3,
               do_task_filtering=True, concurrent_num=1)
    def work(x: int) -> int:
        if x == 1:
            raise ValueError(f'boom {x}')
        if x == 2 and x not in requeued_once:
            requeued_once.add(x)
            raise ExceptionForRequeue()
        return x * 10

    expired = work.push(9)
    time.sleep(0.5)  # the setup: this message is older than msg_expire_seconds when its turn comes
    ok, failed, requeued = work.push(0), work.push(1), work.push(2)
    filtered = work.push(0)  # the same arguments as a call that succeeded
    get_broker(LOCAL, queue_name).publish('{not json')
    work.drain(timeout=20)
    records = {r['task_id']: r for r in _records(store, queue=queue_name)}
    assert records[ok.task_id]['status'] == 'succeeded' and records[ok.task_id]['result'] == '0'
    assert json.loads(records[ok.task_id]['arguments']) == {'x': 0}
    fail = records[failed.task_id]
    assert (fail['status'], fail['exception_type'], fail['exception_message'], fail['retries']) == \
           ('failed', 'ValueError', 'boom 1', 1)
    assert 'Traceback' in fail['traceback']
    assert records[requeued.task_id]['status'] == 'succeeded'  # a task id keeps its latest record
    assert records[expired.task_id]['status'] == 'expired'
    assert records[filtered.task_id]['status'] == 'filtered'
    malformed = [r for r in records.values() if r['status'] == 'malformed']
    assert len(malformed) == 1 and malformed[0]['task_id'] is None and malformed[0]['exception_message']
    for record in records.values():
        assert record['queue'] == queue_name and record['host'] and record['pid'] == os.getpid()
        assert record['end_time'] and record['thread_id']
    assert records[ok.task_id]['queue_wait'] >= 0 and records[ok.task_id]['publish_time']
    assert records[ok.task_id]['function'].endswith('work')
    # the rollups count every settle, the requeue included
    counts = queries.queue_stats(queue_name, '60s', store=store).buckets
    totals: dict[str, int] = {}
    for bucket in counts:
        for status, n in bucket['counts'].items():
            totals[status] = totals.get(status, 0) + n
    assert totals == {'succeeded': 2, 'failed': 1, 'requeued': 1, 'expired': 1, 'filtered': 1, 'malformed': 1}


def test_parent_and_root_across_three_levels(store: RunStore, queue_name: str) -> None:
    @task_deco(f'{queue_name}_3', broker_kind=LOCAL, run_records=True)
    def leaf(x: int) -> int:
        return x

    @task_deco(f'{queue_name}_2', broker_kind=LOCAL, run_records=True)
    def middle(x: int) -> None:
        for i in range(3):
            leaf.push(x * 10 + i)

    @task_deco(f'{queue_name}_1', broker_kind=LOCAL, run_records=True)
    def top(x: int) -> None:
        middle.push(x)
        middle.push(x + 1)

    root = top.push(1)
    top.drain(timeout=10)
    middle.drain(timeout=10)
    leaf.drain(timeout=10)
    flush_all()
    top_record = queries.get_run(root.task_id, store=store)
    assert top_record is not None
    assert top_record['root_task_id'] == root.task_id and top_record['parent_task_id'] is None
    mids = queries.children(root.task_id, store=store).records
    assert len(mids) == 2 and all(m['root_task_id'] == root.task_id for m in mids)
    for mid in mids:
        leaves = queries.children(mid['task_id'], limit=2, store=store)
        more = queries.children(mid['task_id'], limit=2, cursor=leaves.next_cursor, store=store)
        assert len(leaves.records) == 2 and len(more.records) == 1 and more.next_cursor is None
        assert {r['root_task_id'] for r in leaves.records + more.records} == {root.task_id}
        assert queries.subtree_counts(mid['task_id'], store=store)['children'] == {'succeeded': 3}
    assert queries.subtree_counts(root.task_id, store=store) == {
        'descendants': {'succeeded': 8}, 'children': {'succeeded': 2}}
    leaf_id = queries.children(mids[0]['task_id'], store=store).records[0]['task_id']
    page_ids = [root.task_id, *(m['task_id'] for m in mids), leaf_id, 'no-such-task']
    assert queries.children_counts(page_ids, store=store) == {  # one read for a page of nodes, leaves as {}
        root.task_id: {'succeeded': 2}, mids[0]['task_id']: {'succeeded': 3}, mids[1]['task_id']: {'succeeded': 3},
        leaf_id: {}, 'no-such-task': {}}


def test_records_off_means_no_recorder(queue_name: str) -> None:
    fsdf.patch_frame_config(RUN_STATISTICS=False)
    try:
        @task_deco(queue_name, broker_kind=LOCAL)
        def work(x: int) -> None:
            pass
        from fsdf.records.middleware import LiveState, RunRecorder
        consumer = work.consumer
        assert not [m for m in consumer.middleware if isinstance(m, (LiveState, RunRecorder))]
    finally:
        fsdf.patch_frame_config(RUN_STATISTICS=True)


SIGTERM_SCRIPT = '''
import sys, threading
import fsdf.records.writer as writer
writer.FLUSH_SECONDS = 3600  # nothing is written before the drain: the test sees only what SIGTERM flushes
writer.FLUSH_SIZE = 10 ** 9
from fsdf import task_deco, BrokerEnum
done, lock = [0], threading.Lock()

@task_deco(sys.argv[1], broker_kind=BrokerEnum.PERSISTQUEUE, run_records=True, concurrent_num=4)
def work(x):
    with lock:
        done[0] += 1
        if done[0] == 1000:
            print('ran 1000', flush=True)

work.push_many(range(1000))
work.consume()
work.consumer.wait()
'''


def test_sigterm_drain_writes_every_record(sqlite_store: RunStore, queue_name: str, run_script: Any) -> None:
    import subprocess
    process = run_script(SIGTERM_SCRIPT, queue_name, stdout=subprocess.PIPE, text=True)
    assert process.stdout.readline().strip() == 'ran 1000'
    assert _records(sqlite_store, queue=queue_name) == []  # nothing flushed yet
    process.send_signal(signal.SIGTERM)
    assert process.wait(30) != 0 or True
    records = _records(sqlite_store, queue=queue_name)
    assert len(records) == 1000 and {r['status'] for r in records} == {'succeeded'}


def test_store_going_away_drops_and_counts_but_consuming_goes_on(queue_name: str) -> None:
    from servers._server_process import need
    from servers.mongo_server import MongoServer
    server = need(lambda: MongoServer(port=27217).start())
    url = f'mongodb://127.0.0.1:{server.port}/fsdf_away'
    writer = _writers[url] = RecordWriter(url, capacity=500)
    times: list[float] = []
    try:
        @task_deco(queue_name, broker_kind=LOCAL, run_records=True, concurrent_num=4)
        def work(x: int) -> None:
            times.append(time.monotonic())

        previous = fsdf.config.settings.RESULT_STORE_URL
        fsdf.patch_frame_config(RESULT_STORE_URL=url)
        try:
            consumer = work.consumer
        finally:
            fsdf.patch_frame_config(RESULT_STORE_URL=previous)
        work.push_many(range(500))
        consumer.start()
        assert wait_until(lambda: len(times) == 500, 30)
        assert wait_until(lambda: writer.written >= 500, 10)
        server.stop()
        up_rate = 500 / max(times[-1] - times[0], 1e-3)
        del times[:]
        work.push_many(range(5000))
        assert wait_until(lambda: len(times) == 5000, 60)
        down_rate = 5000 / max(times[-1] - times[0], 1e-3)
        assert writer.dropped >= 4000, writer.dropped
        assert queries.dropped_records() >= writer.dropped
        assert down_rate > up_rate / 3, (up_rate, down_rate)  # no worker waited for the store
        consumer.stop(grace=2)
    finally:
        _writers.pop(url, None)
        writer.close(0.1)
        server.stop()


# -- pruning and queries ------------------------------------------------------------------------
def _record(task_id: str, **fields: Any) -> dict[str, Any]:
    base = {'task_id': task_id, 'queue': 'q1', 'function': 'f', 'status': 'succeeded', 'arguments': '{"x": 1}',
            'result': None, 'exception_type': None, 'exception_message': None, 'traceback': None, 'retries': 0,
            'publish_time': 1000.0, 'start_time': 1000.0, 'end_time': 1000.0, 'duration': 0.0, 'queue_wait': 0.0,
            'host': 'h1', 'pid': 1, 'thread_id': 1, 'script': 's', 'parent_task_id': None, 'root_task_id': task_id,
            'expire_at': 10 ** 10}
    return {**base, **fields}


def test_pruning_removes_expired_records_and_old_buckets(store: RunStore) -> None:
    now = time.time()
    old = [_record(f'old{i}', end_time=now - 100, expire_at=now - 1) for i in range(30)]
    new = [_record(f'new{i}', end_time=now, expire_at=now + 3600) for i in range(5)]
    store.write(Batch(records=old + new, rollups={('q1', 'succeeded', 1, int(now) - 3 * 3600): [1, 0.0, 0.0],
                                                   ('q1', 'succeeded', 1, int(now)): [1, 0.0, 0.0]}))
    assert store.prune(now, chunk=10) >= 10
    while store.prune(now, chunk=10):
        pass
    left = {r['task_id'] for r in queries.list_runs(limit=100, store=store).records}
    assert left == {f'new{i}' for i in range(5)}
    assert [r['bucket'] for r in store.rollups('q1', 1, 0)] == [int(now)]


def test_every_filter_and_keyset_paging(store: RunStore) -> None:
    records = []
    for i in range(120):
        records.append(_record(
            f'{"ab" if i % 2 else "cd"}{i:04d}', queue='q1' if i < 60 else 'q2', function='f' if i % 3 else 'g',
            status='failed' if i % 10 == 0 else 'succeeded', end_time=1000.0 + i, host='h1' if i < 100 else 'h2',
            arguments='{"word": "%s"}' % ('zebra' if i == 77 else 'apple'),
            exception_message='disk full' if i == 40 else None))
    for start in range(0, 120, 40):
        store.write(Batch(records=records[start:start + 40]))
    by = {r['task_id']: r for r in records}

    def ids(**filters: Any) -> list[str]:
        return [r['task_id'] for r in _records(store, **filters)]

    everything = ids()
    assert everything == [r['task_id'] for r in sorted(records, key=lambda r: -r['end_time'])]  # newest first
    assert set(ids(queue='q2')) == {t for t, r in by.items() if r['queue'] == 'q2'}
    assert set(ids(function='g')) == {t for t, r in by.items() if r['function'] == 'g'}
    assert set(ids(status='failed')) == {t for t, r in by.items() if r['status'] == 'failed'}
    assert set(ids(since=1010, until=1020)) == {t for t, r in by.items() if 1010 <= r['end_time'] < 1020}
    assert set(ids(task_id='ab00')) == {t for t in by if t.startswith('ab00')}
    assert set(ids(host='h2')) == {t for t, r in by.items() if r['host'] == 'h2'}
    assert ids(search='zebra') == ['ab0077']
    assert ids(search='disk full') == ['cd0040']
    assert len(ids(search='apple')) == 119
    assert set(ids(queue='q1', status='failed', host='h1')) == {'cd0000', 'cd0010', 'cd0020', 'cd0030', 'cd0040',
                                                                'cd0050'}
    first = queries.list_runs(limit=7, store=store)
    second = queries.list_runs(limit=7, cursor=first.next_cursor, store=store)
    assert [r['task_id'] for r in first.records + second.records] == everything[:14]
    with pytest.raises(ValueError):
        queries.list_runs(limit=0, store=store)


def test_time_ranges_are_exact_whatever_order_records_were_written_in(store: RunStore) -> None:
    """Hosts' clocks apart, a late flush, an import of old records, the newest record replaced: none is missed."""
    now = time.time()
    ends = {f'recent{i}': now - 60 + i for i in range(40)}  # written first
    ends.update({f'import{i}': now - 86400 + i * 7 for i in range(40)})  # a day old, written after
    ends.update({f'skewed{i}': now + 3600 - i for i in range(20)})  # a host an hour ahead, newest first
    names = list(ends)
    for start in range(0, len(names), 15):
        store.write(Batch(records=[_record(n, end_time=ends[n]) for n in names[start:start + 15]]))
    ends[names[-1]] = now - 3 * 86400  # the newest record replaced by one ending three days ago
    store.write(Batch(records=[_record(names[-1], end_time=ends[names[-1]])]))
    store.write(Batch(records=[_record('late', end_time=now - 30)]))
    ends['late'] = now - 30
    moments = sorted({*ends.values(), now - 10 ** 6, now + 10 ** 6})
    for since, until in [(a, b) for a in moments[::9] for b in moments[::7] if a < b] + [(moments[5], None),
                                                                                          (None, moments[50])]:
        got = {r['task_id'] for r in _records(store, since=since, until=until)}
        assert got == {n for n, end in ends.items() if (since is None or end >= since) and
                       (until is None or end < until)}, (since, until)


def test_a_store_from_before_the_flush_bounds_gets_them(tmp_path: Path) -> None:
    url = f'sqlite:///{tmp_path}/runs.sqlite'
    older = open_store(url)
    older.write(Batch(records=[_record(f'r{i}', end_time=1000.0 + (i * 37) % 100) for i in range(100)]))
    older._db.execute('DELETE FROM flushes')  # type: ignore[attr-defined]  # as a store made before had none
    older.close()
    store = open_store(url)
    assert {r['task_id'] for r in _records(store, since=1050, until=1060)} == {
        f'r{i}' for i in range(100) if 1050 <= 1000 + (i * 37) % 100 < 1060}
    store.write(Batch(records=[_record('late', end_time=1055.5)]))
    db = store._db  # type: ignore[attr-defined]
    db.execute('DELETE FROM flushes WHERE first_id = (SELECT max(first_id) FROM flushes)')  # as an older fsdf wrote it
    assert 'late' in {r['task_id'] for r in _records(store, since=1055, until=1056)}  # found by a reader at once
    store.write(Batch(records=[_record('later', end_time=1055.7)]))  # the writer covers what it finds uncovered
    assert db.execute('SELECT count(*) FROM runs WHERE id > (SELECT max(last_id) FROM flushes)').fetchone()[0] == 0
    assert {'late', 'later'} <= {r['task_id'] for r in _records(store, since=1055, until=1056)}
    store.close()


OLD_INSERT_TRIGGER = """CREATE TRIGGER runs_fts_insert AFTER INSERT ON runs BEGIN
    INSERT INTO runs_fts(rowid, arguments, result, exception_type, exception_message)
    VALUES (new.id, new.arguments, new.result, new.exception_type, new.exception_message); END"""


def test_the_full_text_index_follows_replacements_pruning_and_older_stores(tmp_path: Path) -> None:
    """The index is written per batch, not by a trigger: it must still match the records exactly."""
    url = f'sqlite:///{tmp_path}/runs.sqlite'
    older = open_store(url)  # a store made before: its per-row insert trigger would index every record twice
    older._db.execute(OLD_INSERT_TRIGGER)  # type: ignore[attr-defined]
    older.close()
    store = open_store(url)
    db = store._db  # type: ignore[attr-defined]
    # Indexing twice gives the same answers (FTS5 merges a rowid's entries), at twice the write cost: so look.
    assert db.execute("SELECT count(*) FROM sqlite_master WHERE name = 'runs_fts_insert'").fetchone()[0] == 0
    now = time.time()
    store.write(Batch(records=[_record('t1', arguments='{"w": "walrus"}', status='retry_scheduled'),
                               _record('t2', arguments='{"w": "walrus narwhal"}', expire_at=now - 1)]))
    store.write(Batch(records=[_record('t1', arguments='{"w": "walrus"}', result='"orca"')]))  # replaces t1

    def found(word: str) -> list[str]:
        return [r['task_id'] for r in _records(store, search=word)]

    def index_matches_records() -> None:  # raises sqlite3.DatabaseError if the index and the table differ
        db.execute("INSERT INTO runs_fts(runs_fts) VALUES ('integrity-check')")

    assert found('walrus') == ['t1', 't2'] and found('orca') == ['t1']
    index_matches_records()
    assert store.prune(now) == 1
    assert found('walrus') == ['t1'] and found('narwhal') == []
    index_matches_records()
    store.close()


def test_a_replaced_record_moves_its_tree_counts(store: RunStore) -> None:
    store.write(Batch(records=[_record('root'), _record('kid', parent_task_id='root', root_task_id='root',
                                                        status='retry_scheduled')]))
    store.write(Batch(records=[_record('kid', parent_task_id='root', root_task_id='root', status='succeeded')]))
    assert store.tree_counts('root') == {'descendants': {'succeeded': 1}, 'children': {'succeeded': 1}}


def test_a_filtered_page_holds_the_same_records_as_the_whole_list(store: RunStore) -> None:
    """A column the filter fixes (queue, status, host, parent, root) holds its value, whichever fields are asked."""
    store.write(Batch(records=[_record(f'r{i}', queue=f'q{i % 2}', status='failed' if i % 3 else 'succeeded',
                                       host=f'h{i % 2}', parent_task_id='p' if i % 4 else None,
                                       root_task_id='p' if i % 4 else f'r{i}') for i in range(24)]))
    every = {r['task_id']: r for r in queries.list_runs(limit=100, store=store).records}
    for filters in ({'queue': 'q1'}, {'queue': 'q0', 'status': 'failed', 'host': 'h0'}, {'function': 'f'}):
        page = queries.list_runs(**filters, limit=100, store=store).records
        assert page and [list(r.items()) for r in page] == [list(every[r['task_id']].items()) for r in page]
        fields = ('task_id', 'queue', 'status')
        page = queries.list_runs(**filters, limit=100, fields=fields, store=store).records
        assert page == [{k: every[r['task_id']][k] for k in fields} for r in page]
    tree = queries.tree_runs('p', status='failed', limit=100, store=store).records
    assert tree and [r['root_task_id'] for r in tree] == ['p'] * len(tree) and tree[0] == every[tree[0]['task_id']]
    kids = queries.children('p', fields=('task_id', 'parent_task_id'), store=store).records
    assert len(kids) == 18 and {r['parent_task_id'] for r in kids} == {'p'}


def test_children_counts_of_task_ids_that_need_escaping(store: RunStore) -> None:
    """A page of nodes is counted in one read whatever its ids hold (quotes, backslashes, new lines, non-ASCII)."""
    odd = ['plain', 'quo"te', 'back\\slash', 'new\nline', 'naïve ✓', 'tab\there']
    records = [_record(parent) for parent in odd]
    for parent in odd:
        records += [_record(f'{parent}/kid{i}', parent_task_id=parent, root_task_id=parent,
                            status='failed' if i == 0 else 'succeeded') for i in range(3)]
    store.write(Batch(records=records))
    expected = {parent: {'failed': 1, 'succeeded': 2} for parent in odd}
    assert queries.children_counts(odd, store=store) == expected
    assert queries.children_counts(['plain', 'naïve ✓'], store=store) == {  # ids joined as they are
        'plain': expected['plain'], 'naïve ✓': expected['naïve ✓']}
    assert queries.children_counts([], store=store) == {}


def test_tree_queries_page_children_count_them_and_search_below_a_root(store: RunStore) -> None:
    """What the task-tree page reads: children 200 a page, each node's child counts, search inside, ancestors."""
    from web_data import tree_records, write_all
    write_all(store, tree_records('T', 700, width=250, inner=5, fail_every=50))
    first = queries.children('T', store=store)
    assert len(first.records) == 200 and first.next_cursor
    rest = queries.children('T', cursor=first.next_cursor, store=store)
    kids = [r['task_id'] for r in first.records + rest.records]
    assert len(kids) == len(set(kids)) == 250 and rest.next_cursor is None
    counts = queries.children_counts(['T-c00000', 'T-c00004', 'T-c00249'], store=store)
    assert sum(counts['T-c00000'].values()) == 90 and counts['T-c00249'] == {}
    assert sum(queries.subtree_counts('T', store=store)['descendants'].values()) == 699
    failed = queries.tree_runs('T', status='failed', limit=1000, store=store).records
    assert failed and {r['status'] for r in failed} == {'failed'} and 'T' not in {r['task_id'] for r in failed}
    assert {r['task_id'] for r in queries.tree_runs('T', task_id='T-g00001', store=store).records} == {
        f'T-g{i:06d}' for i in range(10, 20)}
    assert queries.ancestors('T-g000003', 'T', store=store) == ['T', 'T-c00003']
    assert queries.children('T', status='failed', store=store).records == [
        r for r in first.records + rest.records if r['status'] == 'failed']


def test_a_page_of_children_reads_only_the_fields_asked_for(store: RunStore) -> None:
    node_fields = ('task_id', 'status', 'duration', 'end_time', 'parent_task_id')
    store.write(Batch(records=[_record('root'), *(_record(f'kid{i}', parent_task_id='root', root_task_id='root',
                                                          arguments='{"big": "x"}') for i in range(5))]))
    page = queries.children('root', limit=3, fields=node_fields, store=store)
    assert [set(r) for r in page.records] == [set(node_fields)] * 3 and page.next_cursor
    rest = queries.children('root', limit=3, cursor=page.next_cursor, fields=node_fields, store=store)
    assert [r['task_id'] for r in page.records + rest.records] == [f'kid{i}' for i in range(4, -1, -1)]
    assert queries.children('root', limit=1, store=store).records[0]['arguments'] == '{"big": "x"}'  # all: None


def test_an_older_store_file_gets_the_covering_children_index(tmp_path: Path) -> None:
    """A store made before the covering index: opening it builds the index, and children pages read only it."""
    url = f'sqlite:///{tmp_path}/runs.sqlite'
    older = open_store(url)
    older.write(Batch(records=[_record('root'), _record('kid', parent_task_id='root', root_task_id='root')]))
    db = older._db  # type: ignore[attr-defined]
    db.execute('DROP INDEX runs_parent_nodes')  # as the store was: children found by (parent, id), rows read whole
    db.execute('CREATE INDEX runs_parent ON runs(parent_task_id, id) WHERE parent_task_id IS NOT NULL')
    older.close()
    store = open_store(url)
    db = store._db  # type: ignore[attr-defined]
    names = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
    assert 'runs_parent_nodes' in names and 'runs_parent' not in names
    fields = ('task_id', 'status', 'function', 'queue', 'duration', 'start_time', 'end_time', 'retries',
              'exception_type', 'parent_task_id', 'root_task_id')
    plan = db.execute(f'EXPLAIN QUERY PLAN SELECT {", ".join(fields)}, id FROM runs WHERE parent_task_id = ? '
                      'AND id < ? ORDER BY id DESC LIMIT 201', ('root', 10)).fetchall()
    assert 'COVERING INDEX runs_parent_nodes' in str([tuple(row) for row in plan])
    assert [r['task_id'] for r in queries.children('root', fields=fields, store=store).records] == ['kid']
    store.close()


def test_a_quick_read_stops_when_late_or_when_every_connection_is_lent(sqlite_store: RunStore) -> None:
    """Under quick_reads a SQLite read never makes its caller wait long: a scan past the deadline and a read
    finding every connection lent raise ReadTooLong; the connection serves ordinary reads afterwards."""
    write_all(sqlite_store, flat_records(3000, queues=3))
    scan = RunFilter(host='nobody')  # no index on host: every record is read
    with quick_reads(0), pytest.raises(ReadTooLong):
        sqlite_store.page_runs(scan, 10, None)
    with quick_reads(10):
        assert len(sqlite_store.page_runs(RunFilter(queue='flat_q0'), 10, None)[0]) == 10
    assert sqlite_store.page_runs(scan, 10, None) == ([], None)  # no deadline left behind on the connection
    readers = sqlite_store._readers  # type: ignore[attr-defined]
    with ExitStack() as lent:
        for _ in range(READERS):
            lent.enter_context(readers.connection())
        started = time.monotonic()
        with quick_reads(10), pytest.raises(ReadTooLong):
            sqlite_store.get_run('flat-1')
        assert time.monotonic() - started < 1
    with quick_reads(10):
        assert sqlite_store.get_run('no-such-task') is None


# -- registry, pause and the minute line ---------------------------------------------------------
def test_a_beat_carries_the_in_flight_count_and_the_records_dropped(store: RunStore, queue_name: str,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """The dashboard's overview sums ``counters.in_flight`` and ``counters.records_dropped`` over live consumers."""
    import threading
    from fsdf.records import middleware
    # What a beat carries is under test, not how often one comes: beat at each pause poll (1 s), not every 3 s.
    monkeypatch.setattr(middleware, 'BEAT_SECONDS', 0.5)
    release = threading.Event()

    @task_deco(queue_name, broker_kind=LOCAL, concurrent_num=3)
    def work(x: int) -> None:
        release.wait(30)

    def counters() -> dict[str, Any]:
        found = queries.list_consumers(queue_name, include_gone=False, store=store)
        assert len(found) <= 1, found  # one consumer: each beat replaces its entry
        return found[0]['counters'] if found else {}

    work.push_many(range(5))
    work.consume()
    try:
        assert wait_until(lambda: counters().get('in_flight', 0) >= 3, 20), counters()
        assert counters()['records_dropped'] == 0
        release.set()
        assert wait_until(lambda: counters().get('in_flight') == 0, 20), counters()
    finally:
        release.set()
        work.consumer.stop(grace=2)

PAUSE_SCRIPT = '''
import sys, time
from fsdf import task_deco, BrokerEnum

@task_deco(sys.argv[1], broker_kind=BrokerEnum.PERSISTQUEUE, concurrent_num=2)
def work(x):
    print('ran', x, time.time(), flush=True)

work.consume()
work.consumer.wait()
'''


def test_pause_and_resume_seen_within_two_seconds_by_two_processes(sqlite_store: RunStore, queue_name: str,
                                                                      run_script: Any) -> None:
    import subprocess
    processes = [run_script(PAUSE_SCRIPT, queue_name, stdout=subprocess.PIPE, text=True) for _ in range(2)]
    assert wait_until(lambda: len(queries.list_consumers(queue_name, include_gone=False, store=sqlite_store)) == 2,
                      60)
    assert [q['broker_kind'] for q in queries.list_queues(store=sqlite_store) if q['name'] == queue_name] == \
           ['PERSISTQUEUE']
    queries.pause_queue(queue_name, store=sqlite_store)
    time.sleep(2.0)  # the promise under test: within 2 s every consumer has stopped fetching
    broker = get_broker(BrokerEnum.PERSISTQUEUE, queue_name)
    for i in range(20):
        broker.publish('{"x": %d}' % i)
    time.sleep(2.0)  # paused consumers must leave these alone
    assert broker.count() == 20
    assert all(q['paused'] for q in queries.list_queues(store=sqlite_store) if q['name'] == queue_name)
    resumed = time.time()
    queries.resume_queue(queue_name, store=sqlite_store)
    assert wait_until(lambda: broker.count() == 0, 10)
    first_run = min(float(line.split()[2]) for p in processes for line in _lines_until_ran(p))
    assert first_run - resumed <= 2.0
    for process in processes:
        process.send_signal(signal.SIGTERM)
        process.wait(30)


def _lines_until_ran(process: Any) -> list[str]:
    """The first 'ran' line of a consumer script, read without blocking for long."""
    import selectors
    selector = selectors.DefaultSelector()
    selector.register(process.stdout, selectors.EVENT_READ)
    lines = []
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and selector.select(0.2):
        line = process.stdout.readline()
        if line.startswith('ran'):
            lines.append(line)
            break
    return lines


def test_minute_line_says_speed_waiting_and_time_left(sqlite_store: RunStore, queue_name: str,
                                                      fsdf_logs: pytest.LogCaptureFixture) -> None:
    fsdf.patch_frame_config(RUN_STATS_LOG_SECONDS=1)
    try:
        @task_deco(queue_name, broker_kind=LOCAL, concurrent_num=1)
        def work(x: int) -> None:
            time.sleep(0.02)

        work.push_many(range(400))
        work.consume()
        assert wait_until(lambda: 'left at' in fsdf_logs.text, 20)
        work.consumer.stop(grace=2)
    finally:
        fsdf.patch_frame_config(RUN_STATS_LOG_SECONDS=60)
    line = next(r.getMessage() for r in fsdf_logs.records if 'left at' in r.getMessage())
    assert f'queue {queue_name!r}: ' in line and 'runs in the last 1 s' in line and 'waiting, about' in line


def test_stats_windows(store: RunStore) -> None:
    now = 1_000_000.0
    store.write(Batch(rollups={('q', 'succeeded', 60, 999_960): [3, 1.5, 0.9],
                                      ('q', 'failed', 60, 999_960): [1, 0.1, 0.1]}))
    series = queries.queue_stats('q', '60m', now=now, store=store)
    assert series.granularity == 60
    assert series.buckets == [{'bucket': 999_960, 'counts': {'succeeded': 3, 'failed': 1}, 'duration_sum': 1.6,
                               'duration_max': 0.9}]
    for bad in ('', '10', '5w', '0s'):
        with pytest.raises(ValueError):
            queries.parse_window(bad)


def test_threads_do_not_block_on_a_slow_store(queue_name: str) -> None:
    """A writer whose store never opens: add() still returns at once and counts what it drops."""
    from fsdf.controls.base import RunOutcome
    from fsdf.records.middleware import RunRecorder
    writer = RecordWriter('mongodb://127.0.0.1:1/never', capacity=10)
    recorder = RunRecorder(writer, queue_name, 'f', True, True, 60)
    started = time.monotonic()
    for i in range(1000):
        recorder.after_settle(RunOutcome(str(i), {}, {}, 'succeeded', finished=time.time()))
    assert time.monotonic() - started < 0.5
    assert writer.dropped >= 990
    writer._closed = True


def test_a_chunk_of_runs_is_buffered_in_order_and_what_overflows_is_counted(tmp_path: Any) -> None:
    from fsdf.controls.base import RunOutcome
    from fsdf.records.middleware import RunRecorder
    writer = RecordWriter(f'sqlite:///{tmp_path}/runs.sqlite', capacity=10)
    writer._closed = True  # its thread ends: the buffer holds what the recorder put there
    writer._wake.set()
    writer._thread.join(5)
    recorder = RunRecorder(writer, 'q', 'f', True, False, 60)
    recorder.after_settle_many([RunOutcome(str(i), {}, {}, 'succeeded', finished=time.time()) for i in range(4)])
    recorder.after_settle_many([RunOutcome(str(i), {}, {}, 'succeeded', finished=time.time()) for i in range(4, 12)])
    assert [outcome.task_id for _, outcome, _ in writer.buffer] == [str(i) for i in range(2, 12)]
    assert writer.dropped == 2  # the oldest two


def test_statistics_of_a_chunk_count_every_run_whichever_way_it_is_summed(tmp_path: Any) -> None:
    """Without records, a chunk of successes within one second is summed as one entry; a chunk with another
    status, or across a second, goes run by run. The rollups read back hold every run either way."""
    from fsdf.controls.base import RunOutcome
    from fsdf.records.middleware import RunRecorder
    writer = RecordWriter(f'sqlite:///{tmp_path}/runs.sqlite')
    writer._closed = True  # its thread ends: this test flushes, after looking at the buffer
    writer._wake.set()
    writer._thread.join(5)
    recorder = RunRecorder(writer, 'q', 'f', False, False, 60)
    second = 1_800_000_000

    def run(status: str, at: float, took: float) -> RunOutcome:
        return RunOutcome(None, {}, {}, status, started=second + at, finished=second + at + took)

    recorder.after_settle_many([run('succeeded', 0.1, 0.01 * (i + 1)) for i in range(5)])  # one second: summed
    recorder.after_settle_many([run('succeeded', 0.2, 0.5), run('expired', 0.3, 0.0)])     # two statuses
    recorder.after_settle_many([run('succeeded', 0.9, 0.05), run('succeeded', 0.95, 0.1)])  # ends past the second
    assert [type(outcome).__name__ for _, outcome, _ in writer.buffer] == ['tuple'] + ['RunOutcome'] * 4
    assert writer._flush_once()
    series = queries.queue_stats('q', '60m', now=second + 60, store=writer.store())
    assert len(series.buckets) == 1
    bucket = series.buckets[0]
    assert bucket['counts'] == {'succeeded': 8, 'expired': 1}
    assert bucket['duration_sum'] == pytest.approx(0.15 + 0.5 + 0.05 + 0.1)
    assert bucket['duration_max'] == pytest.approx(0.5)
    writer.store().close()


if sys.platform == 'win32':  # pragma: no cover
    pytest.skip('POSIX signals', allow_module_level=True)


def test_pause_of_a_redis_queue_travels_through_redis(sqlite_store: RunStore, queue_name: str,
                                                      redis_server: Any) -> None:
    """A Redis queue's flag is also in Redis, so consumers whose store is another machine's SQLite see it."""
    ran: list[int] = []

    @task_deco(queue_name, broker_kind=BrokerEnum.REDIS_ACK_ABLE, concurrent_num=2)
    def work(x: int) -> None:
        ran.append(x)

    work.consume()
    assert wait_until(lambda: len(queries.list_consumers(queue_name, include_gone=False, store=sqlite_store)) == 1,
                      20)
    queries.pause_queue(queue_name, store=sqlite_store)
    sqlite_store.set_paused(queue_name, False)  # as seen from a machine with its own store: only Redis says so
    time.sleep(2.0)  # within 2 s the consumer stops fetching
    work.push_many(range(10))
    time.sleep(2.0)
    assert ran == [] and work.get_message_count() == 10
    queries.resume_queue(queue_name, store=sqlite_store)
    assert wait_until(lambda: len(ran) == 10, 10)
    work.consumer.stop(grace=2)


EXIT_SCRIPT = '''
import time
import fsdf.records.writer as writer
writer.FLUSH_SECONDS = 3600  # nothing is written before exit: the test sees only what the exit flush writes
writer.FLUSH_SIZE = 10 ** 9
from fsdf.controls.base import RunOutcome
from fsdf.records.middleware import RunRecorder
from fsdf.records.store import default_store_url
recorder = RunRecorder(writer.writer_for(default_store_url()), 'exit_q', 'f', True, True, 3600)
for i in range(300):
    recorder.after_settle(RunOutcome(f'exit{i}', {'i': i}, {}, 'succeeded', started=time.time(), finished=time.time()))
'''


def test_records_buffered_at_exit_are_written(sqlite_store: RunStore, run_script: Any) -> None:
    process = run_script(EXIT_SCRIPT)
    assert process.wait(30) == 0
    assert len(_records(sqlite_store, queue='exit_q')) == 300

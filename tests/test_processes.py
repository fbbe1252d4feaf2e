"""PERSISTQUEUE across processes: shared queue, kill -9 recovery, graceful SIGTERM/SIGINT, batched acks."""
from __future__ import annotations

import json
import signal
import sqlite3
from pathlib import Path

import pytest
from helpers import wait_until

from fsdf import BrokerEnum, get_publisher
from fsdf.brokers import broker_class

CONSUMER = '''
import os, sys, time
from pathlib import Path
from fsdf import task_deco, BrokerEnum

queue, out, sleep, mode = sys.argv[1], Path(sys.argv[2]), float(sys.argv[3]), sys.argv[4]

@task_deco(queue, broker_kind=BrokerEnum.PERSISTQUEUE, concurrent_num=4)
def work(i):
    with open(out, 'a') as f:
        f.write(f'start {i}\\n')
    time.sleep(sleep)
    with open(out, 'a') as f:
        f.write(f'end {i}\\n')

if mode == 'drain-on-go':
    Path(f'{out}.ready').touch()
    while not Path(f'{out.parent}/go').exists():
        time.sleep(0.01)
    work.drain(timeout=60)
else:
    work.consume()
'''


def lines(path: Path, kind: str) -> list[int]:
    if not path.exists():
        return []
    return [int(line.split()[1]) for line in path.read_text().splitlines() if line.startswith(kind)]


def ran_twice_or_never(done: list[list[int]], total: int) -> str:
    """Which messages ran more than once (and in which processes) and which never ran."""
    runs = {i: [k for k, ends in enumerate(done) for n in ends if n == i] for i in range(total)}
    twice = {i: where for i, where in runs.items() if len(where) > 1}
    return f'ran twice (message: processes): {twice}; never ran: {[i for i, w in runs.items() if not w]}'


def test_two_processes_share_a_queue_and_run_each_message_once(queue_name, run_script, tmp_path) -> None:
    outs = [tmp_path / 'a.txt', tmp_path / 'b.txt']
    procs = [run_script(CONSUMER, queue_name, str(out), '0.01', 'drain-on-go') for out in outs]
    assert wait_until(lambda: all(Path(f'{out}.ready').exists() for out in outs))
    get_publisher(queue_name, BrokerEnum.PERSISTQUEUE).publish_many([{'i': i} for i in range(300)])
    (tmp_path / 'go').touch()
    for proc in procs:
        assert proc.wait(60) == 0
    done = [lines(out, 'end') for out in outs]
    # every message once, none twice; if not, say which and where (a rare failure must explain itself)
    assert sorted(done[0] + done[1]) == list(range(300)), ran_twice_or_never(done, 300)
    assert done[0] and done[1]  # both processes took part


def test_kill_9_mid_run_loses_nothing(queue_name, run_script, tmp_path) -> None:
    publisher = get_publisher(queue_name, BrokerEnum.PERSISTQUEUE)
    publisher.publish_many([{'i': i} for i in range(60)])
    first = run_script(CONSUMER, queue_name, str(tmp_path / 'first.txt'), '0.2', 'consume')
    assert wait_until(lambda: len(lines(tmp_path / 'first.txt', 'end')) >= 5)
    first.send_signal(signal.SIGKILL)
    first.wait(10)
    finished_by_first = set(lines(tmp_path / 'first.txt', 'end'))
    second = run_script(CONSUMER, queue_name, str(tmp_path / 'second.txt'), '0.01', 'drain-on-go')
    (tmp_path / 'go').touch()
    assert second.wait(60) == 0
    finished = finished_by_first | set(lines(tmp_path / 'second.txt', 'end'))
    assert finished == set(range(60))
    assert publisher.get_message_count() == 0


@pytest.mark.parametrize('sig', [signal.SIGTERM, signal.SIGINT], ids=['SIGTERM', 'SIGINT'])
def test_signal_finishes_running_calls_and_gives_back_the_rest(queue_name, run_script, tmp_path, sig) -> None:
    out = tmp_path / 'out.txt'
    publisher = get_publisher(queue_name, BrokerEnum.PERSISTQUEUE)
    publisher.publish_many([{'i': i} for i in range(20)])
    proc = run_script(CONSUMER, queue_name, str(out), '1.0', 'consume')
    assert wait_until(lambda: len(lines(out, 'start')) == 4)
    proc.send_signal(sig)
    assert proc.wait(15) == 0
    started, ended = lines(out, 'start'), lines(out, 'end')
    assert sorted(started) == sorted(ended)  # every call that started was allowed to finish
    assert publisher.get_message_count() == 20 - len(ended)  # nothing taken and not run is lost


# -- batched acks: kept in memory, deleted with the next write transaction ----------------------------------
ACKER = '''
import sys, time
from pathlib import Path
from fsdf import BrokerEnum
from fsdf.brokers import get_broker, persist_queue

persist_queue.ACK_FLUSH_SECONDS = 3600  # no flusher deletes: only a take, close() or the exit does
queue, out, end = sys.argv[1], Path(sys.argv[2]), sys.argv[3]
broker = get_broker(BrokerEnum.PERSISTQUEUE, queue)
broker.lease_check_seconds = 3600  # beats nothing after the first: no lease check's transaction either
broker.start_leases()
taken = broker.fetch(100, 10)
for delivery in taken:
    broker.ack(delivery)
out.write_text(str(len(taken)))
if end == 'wait':
    time.sleep(60)
'''


def rows_in_file(queue_name: str) -> int:
    """Rows of the queue's table, whatever their state (waiting, taken, acked and not yet deleted)."""
    from fsdf.config import settings
    with sqlite3.connect(settings.path('PERSIST_QUEUE_PATH') / f'{queue_name}.sqlite') as db:
        return db.execute(f'SELECT COUNT(*) FROM "{queue_name}"').fetchone()[0]


def test_acks_are_deleted_by_the_next_take_or_within_a_tenth_of_a_second(queue_name) -> None:
    broker = broker_class(BrokerEnum.PERSISTQUEUE)(queue_name)
    try:
        broker.publish_many(['{"n": 1}', '{"n": 2}', '{"n": 3}'])
        first, second, third = broker.fetch(3, 5)
        broker.ack(first)
        assert rows_in_file(queue_name) == 3  # noted, not written: the ack cost no transaction of its own
        broker.fetch(1, 0)  # the next take (empty here) carries it
        assert rows_in_file(queue_name) == 2
        broker.ack(second)
        assert wait_until(lambda: rows_in_file(queue_name) == 1, timeout=0.1 + 0.4, interval=0.005)
        broker.ack(third)
    finally:
        broker.close()
    assert rows_in_file(queue_name) == 0  # close() deleted the last one


def test_acked_messages_never_come_back_after_a_clean_exit(queue_name, run_script, tmp_path) -> None:
    get_publisher(queue_name, BrokerEnum.PERSISTQUEUE).publish_many([{'i': i} for i in range(100)])
    proc = run_script(ACKER, queue_name, str(tmp_path / 'acked'), 'exit')
    assert proc.wait(60) == 0 and (tmp_path / 'acked').read_text() == '100'
    assert rows_in_file(queue_name) == 0  # deleted at exit, though no take or flusher came
    other = broker_class(BrokerEnum.PERSISTQUEUE)(queue_name)
    try:
        assert other.recover_abandoned() == 0 and other.fetch(100, 0.2) == []
    finally:
        other.close()


def test_kill_9_after_acks_before_their_delete_only_delivers_them_again(queue_name, run_script, tmp_path) -> None:
    get_publisher(queue_name, BrokerEnum.PERSISTQUEUE).publish_many([{'i': i} for i in range(100)])
    proc = run_script(ACKER, queue_name, str(tmp_path / 'acked'), 'wait')
    assert wait_until(lambda: (tmp_path / 'acked').exists(), timeout=30)
    assert (tmp_path / 'acked').read_text() == '100' and rows_in_file(queue_name) == 100  # acked, kept
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)
    other = broker_class(BrokerEnum.PERSISTQUEUE)(queue_name)
    try:
        assert other.recover_abandoned() == 100  # the dead consumer's messages, acked or not, come back
        again = other.fetch(100, 5)
        assert sorted(json.loads(d.body)['i'] for d in again) == list(range(100))  # each at least once
        for delivery in again:
            other.ack(delivery)
    finally:
        other.close()
    assert rows_in_file(queue_name) == 0


def test_a_consumer_stopped_by_sigterm_leaves_no_acked_message_behind(queue_name, run_script, tmp_path) -> None:
    out = tmp_path / 'out.txt'
    get_publisher(queue_name, BrokerEnum.PERSISTQUEUE).publish_many([{'i': i} for i in range(200)])
    proc = run_script(CONSUMER, queue_name, str(out), '0', 'consume')
    assert wait_until(lambda: len(lines(out, 'end')) == 200, timeout=60)
    proc.send_signal(signal.SIGTERM)  # right after the last call: its ack may not be written yet
    assert proc.wait(15) == 0
    assert rows_in_file(queue_name) == 0
    again = run_script(CONSUMER, queue_name, str(tmp_path / 'again.txt'), '0', 'drain-on-go')
    (tmp_path / 'go').touch()
    assert again.wait(60) == 0 and lines(tmp_path / 'again.txt', 'start') == []  # nothing ran twice

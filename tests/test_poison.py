"""Poison messages on every broker kind: bad bodies, each in one batch with good ones, written as a
foreign program would (raw bytes a client library sends as they are).

What a user relies on: every good message of the batch runs, every bad one is in ``<queue>_dlq``,
kept whole, with the reason; nothing stays held by a consumer (issue 18, items 1 and 2).
"""
from __future__ import annotations

import base64
import json
import sqlite3
import threading
import time
from typing import Any, Optional

import pytest

from fsdf import BrokerEnum, Middleware, task_deco
from fsdf.brokers import get_broker
from fsdf.brokers.persist_queue import queue_table
from fsdf.config import settings
from fsdf.message import EXTRA_TYPES
from fsdf.controls.overrides import MESSAGE_OVERRIDES
from conftest import _point_fsdf_at
from helpers import wait_until
from test_consume import dead_letters

# name: (body as a foreign producer sends it, what the dead letter's error says)
BAD_BODIES: dict[str, tuple[bytes, str]] = {
    'not_utf8': (b'{"x": "\xff\xfe"}', 'UnicodeDecodeError'),
    'not_json': (b'hello', 'not JSON'),
    'not_object': (b'[1, 2]', 'not a JSON object but list'),
    'deep_nesting': (b'[' * 100_000 + b']' * 100_000, 'RecursionError'),
    'lone_surrogate': (b'{"x": "\\ud800"}', 'lone surrogate'),
    'extra_not_object': (b'{"x": 1, "extra": 5}', "'extra' is not an object"),
    'eta_string': (b'{"x": 1, "extra": {"eta": "soon"}}', "'extra.eta' must be a number"),
    'retries_string': (b'{"x": 1, "extra": {"retries": "3"}}', "'extra.retries' must be an integer"),
    'priority_bool': (b'{"x": 1, "extra": {"priority": true}}', "'extra.priority' must be an integer"),
    'task_id_number': (b'{"x": 1, "extra": {"task_id": 7}}', "'extra.task_id' must be a string"),
    'timeout_negative': (b'{"x": 1, "extra": {"function_timeout": -1}}', "'extra.function_timeout' is out of range"),
    'eta_infinite': (b'{"x": 1, "extra": {"eta": Infinity}}', "'extra.eta' is out of range"),
    'does_not_fit': (b'{"y": 1}', 'does not fit'),
}
GOOD_COUNT = 5
ALL_KINDS = {
    'local': (BrokerEnum.LOCAL_PYTHON_QUEUE, None), 'persist': (BrokerEnum.PERSISTQUEUE, None),
    'redis': (BrokerEnum.REDIS, 'redis_server'), 'redis_ack': (BrokerEnum.REDIS_ACK_ABLE, 'redis_server'),
    'brpoplpush': (BrokerEnum.RedisBrpopLpush, 'redis_server'), 'stream': (BrokerEnum.REDIS_STREAM, 'redis_server'),
    'amqpstorm': (BrokerEnum.RABBITMQ_AMQPSTORM, 'rabbitmq_server'),
    'pika': (BrokerEnum.RABBITMQ_PIKA, 'rabbitmq_server'),
    'kafka': (BrokerEnum.KAFKA, 'kafka_server'), 'mongo': (BrokerEnum.MONGOMQ, 'mongo_server'),
    'sql_sqlite': (BrokerEnum.SQLACHEMY, 'sqlite'), 'sql_postgres': (BrokerEnum.SQLACHEMY, 'postgres_server'),
}


@pytest.fixture(params=list(ALL_KINDS.values()), ids=list(ALL_KINDS))
def any_kind(request: pytest.FixtureRequest) -> BrokerEnum:
    """Every broker kind, its server started by the session's fixture."""
    kind, server = request.param
    if kind == BrokerEnum.SQLACHEMY:  # SQLite in the tests' folder, or the session's PostgreSQL
        url = '' if server == 'sqlite' else request.getfixturevalue(server).url
        _point_fsdf_at('SQLACHEMY_ENGINE_URL', url)
        request.addfinalizer(lambda: _point_fsdf_at('SQLACHEMY_ENGINE_URL', ''))
    elif server:
        request.getfixturevalue(server)
    return kind


def publish_raw(kind: BrokerEnum, queue_name: str, bodies: list[bytes]) -> None:
    """Put bodies on the queue in one go, as bytes, the way another program's client would."""
    broker = get_broker(kind, queue_name)
    if kind == BrokerEnum.PERSISTQUEUE:
        # Another program writing TEXT that is not UTF-8 (CAST keeps the bytes, types them as text).
        path = settings.path('PERSIST_QUEUE_PATH') / f'{queue_name}.sqlite'
        with sqlite3.connect(path) as db:
            db.executemany(f'INSERT INTO {queue_table(queue_name)} (data, timestamp, status) '
                           'VALUES (CAST(? AS TEXT), ?, 0)', [(body, time.time()) for body in bodies])
        db.close()
    elif kind == BrokerEnum.SQLACHEMY and broker._engine.dialect.name == 'sqlite':  # type: ignore[attr-defined]
        # Another program writing TEXT that is not UTF-8 (PostgreSQL refuses it; SQLite keeps it).
        with broker._engine.begin() as connection:  # type: ignore[attr-defined]
            connection.exec_driver_sql(f'INSERT INTO "{queue_name}" (body) VALUES (CAST(? AS TEXT))',
                                       [(body,) for body in bodies])
    elif kind == BrokerEnum.SQLACHEMY:  # PostgreSQL: a text column, UTF-8 only (can_carry)
        broker.publish_many([body.decode() for body in bodies])
    elif kind == BrokerEnum.MONGOMQ:
        _insert_mongo_strings(broker, bodies)
    else:
        broker.publish_many(bodies)  # type: ignore[arg-type]  # every client sends bytes as they are


def can_carry(kind: BrokerEnum, body: bytes) -> bool:
    """False for a body no program can put on this backend (PostgreSQL text refuses bytes that are not UTF-8)."""
    if kind != BrokerEnum.SQLACHEMY or not settings.SQLACHEMY_ENGINE_URL:
        return True
    try:
        body.decode()
    except UnicodeDecodeError:
        return False
    return True


def _insert_mongo_strings(broker, bodies: list[bytes]) -> None:
    """Insert each body as a BSON string, as another program's driver would; one that is not UTF-8
    as BSON binary (MongoDB, and the test server, refuse a string that is not UTF-8)."""
    now = time.time()
    documents = []
    for body in bodies:
        try:
            msg: str | bytes = body.decode()
        except UnicodeDecodeError:
            msg = body  # pymongo stores bytes as binary
        documents.append({'msg': msg, 'state': 0, 'time': now})
    broker._collection.insert_many(documents)


def original_body(letter: dict) -> bytes:
    """The body a dead letter keeps: whole text, base64 bytes, or the decoded message without its reason."""
    if 'raw_body_base64' in letter:
        return base64.b64decode(letter['raw_body_base64'])
    if 'raw_body' in letter:
        return letter['raw_body'].encode('utf-8', 'surrogatepass')
    extra = {k: v for k, v in letter['extra'].items() if k != 'dead_letter'}
    arguments = {k: v for k, v in letter.items() if k != 'extra'}
    return json.dumps({**arguments, **({'extra': extra} if extra else {})}).encode()


def test_bad_messages_are_dead_lettered_and_the_rest_of_their_batch_runs(queue_name: str, any_kind) -> None:
    ran: list[int] = []
    lock = threading.Lock()

    @task_deco(queue_name, broker_kind=any_kind, concurrent_num=4)
    def work(x):
        with lock:
            ran.append(x)

    bad_bodies = {name: case for name, case in BAD_BODIES.items() if can_carry(any_kind, case[0])}
    bad = [body for body, _ in bad_bodies.values()]
    work.get_message_count()  # the queue exists (a stream's group, a Kafka topic) before the raw publish
    publish_raw(any_kind, queue_name, [*bad, *(json.dumps({'x': i}).encode() for i in range(GOOD_COUNT))])
    dlq = get_broker(any_kind, f'{queue_name}_dlq')
    work.consume()
    try:
        assert wait_until(lambda: len(ran) == GOOD_COUNT and dlq.count() == len(bad), 60), \
            f'ran {sorted(ran)}, {dlq.count()} of {len(bad)} bad ones dead-lettered'
    finally:
        work.stop(grace=5)
    assert sorted(ran) == list(range(GOOD_COUNT))
    letters = dead_letters(any_kind, queue_name)
    assert len(letters) == len(bad)
    kept = {original_body(letter): letter['extra']['dead_letter'] for letter in letters}
    for name, (body, why) in bad_bodies.items():
        if name == 'does_not_fit':
            body = json.dumps(json.loads(body)).encode()  # decoded, so kept as the message it was
        assert body in kept, f'{name} is not in the DLQ whole'
        assert kept[body]['reason'] == 'malformed' and why in kept[body]['error'], (name, kept[body])
    assert work.get_message_count() == 0


def test_extra_types_follow_the_override_rules() -> None:
    # One source of truth in spirit: message validation and per-message overrides agree on every override.
    for name, kind in MESSAGE_OVERRIDES.items():
        assert (int in EXTRA_TYPES[name]) and ((float in EXTRA_TYPES[name]) == (kind is float)), name


class _JudgesBadly(Middleware):
    """A middleware whose skip check raises for one argument value."""

    def skip_reason(self, arguments: dict[str, Any], extra: dict[str, Any]) -> Optional[str]:
        if arguments.get('x') == 0:
            raise KeyError('cannot judge')
        return None


def test_a_middleware_that_cannot_judge_a_message_dead_letters_it(queue_name: str, broker_kind) -> None:
    ran = []

    @task_deco(queue_name, broker_kind=broker_kind, middleware=[_JudgesBadly()])
    def work(x):
        ran.append(x)

    work.push_many([0, 1, 2])
    assert work.drain(timeout=10) == 3
    assert sorted(ran) == [1, 2]
    [letter] = dead_letters(broker_kind, queue_name)
    assert letter['x'] == 0
    assert letter['extra']['dead_letter']['reason'] == 'skip_check_failed'
    assert "KeyError: 'cannot judge'" in letter['extra']['dead_letter']['error']

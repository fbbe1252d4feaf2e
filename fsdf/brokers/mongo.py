"""MONGOMQ: a MongoDB collection per queue, messages leased to consumers and deleted on ack.

Database: the one named in ``MONGO_CONNECT_URL`` (``mongodb://host/db``), else ``fsdf``.
Collection ``<queue>``, one document per message::

    {"msg": "<the message's JSON text>" or {...the message object...},
     "state": 0,                   # 0 ready, 1 taken by a consumer
     "time": 1763800000.123,       # when it may be taken, epoch seconds: its publish time, or
                                   # the due time of a delayed message; oldest first, never early
     "consumer": "host:pid:id",    # only while taken
     "taken_at": 1763800001.5,     # only while taken
     "lease": "<token>"}           # only while taken: unique to the fetch that took it

Another program publishes with ``insert_one({"msg": {"a": 1, "b": 2}, "state": 0, "time": <now>})``.
Taking a batch is three round trips: find the ids of the oldest documents whose ``time`` has come
(one index on ``state, time`` serves both the filter and the order, so thousands of delayed
documents cost a consumer nothing: they stay in the collection until due), ``update_many`` those
still in state 0 to 1 with a fresh ``lease`` token (each document changes atomically, so of two
consumers racing for one only one wins), then read back the ones carrying the token. If the server
goes away before that read-back answers, the next take puts the token's documents back to state 0:
they are leased to a consumer that is alive and never got them. Ack deletes
the document; acks from many threads go out together in one ``delete_many``. ``count`` counts only
due messages; ``purge`` removes delayed ones too. Consumers beat into ``fsdf_consumers`` (``_id`` =
consumer id, ``queue``, ``host``, ``pid``, ``last_beat``); messages taken by a consumer that
stopped beating (or whose process is gone, on the same host) are put back to state 0 by any other
consumer of the queue.
"""
from __future__ import annotations

import json
import os
import time
import uuid
from typing import Any, Optional

import pymongo
import pymongo.errors
from bson.codec_options import CodecOptions
from pymongo.collection import Collection

from fsdf.brokers import liveness
from fsdf.brokers.ack_batch import AckBatch
from fsdf.brokers.base import Body, Broker, Delivery, waited
from fsdf.brokers.polling import poll
from fsdf.config import settings
from fsdf.hosts import HOST
from fsdf.runtime import default_runtime

READY, TAKEN = 0, 1
BACK_TO_READY = {'$set': {'state': READY}, '$unset': {'consumer': '', 'taken_at': '', 'lease': ''}}
CONSUMERS_COLLECTION = 'fsdf_consumers'


class MongoBroker(Broker):
    """A MongoDB collection as a queue, with leases that return a dead consumer's messages."""

    guarantee = 'at-least-once: a dead consumer\'s messages return'
    lease_check_seconds = 4.0
    publish_batch_size = 10_000  # one insert_many each (pymongo splits it by the server's message size)
    connection_errors = (pymongo.errors.ConnectionFailure,)  # AutoReconnect, ServerSelectionTimeoutError
    groups_publishes = True  # one insert_many carries many documents

    @classmethod
    def queue_name_problem(cls, name: str) -> Optional[str]:
        """MongoDB collection names: no '$' or NUL, not in the 'system.' namespace."""
        if '$' in name or '\0' in name or name.startswith('system.'):
            return 'is not a MongoDB collection name (no "$", not starting with "system.")'
        return None
    fifo = False  # oldest publish time first: the documents of one insert_many share it
    requeue_to_front = True  # a requeued document keeps its time, so its old place

    def __init__(self, queue_name: str) -> None:
        super().__init__(queue_name)
        url = settings.MONGO_CONNECT_URL
        # One client (one connection pool) per URL in the runtime, closed when the runtime closes.
        client: pymongo.MongoClient = default_runtime().shared(('mongo', url), lambda: pymongo.MongoClient(
            url, serverSelectionTimeoutMS=10_000), pymongo.MongoClient.close)
        database = client.get_default_database('fsdf')
        # Reads tolerate a string another program stored that is not UTF-8: it arrives as escapes (and
        # _body_of restores its bytes) instead of failing the read-back of a whole leased batch.
        self._collection: Collection = database.get_collection(
            queue_name, codec_options=CodecOptions(unicode_decode_error_handler='surrogateescape'))
        self._consumers: Collection = database[CONSUMERS_COLLECTION]
        self._collection.create_index([('state', 1), ('time', 1)])
        self._next_beat = 0.0
        self._acks = AckBatch(self._delete_acked)  # acks of many threads, deleted together
        # Leases of takes whose reply never came (the server went away mid-take): the server may have
        # leased those documents to this live consumer, which never got them; the next take puts them back.
        self._lost_leases: list[str] = []

    def publish(self, body: str, priority: Optional[int] = None) -> None:
        self._collection.insert_one({'msg': body, 'state': READY, 'time': time.time()})

    def publish_many(self, bodies: list[str]) -> None:
        now = time.time()
        self._collection.insert_many([{'msg': body, 'state': READY, 'time': now} for body in bodies])

    def publish_delayed_many(self, bodies: list[str], due: float) -> None:
        self._collection.insert_many([{'msg': body, 'state': READY, 'time': due} for body in bodies])

    def fetch(self, max_count: int, timeout: float) -> list[Delivery]:
        if self._closed.is_set():  # a beat now would register a consumer that is gone
            return []
        if time.monotonic() >= self._next_beat:  # holding messages without a beat would let others take them
            self.beat()
        # Other processes insert without telling us: poll.
        return poll(lambda: self._take(max_count), timeout, self._closed)

    def _take(self, max_count: int) -> list[Delivery]:
        collection = self._collection
        if self._lost_leases:
            collection.update_many({'lease': {'$in': self._lost_leases}, 'state': TAKEN}, BACK_TO_READY)
            self._lost_leases.clear()
        while True:
            now = time.time()
            ids = [document['_id'] for document in collection.find(
                {'state': READY, 'time': {'$lte': now}}, {'_id': 1}, sort=[('time', 1)], limit=max_count)]
            if not ids:
                return []
            token = uuid.uuid4().hex
            try:
                collection.update_many({'_id': {'$in': ids}, 'state': READY}, {'$set': {
                    'state': TAKEN, 'consumer': self.consumer_id, 'taken_at': now, 'lease': token}})
                won = list(collection.find({'_id': {'$in': ids}, 'lease': token}, {'msg': 1}, sort=[('time', 1)]))
            except pymongo.errors.PyMongoError:
                self._lost_leases.append(token)
                raise
            taken = [Delivery(_body_of(document.get('msg')), document['_id']) for document in won]
            if taken:
                return taken
            # Other consumers took all of them between our find and update: more may be ready, look again.

    def ack(self, delivery: Delivery) -> None:
        self._acks.add(delivery.tag)

    def _delete_acked(self, ids: list[Any]) -> None:
        self._collection.delete_many({'_id': {'$in': ids}})

    def requeue(self, delivery: Delivery) -> None:
        self._collection.update_one({'_id': delivery.tag}, BACK_TO_READY)

    def count(self) -> int:
        return self._collection.count_documents({'state': READY, 'time': {'$lte': time.time()}})

    def oldest_age(self) -> Optional[float]:
        """The ready document a take would pick first (the ``(state, time)`` index)."""
        doc = self._collection.find_one({'state': READY, 'time': {'$lte': time.time()}}, {'msg': 1, 'time': 1},
                                        sort=[('time', 1)])
        return 0.0 if doc is None else waited(_body_of(doc.get('msg')), doc.get('time'))

    def count_delayed(self) -> Optional[int]:
        """Ready documents whose time (their due time) is still to come: the ``(state, time)`` index."""
        return self._collection.count_documents({'state': READY, 'time': {'$gt': time.time()}})

    def purge(self) -> None:
        self._collection.delete_many({'state': READY})

    def close(self) -> None:
        super().close()
        self._acks.flush(wait=True)  # before the consumer record goes: others would put these back to ready
        self._consumers.delete_one({'_id': self.consumer_id})

    def beat(self) -> None:
        now = time.time()
        self._next_beat = time.monotonic() + self.lease_check_seconds
        self._consumers.update_one(
            {'_id': self.consumer_id},
            {'$set': {'last_beat': now, 'queue': self.queue_name, 'host': HOST, 'pid': os.getpid()}},
            upsert=True)
        self._acks.flush()  # ones left behind by a failed send

    def recover_abandoned(self) -> int:
        now = time.time()
        live = []
        for consumer in self._consumers.find({'queue': self.queue_name}):
            if liveness.is_dead(consumer.get('host'), consumer.get('pid') or 0, consumer.get('last_beat', 0), now):
                self._consumers.delete_one({'_id': consumer['_id']})
            else:
                live.append(consumer['_id'])
        result = self._collection.update_many({'state': TAKEN, 'consumer': {'$nin': live}}, BACK_TO_READY)
        return result.modified_count


def _body_of(msg: Any) -> Body:
    """The message text: stored as JSON text by fsdf, or as a sub-document by another program.

    Text that is not all ASCII goes on as its UTF-8 bytes (a check that costs nothing for ASCII), so
    bytes stored as a BSON string that were not UTF-8 come back as they were and are dead-lettered whole.
    """
    if isinstance(msg, str):
        return msg if msg.isascii() else msg.encode('utf-8', 'surrogateescape')
    if isinstance(msg, bytes):
        return msg
    try:
        return json.dumps(msg, default=str)
    except (ValueError, RecursionError) as exc:  # e.g. a sub-document too deep to write out again
        return f'a document fsdf cannot write out as JSON: {type(exc).__name__}'


"""NATS against a real nats-server (JetStream on file storage) the suite starts on loopback."""
from __future__ import annotations

import asyncio
import threading

import pytest

from fsdf import BrokerEnum, task_deco
from fsdf.brokers import get_broker
from fsdf.brokers import nats_jetstream
from fsdf.brokers.nats_jetstream import ACK_WAIT_SECONDS, NatsBroker
from helpers import every_call_runs_across_a_restart, every_task_runs_after_a_kill_9, push_from_threads

NATS = BrokerEnum.NATS


@pytest.fixture
def broker_kind(nats_server) -> BrokerEnum:
    """NATS; named like conftest's fixture so the shared consume-path tests run on it."""
    return NATS


from broker_contract import *  # noqa: E402,F401,F403  (the broker contract, on this module's kinds)


def stream_state(nats_server, queue_name: str) -> dict[str, int]:
    """The stream's message count and its consumer's waiting and unacked counts, through a plain nats-py client."""
    import nats

    async def read() -> dict[str, int]:
        client = await nats.connect(nats_server.url)
        try:
            js = client.jetstream()
            stream = await js.stream_info(queue_name)
            consumer = await js.consumer_info(queue_name, 'fsdf')
            return {'messages': stream.state.messages, 'waiting': consumer.num_pending,
                    'unacked': consumer.num_ack_pending}
        finally:
            await client.close()
    return asyncio.run(read())


def test_another_program_publishes_to_the_subject(queue_name: str, nats_server) -> None:
    import nats
    seen = []

    @task_deco(queue_name, broker_kind=NATS)
    def add(a, b):
        seen.append(a + b)

    get_broker(NATS, queue_name)  # makes the stream

    async def publish() -> None:
        client = await nats.connect(nats_server.url)
        await client.jetstream().publish(f'fsdf.q.{queue_name}', b'{"a": 1, "b": 2}')
        await client.close()

    asyncio.run(publish())
    assert add.drain(timeout=10) == 1
    assert seen == [3]
    assert stream_state(nats_server, queue_name)['messages'] == 0  # acked messages leave the work queue


def test_a_queue_name_nats_cannot_carry_is_refused(nats_server) -> None:
    with pytest.raises(ValueError, match='NATS stream name'):
        NatsBroker('a.b')


def test_a_long_task_keeps_its_message_past_the_ack_wait(queue_name: str, nats_server,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """The lease thread's in-progress beats restart the ack wait: no other consumer gets a running task."""
    # What the beats do is under test, not the default periods: an ack wait of 3 s (set on this queue's new
    # consumer) with beats every second shows it over two ack waits, in 6 s instead of 15.
    monkeypatch.setattr(nats_jetstream, 'ACK_WAIT_SECONDS', 3.0)
    monkeypatch.setattr(NatsBroker, 'lease_check_seconds', 1.0)
    holder, other = NatsBroker(queue_name), NatsBroker(queue_name)
    holder.publish('{"long": 1}')
    [delivery] = holder.fetch(1, 5)
    holder.start_leases()
    assert other.fetch(1, 2 * nats_jetstream.ACK_WAIT_SECONDS) == []
    holder.ack(delivery)
    holder.close()
    other.close()


def test_kill_9_of_a_consumer(queue_name: str, nats_server, run_script, tmp_path) -> None:
    """2,000 tasks, the consumer killed mid-run: every task runs; its unacked messages return after the ack wait."""
    every_task_runs_after_a_kill_9(queue_name, NATS, run_script, tmp_path,
                                   f'NATS (ack wait {ACK_WAIT_SECONDS:.0f} s)',
                                   held=lambda: stream_state(nats_server, queue_name)['unacked'] > 0,
                                   settled=lambda: stream_state(nats_server, queue_name)['messages'] == 0)


def test_nats_restart_mid_run(queue_name: str, nats_server) -> None:
    """The server goes away for 2 s and comes back on the same JetStream store: every call runs, none left."""
    every_call_runs_across_a_restart(queue_name, NATS, lambda: nats_server.restart(down_seconds=2.0),
                                     lambda: stream_state(nats_server, queue_name)['messages'] == 0)


def test_a_thread_that_pushes_often_has_each_push_stored_when_it_returns(queue_name: str, nats_server) -> None:
    """From the second push on, a thread publishes through its own client: each push is still on the
    stream when it returns, and the thread's client closes with the runtime."""
    from fsdf.brokers.nats_connections import ThreadConnections
    from fsdf.runtime import default_runtime

    @task_deco(queue_name, broker_kind=NATS)
    def add(a, b):
        return a + b

    for number in range(1, 21):
        add.push(number, 1)
        assert stream_state(nats_server, queue_name)['messages'] == number
    threads = ThreadConnections.of(nats_server.url)
    [own] = threads.open
    assert own.client.is_connected
    default_runtime().close_shared(lambda key: key == ('nats', nats_server.url, 'threads'))
    assert own.client.is_closed and threads.open == []


def test_pushes_from_a_thread_carry_on_across_a_server_restart(queue_name: str, nats_server) -> None:
    """A thread's own client broken by a restart is dropped at once (not after the request timeout) and
    the push retried: every push is stored."""
    import time

    from fsdf.brokers.nats_connections import REQUEST_SECONDS

    @task_deco(queue_name, broker_kind=NATS)
    def add(a, b):
        return a + b

    for number in range(3):
        add.push(number, 1)
    nats_server.restart()
    began = time.monotonic()
    for number in range(3, 6):
        add.push(number, 1)
    assert time.monotonic() - began < REQUEST_SECONDS / 2
    assert stream_state(nats_server, queue_name)['messages'] == 6


def test_a_dead_threads_client_is_closed_when_another_thread_opens_one(queue_name: str, nats_server) -> None:
    """Threads that end leave no connection open past the next thread that opens its own."""
    from fsdf.brokers.nats_connections import ThreadConnections

    @task_deco(queue_name, broker_kind=NATS)
    def add(a, b):
        return a + b

    def push_twice() -> None:
        add.push(1, 1)
        add.push(2, 1)

    first = threading.Thread(target=push_twice)
    first.start()
    first.join()
    threads = ThreadConnections.of(nats_server.url)
    dead = [own for own in threads.open if own.thread is first]
    assert len(dead) == 1
    second = threading.Thread(target=push_twice)
    second.start()
    second.join()
    assert dead[0].client.is_closed and dead[0] not in threads.open


def test_pushes_from_many_threads_each_land_once(queue_name: str, nats_server) -> None:
    """Threads with their own clients and grouped pushes through the shared one: every push returned is
    on the stream, once."""
    @task_deco(queue_name, broker_kind=NATS)
    def f(x):
        pass

    push_from_threads(f, 20, 20)
    assert stream_state(nats_server, queue_name)['messages'] == 400


def test_a_thread_client_left_idle_is_closed_and_not_used(queue_name: str, nats_server, monkeypatch) -> None:
    """A thread's client unused for OWN_IDLE_SECONDS is closed at the thread's next push (its server may have
    dropped it meanwhile), which goes through the shared client; the push after opens a new one."""
    import time

    from fsdf.brokers import nats_connections

    monkeypatch.setattr(nats_connections, 'OWN_IDLE_SECONDS', 0.3)

    @task_deco(queue_name, broker_kind=NATS)
    def add(a, b):
        return a + b

    add.push(1, 1)
    add.push(2, 1)
    threads = nats_connections.ThreadConnections.of(nats_server.url)
    [first] = [own for own in threads.open if own.thread is threading.current_thread()]
    time.sleep(0.4)  # the idleness itself is what is tested
    add.push(3, 1)
    assert first.closed and first not in threads.open
    add.push(4, 1)
    assert [own for own in threads.open if own.thread is threading.current_thread()] != []
    assert stream_state(nats_server, queue_name)['messages'] == 4

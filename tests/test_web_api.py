"""The dashboard's JSON API over a real run store (SQLite, and MongoDB through the MongoDB-wire test server) and a
real Redis broker, through Starlette's TestClient.

Every route: filters, keyset paging, tree search, actions on a live Redis queue, the token, the
cross-site guard, read-only mode, and bad input answered 400 with a message (never 500).
"""
from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Any, Iterator

import pytest

pytest.importorskip('starlette')
pytest.importorskip('httpx')
from starlette.testclient import TestClient  # noqa: E402

from fsdf import BrokerEnum  # noqa: E402
from fsdf.brokers import get_broker  # noqa: E402
from fsdf.message import dead_letter_body, encode, new_extra  # noqa: E402
from fsdf.records.store import Batch, RunStore, open_store  # noqa: E402
from fsdf.web import create_app  # noqa: E402
from fsdf.web.present import Scrubber  # noqa: E402
from fsdf.web.serve import main, serve  # noqa: E402
from helpers import wait_until  # noqa: E402
from web_data import flat_records, record, tree_records, write_all  # noqa: E402

KIND = BrokerEnum.REDIS_ACK_ABLE
ACT = {'X-Fsdf-Action': '1'}
ROOT = 'webroot'


@pytest.fixture(scope='module', params=['sqlite', 'mongo'])
def store(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunStore]:
    """Each store the dashboard reads (RESULT_STORE_URL sqlite:/// or mongodb://), holding the same records."""
    if request.param == 'sqlite':
        path: Path = tmp_path_factory.mktemp('web') / 'runs.sqlite'
        url = f'sqlite:///{path}'
    else:
        server = request.getfixturevalue('mongo_server')
        url = f'mongodb://127.0.0.1:{server.port}/fsdf_web_{uuid.uuid4().hex[:8]}'
    opened = open_store(url)
    write_all(opened, tree_records(ROOT, 1000, width=450, inner=20))
    write_all(opened, flat_records(300, queues=3))
    secret = record('secret-run', 'flat_q0', 'succeeded', time.time(),
                    arguments='{"dsn": "redis://app:hunter2@db:6379/0"}')
    write_all(opened, iter([secret]), queues={'flat_q0': 'REDIS_ACK_ABLE', 'tree_q': 'REDIS_ACK_ABLE'})
    yield opened
    opened.close()


@pytest.fixture(scope='module')
def client(store: RunStore) -> TestClient:
    return TestClient(create_app(store=store), base_url='http://127.0.0.1')


def _all_pages(client: TestClient, url: str) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    cursor = None
    while True:
        page = client.get(url + (f'&cursor={cursor}' if cursor else '')).json()
        page = page.get('matches', page)  # a tree search nests its page
        found += page['records']
        cursor = page['next_cursor']
        if cursor is None:
            return found


# -- reads ------------------------------------------------------------------------------------
def test_runs_filters_narrow_and_pages_cover_everything_once(client: TestClient) -> None:
    every = _all_pages(client, '/api/runs?queue=flat_q1&limit=37')
    assert len(every) == 100 and len({r['task_id'] for r in every}) == 100
    assert [r['end_time'] for r in every] == sorted((r['end_time'] for r in every), reverse=True)
    failed = _all_pages(client, '/api/runs?status=failed&queue=flat_q1&limit=1000')
    assert failed and {r['status'] for r in failed} == {'failed'}
    assert {r['host'] for r in _all_pages(client, '/api/runs?host=host2&limit=500')} == {'host2'}
    seventh = '0' * 31 + '7'
    assert [r['task_id'] for r in client.get('/api/runs?task_id=' + seventh).json()['records']] == [seventh]
    apples = _all_pages(client, '/api/runs?q=apple&queue=flat_q0&limit=500')
    assert apples and all('apple' in r['arguments'] for r in apples)
    recent = client.get('/api/runs?since=30m&queue=flat_q2&limit=1000').json()['records']
    assert recent and all(r['end_time'] >= time.time() - 1800 - 5 for r in recent) and len(recent) < 100
    by_function = _all_pages(client, '/api/runs?function=flat_q2_fn&limit=40')
    assert len(by_function) == 100 and {r['function'] for r in by_function} == {'flat_q2_fn'}
    assert client.get('/api/runs?function=no_such_fn').json() == {'records': [], 'next_cursor': None}


def test_until_finds_records_written_out_of_end_time_order(client: TestClient) -> None:
    """The fixture writes the tree (ended a minute ago) before the flat runs (ended over the last hour)."""
    every = _all_pages(client, '/api/runs?queue=flat_q1&limit=1000')
    until = every[49]['end_time']
    older = _all_pages(client, f'/api/runs?queue=flat_q1&until={until}&limit=1000')
    assert [r['task_id'] for r in older] == [r['task_id'] for r in every[50:]]  # until excludes its own moment


def test_run_children_and_tree(client: TestClient) -> None:
    run = client.get(f'/api/runs/{ROOT}').json()
    assert run['record']['task_id'] == ROOT and sum(run['counts']['descendants'].values()) == 999
    first = client.get(f'/api/runs/{ROOT}/children').json()
    assert len(first['records']) == 200 and first['next_cursor']
    assert all('counts' in r for r in first['records'])
    assert {'task_id', 'status', 'function', 'duration'} <= set(first['records'][0])  # a node, not its arguments
    assert 'arguments' not in first['records'][0] and 'traceback' not in first['records'][0]
    kids = _all_pages(client, f'/api/runs/{ROOT}/children?limit=200')
    assert len(kids) == 450 and len({k['task_id'] for k in kids}) == 450
    counted = {k['task_id']: sum(k['counts'].values()) for k in kids}  # each child's own children, by status
    assert sum(counted.values()) == 1000 - 1 - 450 and counted[f'{ROOT}-c00449'] == 0
    assert counted[f'{ROOT}-c00000'] == len(_all_pages(client, f'/api/runs/{ROOT}-c00000/children?limit=7')) == 28
    failures = client.get(f'/api/tree/{ROOT}?status=failed&limit=5&path=1').json()['matches']
    assert failures['records'] and all(r['status'] == 'failed' for r in failures['records'])
    deep = [r for r in _all_pages(client, f'/api/tree/{ROOT}?status=failed&path=1&limit=100') if '-g' in r['task_id']]
    assert deep and all(r['path'] == [ROOT, r['parent_task_id']] for r in deep)
    by_id = client.get(f'/api/tree/{ROOT}?task_id={ROOT}-c0001').json()['matches']['records']
    assert {r['task_id'] for r in by_id} == {f'{ROOT}-c{i:05d}' for i in range(10, 20)}
    assert [r['end_time'] for r in by_id] == sorted((r['end_time'] for r in by_id), reverse=True)  # newest first
    assert client.get('/api/runs/nothing-here').status_code == 404


def test_reads_answer_alike_by_get_head_and_mounted_under_a_prefix(store: RunStore) -> None:
    """GET on a read takes the short way (fsdf.web.reads); HEAD, a POST to a read and a mounted app take
    Starlette's, and every way answers as before, with the security headers."""
    from starlette.applications import Starlette
    from starlette.routing import Mount
    client = TestClient(create_app(store=store), base_url='http://127.0.0.1')
    direct = client.get('/api/runs?queue=flat_q1&limit=3')
    assert direct.status_code == 200 and len(direct.json()['records']) == 3
    assert direct.headers['content-type'] == 'application/json'
    assert direct.headers['x-content-type-options'] == 'nosniff'
    assert client.head('/api/runs?queue=flat_q1&limit=3').status_code == 200
    assert client.post('/api/runs', headers=ACT, json={}).status_code == 405
    assert client.get('/api/runs/').status_code in (200, 307)  # Starlette's slash redirect, as before
    outer = TestClient(Starlette(routes=[Mount('/dash', app=create_app(store=store))]), base_url='http://127.0.0.1')
    mounted = outer.get('/dash/api/runs?queue=flat_q1&limit=3')
    assert mounted.status_code == 200 and mounted.json() == direct.json()


def test_a_read_stopped_on_the_event_loop_is_answered_from_a_thread(client: TestClient,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """A quick read that runs past its time on the loop is made again in a read thread: the same answer, no error."""
    urls = ['/api/runs?host=host2&limit=500', f'/api/runs/{ROOT}/children', f'/api/tree/{ROOT}?status=failed&path=1',
            '/api/runs?q=apple&limit=500', '/api/runs?queue=flat_q1&cursor=1000000000']
    on_the_loop = [client.get(url).json() for url in urls]
    monkeypatch.setattr('fsdf.web.app.INLINE_SECONDS', 0.0)  # every read on the loop is late at its first look
    assert [client.get(url).json() for url in urls] == on_the_loop


def test_overview_queues_consumers_stats_and_health(client: TestClient) -> None:
    overview = client.get('/api/overview').json()
    assert overview['done_today'] + overview['failed_today'] > 0 and overview['consumers_alive'] == 0
    names = {q['name'] for q in client.get('/api/queues').json()['queues']}
    assert {'flat_q0', 'tree_q'} <= names
    queue = client.get('/api/queue/flat_q0').json()
    assert queue['queue']['name'] == 'flat_q0' and all(f['status'] == 'failed' for f in queue['failures'])
    assert queue['function'] == 'flat_q0_fn' and queue['failures']
    assert client.get('/api/queue/nope').status_code == 404
    assert client.get('/api/consumers').json() == {'consumers': []}
    hourly = client.get('/api/stats/_all?window=24h').json()
    assert hourly['granularity'] == 3600 and sum(sum(b['counts'].values()) for b in hourly['buckets']) == 1301
    assert client.get('/api/stats/flat_q0?window=60s').json()['granularity'] == 1
    assert client.get('/healthz').json() == {'ok': True}


def test_metrics_are_labelled_by_queue_and_status_only(client: TestClient) -> None:
    text = client.get('/metrics').text
    assert 'fsdf_tasks_completed_total{queue="flat_q0",status="failed"}' in text
    assert 'fsdf_task_duration_seconds_count{queue="tree_q"} 1000' in text
    labels = set(re.findall(r'(\w+)="', text))
    assert labels <= {'queue', 'status', 'le'}


def test_pages_show_their_fields_and_a_run_its_whole_record(client: TestClient) -> None:
    """Lists carry what they show (no traceback, no timeline: they cost each page CPU); /api/runs/<id> has it all."""
    from fsdf.web.api import NODE_FIELDS, RUN_FIELDS
    failed = client.get('/api/runs?queue=flat_q0&status=failed&limit=5').json()['records']
    assert failed and all(set(r) == set(RUN_FIELDS) for r in failed)
    whole = client.get(f"/api/runs/{failed[0]['task_id']}").json()['record']
    assert 'Traceback' in whole['traceback'] and set(RUN_FIELDS) < set(whole) and whole['publish_time']
    matches = client.get(f'/api/tree/{ROOT}?status=failed&limit=3').json()['matches']['records']
    assert matches and all(set(r) == set(RUN_FIELDS) for r in matches)
    nodes = client.get(f'/api/runs/{ROOT}/children?limit=3').json()['records']
    assert [set(r) for r in nodes] == [{*NODE_FIELDS, 'counts'}] * 3 and {r['parent_task_id'] for r in nodes} == {ROOT}


def test_secrets_are_never_shown(client: TestClient) -> None:
    for url in ('/api/runs/secret-run', '/api/runs?queue=flat_q0&limit=500', '/api/runs?task_id=secret-run'):
        body = client.get(url).text
        assert 'hunter2' not in body and 'app:***@db' in body


def test_a_page_hides_url_passwords_and_the_configured_secrets_in_every_text() -> None:
    shown = Scrubber(['pa55word', 'pa55%40word']).in_place(
        {'arguments': '{"dsn": "amqp://u:x@h/v"}', 'result': 'pa55word!', 'exception_message': 'bad pa55%40word',
         'traceback': 'no secret here', 'script': '/srv/pa55word.py', 'task_id': 'pa55word'})
    assert shown == {'arguments': '{"dsn": "amqp://u:***@h/v"}', 'result': '***!', 'exception_message': 'bad ***',
                     'traceback': 'no secret here', 'script': '/srv/***.py', 'task_id': 'pa55word'}


def test_a_page_is_scrubbed_like_each_of_its_records() -> None:
    """The page-wide search finds a secret in any text of any record (the last field of the last record too)."""
    scrubber = Scrubber(['pa55word'])

    def page(**last: Any) -> list[dict[str, Any]]:
        clean = {'arguments': '{"x": 1}', 'result': '2', 'exception_message': None, 'traceback': None, 'script': 's'}
        return [dict(clean) for _ in range(49)] + [{**clean, **last}]

    for last in ({'script': '/srv/pa55word'}, {'traceback': 'at amqp://u:pw@h/'},
                 {'result': 7, 'arguments': 'pa55word'}, {'exception_message': 'pa55word', 'traceback': None}):
        shown = scrubber.page(page(**last))
        assert shown == [scrubber.in_place(r) for r in page(**last)] and shown[-1] != page(**last)[-1], last
    assert scrubber.page(page()) == page() and scrubber.page([]) == []
    varied = page(script='pa55word.py')
    del varied[0]['script']  # records need not hold the same fields
    assert scrubber.page(varied)[-1]['script'] == '***.py'


@pytest.mark.parametrize('url', [
    '/api/runs?since=yesterdayish', '/api/runs?until=12x', '/api/runs?limit=0', '/api/runs?limit=abc',
    '/api/runs?limit=5000', '/api/runs?status=no%20such', '/api/runs?cursor=not-a-cursor', '/api/runs?colour=red',
    '/api/runs?queue=a%00b', '/api/runs?since=2h&until=3h', '/api/runs?q=' + 'x' * 600,
    f'/api/runs/{ROOT}/children?cursor=zz', f'/api/runs/{ROOT}/children?limit=-1', f'/api/tree/{ROOT}?since=soon',
    '/api/stats/_all?window=7x', '/api/stats/_all?window=5000s', '/api/consumers?queue=' + 'q' * 300])
def test_bad_input_is_a_400_with_a_message(client: TestClient, url: str) -> None:
    answer = client.get(url)
    assert answer.status_code == 400, answer.text
    assert answer.json()['error']


# -- security ---------------------------------------------------------------------------------
def test_without_a_token_only_requests_to_localhost_are_answered(store: RunStore) -> None:
    app = create_app(store=store)
    assert TestClient(app, base_url='http://localhost:8000').get('/api/queues').status_code == 200
    rebound = TestClient(app, base_url='http://evil.example:27018')
    assert rebound.get('/api/runs').status_code == 403


def test_the_token_by_header_or_by_the_cookie_a_visit_sets(store: RunStore) -> None:
    client = TestClient(create_app(token='s3cret', store=store), base_url='http://dash.example')
    assert client.get('/api/queues').status_code == 401
    assert client.get('/api/queues', headers={'Authorization': 'Bearer wrong'}).status_code == 401
    assert client.get('/api/queues', headers={'Authorization': 'Bearer s3cret'}).status_code == 200
    assert client.get('/healthz').status_code == 200 and client.get('/static/style.css').status_code == 200
    assert client.get('/metrics').status_code == 401
    visit = client.get('/runs?token=s3cret&queue=flat_q0', follow_redirects=False)
    assert visit.status_code == 303 and visit.headers['location'] == '/runs?queue=flat_q0'
    assert 'HttpOnly' in visit.headers['set-cookie'] and 'SameSite=Strict' in visit.headers['set-cookie']
    assert client.get('/api/queues').status_code == 200  # the cookie now carries it


def test_actions_refuse_cross_site_requests(client: TestClient, redis_server: Any) -> None:
    url = '/api/queues/flat_q0/resume'
    assert client.post(url, json={}).status_code == 403  # no X-Fsdf-Action: a plain form or a script without it
    assert client.post(url, content='{}', headers={**ACT, 'Content-Type': 'text/plain'}).status_code == 415
    assert client.post(url, json={}, headers={**ACT, 'Origin': 'http://evil.example'}).status_code == 403
    assert client.post(url, json={}, headers={**ACT, 'Sec-Fetch-Site': 'cross-site'}).status_code == 403
    assert client.post(url, json={}, headers={**ACT, 'Origin': 'http://127.0.0.1'}).status_code == 200


def test_read_only_refuses_every_action(store: RunStore) -> None:
    client = TestClient(create_app(read_only=True, store=store), base_url='http://127.0.0.1')
    assert client.get('/api/config').json()['read_only'] is True
    for url in ('/api/queues/flat_q0/pause', '/api/queues/flat_q0/purge', '/api/dlq/flat_q0/redrive',
                '/api/dlq/flat_q0/delete', f'/api/runs/{ROOT}/republish'):
        assert client.post(url, json={'all': True}, headers=ACT).status_code == 403
    assert client.get('/api/queues').status_code == 200


def test_serving_elsewhere_than_loopback_needs_a_token(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(ValueError, match='without a token'):
        serve('0.0.0.0', 0)
    with pytest.raises(SystemExit) as exit_info:
        main(['--host', '10.1.2.3', '--port', '0'])
    assert exit_info.value.code == 2 and 'token' in capsys.readouterr().err


def test_workers_share_the_port_and_each_keeps_the_token_and_read_only(tmp_path: Path) -> None:
    """``--workers 2``: two processes answer one port, each with the token and read-only mode it was given."""
    psutil = pytest.importorskip('psutil')
    url = f'sqlite:///{tmp_path}/runs.sqlite'
    write_all(open_store(url), flat_records(20, queues=1))
    with socket.socket() as probe:
        probe.bind(('127.0.0.1', 0))
        port = probe.getsockname()[1]
    env = {**os.environ, 'FSDF_RESULT_STORE_URL': url, 'FSDF_CONFIG_FILE': '0'}
    server = subprocess.Popen([sys.executable, '-m', 'fsdf.web', '--port', str(port), '--workers', '2',
                               '--token', 'w0rk3rs', '--read-only'], env=env)
    try:
        base = f'http://127.0.0.1:{port}'
        assert wait_until(lambda: _status(f'{base}/healthz') == 200, 60, 0.1), 'the workers did not answer'
        workers = [p for p in psutil.Process(server.pid).children() if 'spawn_main' in ' '.join(p.cmdline())]
        assert len(workers) == 2  # (beside multiprocessing's resource tracker)
        assert _status(f'{base}/api/runs') == 401
        for _ in range(6):  # whichever worker takes the connection
            assert len(_get(f'{base}/api/runs', 'w0rk3rs')['records']) == 20
            assert _status(f'{base}/api/queues/flat_q0/pause', 'w0rk3rs', post=True) == 403
    finally:
        server.terminate()
        server.wait(30)


def _status(url: str, token: str = '', post: bool = False) -> int:
    try:
        return _open(url, token, post).status
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return 0


def _get(url: str, token: str) -> Any:
    return json.loads(_open(url, token).read())


def _open(url: str, token: str, post: bool = False) -> Any:
    headers = {'Authorization': f'Bearer {token}', **ACT, 'Content-Type': 'application/json'} if token else {}
    request = urllib.request.Request(url, data=b'{}' if post else None, headers=headers)
    return urllib.request.urlopen(request, timeout=10)


# -- actions on a live Redis queue ------------------------------------------------------------
def _dead(queue: str, n: int) -> list[str]:
    ids = []
    for i in range(n):
        extra = new_extra()
        ids.append(extra['task_id'])
        body = encode({'x': i}, extra)
        get_broker(KIND, queue).dlq.publish(dead_letter_body(body, 'failed', exception_type='ValueError',
                                                             exception=f'bad {i}'))
    return ids


def test_pause_resume_purge(client: TestClient, store: RunStore, redis_server: Any, queue_name: str) -> None:
    store.write(Batch(queues={queue_name: KIND.name}))
    broker = get_broker(KIND, queue_name)
    assert client.post(f'/api/queues/{queue_name}/pause', json={}, headers=ACT).json()['paused'] is True
    assert queue_name in store.paused_queues()
    client.post(f'/api/queues/{queue_name}/resume', json={}, headers=ACT)
    assert queue_name not in store.paused_queues()
    for i in range(5):
        extra = new_extra()
        extra['publish_time'] -= 60 - i  # the oldest has waited a minute
        broker.publish(encode({'x': i}, extra))
    row = _queue_row(client, queue_name)
    assert row['waiting'] == 5 and 60 <= row['oldest_age'] < 65
    assert re.search(rf'fsdf_queue_oldest_age_seconds{{queue="{queue_name}"}} 6\d', client.get('/metrics').text)
    refused = client.post(f'/api/queues/{queue_name}/purge', json={}, headers=ACT)
    assert refused.status_code == 400 and 'confirm' in refused.json()['error'] and broker.count() == 5
    assert client.post(f'/api/queues/{queue_name}/purge', json={'confirm': queue_name}, headers=ACT).json()[
        'purged'] == 5
    assert broker.count() == 0 and _queue_row(client, queue_name)['oldest_age'] == 0
    assert client.post('/api/queues/unknown_queue/pause', json={}, headers=ACT).status_code == 404


def test_delayed_messages_counted_until_due_then_waiting(client: TestClient, store: RunStore, redis_server: Any,
                                                         queue_name: str) -> None:
    store.write(Batch(queues={queue_name: KIND.name}))
    broker = get_broker(KIND, queue_name)
    due = time.time() + 2.0
    broker.publish_delayed_many([encode({'x': i}, new_extra()) for i in range(3)], due)
    row = _queue_row(client, queue_name)
    assert (row['delayed'], row['waiting']) == (3, 0) or time.time() >= due
    assert f'fsdf_queue_delayed{{queue="{queue_name}"}} 3' in client.get('/metrics').text or time.time() >= due
    time.sleep(max(0.0, due - time.time()))  # the due time itself is what is awaited
    taken = broker.fetch(1, 2)  # a consumer's fetch moves the due ones to the waiting list
    row = _queue_row(client, queue_name)
    assert len(taken) == 1 and (row['delayed'], row['waiting']) == (0, 2)
    broker.ack(taken[0])
    broker.purge()


def test_a_paused_queue_has_no_time_left(client: TestClient, store: RunStore, redis_server: Any,
                                         queue_name: str) -> None:
    """Its last rate says nothing of when it will empty: the page shows 'paused', the API null."""
    store.write(Batch(queues={queue_name: KIND.name}, consumers={f'{queue_name}-c1': {
        'queue': queue_name, 'beat_time': time.time(), 'rates': {'settled': 2.0}}}))
    broker = get_broker(KIND, queue_name)
    broker.publish_many([encode({'x': i}, new_extra()) for i in range(10)])
    assert _queue_row(client, queue_name)['seconds_left'] == 5.0
    client.post(f'/api/queues/{queue_name}/pause', json={}, headers=ACT)
    row = _queue_row(client, queue_name)
    assert row['paused'] is True and row['seconds_left'] is None and row['waiting'] == 10
    client.post(f'/api/queues/{queue_name}/resume', json={}, headers=ACT)
    broker.purge()


def _queue_row(client: TestClient, name: str) -> dict[str, Any]:
    return next(q for q in client.get('/api/queues').json()['queues'] if q['name'] == name)


def test_a_broker_that_cannot_tell_the_oldest_age_gives_none(client: TestClient, store: RunStore,
                                                              queue_name: str) -> None:
    store.write(Batch(queues={queue_name: BrokerEnum.ZEROMQ.name}))  # ZeroMQ cannot peek at a waiting message
    row = _queue_row(client, queue_name)
    assert row['broker_kind'] == 'ZEROMQ' and row['oldest_age'] is None and row['waiting'] == 0
    assert row['delayed'] is None  # nor count delayed ones: a consumer holds them in its memory
    metrics = client.get('/metrics').text
    assert f'fsdf_queue_oldest_age_seconds{{queue="{queue_name}"}}' not in metrics
    assert f'fsdf_queue_delayed{{queue="{queue_name}"}}' not in metrics


def test_dead_letters_listed_redriven_and_deleted(client: TestClient, store: RunStore, redis_server: Any,
                                                  queue_name: str) -> None:
    store.write(Batch(queues={queue_name: KIND.name}))
    broker = get_broker(KIND, queue_name)
    ids = _dead(queue_name, 6)
    listed = client.get(f'/api/dlq/{queue_name}').json()
    assert sorted(m['task_id'] for m in listed['messages']) == sorted(ids) and listed['count'] == 6
    assert _queue_row(client, queue_name)['dead_letters'] == 6
    assert f'fsdf_queue_dead_letters{{queue="{queue_name}"}} 6' in client.get('/metrics').text
    assert {m['reason'] for m in listed['messages']} == {'failed'} and listed['messages'][0]['exception_type']
    one = client.post(f'/api/dlq/{queue_name}/redrive', json={'task_id': ids[2]}, headers=ACT).json()
    assert one['redriven'] == 1 and broker.count() == 1 and broker.dlq.count() == 5
    back = broker.fetch(1, 1)[0]
    assert b'dead_letter' not in (back.body if isinstance(back.body, bytes) else back.body.encode())
    broker.ack(back)
    assert client.post(f'/api/dlq/{queue_name}/delete', json={'task_id': ids[0]}, headers=ACT).json()['deleted'] == 1
    assert client.post(f'/api/dlq/{queue_name}/redrive', json={}, headers=ACT).status_code == 400
    assert client.post(f'/api/dlq/{queue_name}/redrive', json={'all': True}, headers=ACT).json()['redriven'] == 4
    assert broker.count() == 4 and broker.dlq.count() == 0
    _dead(queue_name, 3)
    assert client.post(f'/api/dlq/{queue_name}/delete', json={'all': True}, headers=ACT).json()['deleted'] == 3
    broker.purge()


def test_republish_a_recorded_call(client: TestClient, store: RunStore, redis_server: Any, queue_name: str) -> None:
    write_all(store, iter([record('to-again', queue_name, 'failed', time.time(), arguments='{"x": 41}')]),
              queues={queue_name: KIND.name})
    answer = client.post('/api/runs/to-again/republish', json={}, headers=ACT).json()
    assert answer['republished_from'] == 'to-again' and answer['task_id'] != 'to-again'
    broker = get_broker(KIND, queue_name)
    message = broker.fetch(1, 2)[0]
    assert b'"x":41' in (message.body if isinstance(message.body, bytes) else message.body.encode())
    broker.ack(message)
    assert client.post('/api/runs/none-such/republish', json={}, headers=ACT).status_code == 404


def test_answers_are_the_standard_json_whichever_encoder_runs() -> None:
    """orjson (when installed) and json.dumps give the same bytes; what orjson refuses falls back, never a 500."""
    import json

    from fsdf.web.encode import dumps
    value = {'text': 'naïve ✓', 'n': [1, 2.5, None, True], 'nested': {'a': []}, 'tuple': (1, 2)}
    assert dumps(value) == json.dumps(value, ensure_ascii=False, separators=(',', ':')).encode()
    assert json.loads(dumps({'big': 2 ** 70})) == {'big': 2 ** 70}  # beyond 64 bits: orjson refuses, json encodes
    counts = {'by_hour': {3600: 2, 7200: 1}, 'status': {'failed': 1}}  # keys that are not text: as json.dumps does
    assert dumps(counts) == json.dumps(counts, separators=(',', ':')).encode()

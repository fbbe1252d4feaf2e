"""The dashboard in a real browser: Debian's headless Chromium driven by Playwright, against a dashboard and
a live Redis consumer that this test starts, over a SQLite store holding a tree of 20,000 nodes.

Needs ``/usr/bin/chromium`` (tests/servers/install.sh installs Debian's package) and the ``playwright``
Python package; it never runs ``playwright install``. Screenshots go to tests/output/.
"""
from __future__ import annotations

import os
import re
import socket
import time
import urllib.request
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

pytest.importorskip('starlette')
sync_api = pytest.importorskip('playwright.sync_api')
if not Path('/usr/bin/chromium').exists():
    pytest.skip('Debian chromium is not installed (tests/servers/install.sh)', allow_module_level=True)

import fsdf  # noqa: E402
from fsdf import BrokerEnum  # noqa: E402
from fsdf.brokers import get_broker  # noqa: E402
from fsdf.publisher import Publisher  # noqa: E402
from fsdf.records.store import open_store  # noqa: E402
from helpers import wait_until  # noqa: E402
from web_data import flat_records, tree_records, write_all  # noqa: E402

OUTPUT = Path(__file__).parent / 'output'
TOKEN = 'browser-test-token'
ROOT = 'bigtree'
KIND = BrokerEnum.REDIS_ACK_ABLE
CHROMIUM_ARGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
                 '--disable-background-networking', '--disable-component-update', '--disable-sync',
                 '--disable-dev-shm-usage']
CONSUMER = '''
import sys, time
from fsdf import BrokerEnum, task_deco

@task_deco(sys.argv[1], broker_kind=BrokerEnum.REDIS_ACK_ABLE, run_records=True, max_retry_times=0, concurrent_num=4)
def work(x):
    time.sleep(0.005 if x < 2000 else 0.05)  # from 2000 on: slow, so runs are in progress while a page looks
    if x % 5 == 0:
        raise ValueError(f'x may not be a multiple of 5, got {x}')
    return x * 2

work.consume()
while True:
    time.sleep(1)
'''
DASHBOARD = '''
import sys
from fsdf.web import main
main(sys.argv[1:])
'''


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(('127.0.0.1', 0))
        return probe.getsockname()[1]


def _healthy(port: int) -> bool:
    try:
        return urllib.request.urlopen(f'http://127.0.0.1:{port}/healthz', timeout=1).status == 200
    except OSError:
        return False


@pytest.fixture(scope='module')
def world(tmp_path_factory: pytest.TempPathFactory, redis_server: Any) -> Iterator[dict[str, Any]]:
    """A store with a 20,000-node tree and 2,000 runs, made the configured store here and in child processes."""
    url = f'sqlite:///{tmp_path_factory.mktemp("browser")}/runs.sqlite'
    previous = fsdf.config.settings.RESULT_STORE_URL
    os.environ['FSDF_RESULT_STORE_URL'] = url
    fsdf.patch_frame_config(RESULT_STORE_URL=url)
    store = open_store(url)
    # The tree ended half an hour ago, so the live chart shows the consumers' runs, not the tree's burst.
    write_all(store, tree_records(ROOT, 20_000, width=400, inner=50, now=time.time() - 1800))
    write_all(store, flat_records(2_000, queues=4), queues={'tree_q': 'REDIS_ACK_ABLE', 'zmq_q': 'ZEROMQ'})
    yield {'store': store, 'url': url}
    store.close()
    fsdf.patch_frame_config(RESULT_STORE_URL=previous)
    os.environ.pop('FSDF_RESULT_STORE_URL', None)


def _dashboard(run_script: Callable[..., Any], *flags: str) -> str:
    port = _free_port()
    run_script(DASHBOARD, '--port', str(port), *flags)
    assert wait_until(lambda: _healthy(port), 30), 'the dashboard did not start'
    return f'http://127.0.0.1:{port}'


@pytest.fixture
def browser() -> Iterator[Any]:
    with sync_api.sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path='/usr/bin/chromium', args=CHROMIUM_ARGS)
        yield launched
        launched.close()


def _page(browser: Any) -> Any:
    """A page in a fixed locale, so the numbers' separators are known (the pages use the reader's locale)."""
    return browser.new_page(viewport={'width': 1280, 'height': 900}, locale='en-US')


def _text(page: Any, selector: str) -> str:
    return str(page.inner_text(selector)).strip()


def _is_count(text: str) -> bool:
    """A whole number written with thousand separators (1,234,567)."""
    return re.fullmatch(r'\d{1,3}(,\d{3})*', text) is not None


def _x_labels(page: Any, chart: str) -> list[str]:
    return list(page.eval_on_selector_all(f'{chart} text.x-label', 'nodes => nodes.map(n => n.textContent)'))


def _functions_shown(page: Any) -> set[str]:
    """The functions named in the runs table."""
    return set(page.eval_on_selector_all('#runs tbody a.function', 'links => links.map(a => a.textContent)'))


def _count(page: Any, selector: str) -> int:
    return len(page.query_selector_all(selector))


def _shot(page: Any, name: str) -> None:
    OUTPUT.mkdir(exist_ok=True)
    page.screenshot(path=str(OUTPUT / f'{name}.png'), full_page=True)


def test_the_dashboard_in_a_browser(world: dict[str, Any], run_script: Callable[..., Any], browser: Any,
                                    queue_name: str) -> None:
    run_script(CONSUMER, queue_name)
    publisher = Publisher(queue_name, KIND)
    for i in range(300):
        publisher.publish({'x': i})
    broker = get_broker(KIND, queue_name)
    assert wait_until(lambda: broker.count() == 0, 60), 'the consumer did not run the tasks'
    publisher.publish_many([{'x': i} for i in range(2001, 2001 + 1500)])  # ~20 s of slow runs: busy for the shot
    base = _dashboard(run_script, '--token', TOKEN)
    page = _page(browser)
    page.goto(f'{base}/?token={TOKEN}')  # sets the cookie, then the overview without the token in its address

    # the live chart draws: a polyline with real points once the consumer's runs are in the store
    page.wait_for_selector('#live-chart polyline[data-series=succeeded]', state='attached', timeout=15000)
    points = page.get_attribute('#live-chart polyline[data-series=succeeded]', 'points') or ''
    assert len({p.split(',')[1] for p in points.split()}) > 1, 'the chart is flat: no runs were drawn'
    assert 'token' not in page.url
    # time labels under the charts: seconds back from now live, the clock in the history
    assert _x_labels(page, '#live-chart') == ['-60 s', '-45 s', '-30 s', '-15 s', 'now']
    page.wait_for_selector('#history-chart text.x-label', state='attached')
    history = _x_labels(page, '#history-chart')
    assert len(history) == 5 and all(re.fullmatch(r'\d\d:\d\d', label) for label in history), history
    # the cards: real figures from the live consumer (not a dash), counts with separators, a rate with <= 1 decimal
    assert wait_until(lambda: _text(page, '#in-progress b') not in ('—', '0'), 20), 'no run shown in progress'
    for card in ('done-today', 'failed-today', 'in-progress', 'consumers-alive', 'records-dropped'):
        assert _is_count(_text(page, f'#{card} b')), (card, _text(page, f'#{card} b'))
    assert _text(page, '#records-dropped b') == '0' and _text(page, '#consumers-alive b') == '1'
    assert re.fullmatch(r'\d{1,3}(,\d{3})*(\.\d)?', _text(page, '#rate b')), _text(page, '#rate b')
    _shot(page, 'overview')
    broker.purge()

    # the runs filters narrow the table, and the filters live in the address
    page.goto(f'{base}/runs?queue={queue_name}')
    page.wait_for_selector('#runs tbody tr')
    statuses = page.eval_on_selector_all('#runs tbody tr', 'rows => rows.map(r => r.dataset.status)')
    assert {'succeeded', 'failed'} <= set(statuses)
    page.fill('input[name=function]', 'nobody_has_this_function')
    page.click('#filters button[type=submit]')
    page.wait_for_selector('#empty')
    page.fill('input[name=function]', 'work')
    page.fill('input[name=status]', 'failed')
    page.click('#filters button[type=submit]')
    page.wait_for_url('**status=failed**')
    assert 'function=work' in page.url
    page.wait_for_selector('#runs tbody tr')
    narrowed = page.eval_on_selector_all('#runs tbody tr', 'rows => rows.map(r => r.dataset.status)')
    assert narrowed and set(narrowed) == {'failed'}
    assert _functions_shown(page) == {'work'}
    _shot(page, 'runs')

    # a failed run's page shows its traceback
    page.click('#runs tbody tr a.run')
    page.wait_for_selector('#traceback')
    assert 'ValueError: x may not be a multiple of 5' in page.inner_text('#traceback')
    assert 'Traceback (most recent call last)' in page.inner_text('#traceback')
    _shot(page, 'run')

    # the queue's page: its function, with the way to that function's runs, and its chart with time labels
    page.goto(f'{base}/queue?name={queue_name}')
    page.wait_for_selector('#queue-chart text.x-label', state='attached')
    assert all(re.fullmatch(r'\d\d:\d\d', label) for label in _x_labels(page, '#queue-chart'))
    _shot(page, 'queue')
    page.click('#function-runs')
    page.wait_for_selector('#runs tbody tr')
    assert 'function=work' in page.url
    assert _functions_shown(page) == {'work'}


def test_a_tree_of_20000_nodes_expands_and_pages(world: dict[str, Any], run_script: Callable[..., Any],
                                                 browser: Any) -> None:
    base = _dashboard(run_script)
    page = _page(browser)
    started = time.monotonic()
    page.goto(f'{base}/tree?id={ROOT}')
    page.click(f'li[data-id={ROOT}] > .row .toggle')
    page.wait_for_selector(f'li[data-id={ROOT}] > ul > li.more button')
    assert _count(page, f'li[data-id={ROOT}] > ul > li.node') == 200
    page.click(f'li[data-id={ROOT}] > ul > li.more button')
    page.wait_for_selector(f'li[data-id={ROOT}] > ul > li.node:nth-of-type(400)')
    assert _count(page, f'li[data-id={ROOT}] > ul > li.node') == 400
    assert page.query_selector(f'li[data-id={ROOT}] > ul > li.more') is None  # 400 children: two pages, no more
    inner = f'{ROOT}-c00000'  # one of the 50 inner children, 392 grandchildren
    page.click(f'li[data-id="{inner}"] > .row .toggle')
    page.wait_for_selector(f'li[data-id="{inner}"] > ul > li.more button')
    assert _count(page, f'li[data-id="{inner}"] > ul > li.node') == 200
    assert 'failed' in page.inner_text(f'li[data-id="{inner}"] > .row .counts')
    page.click('#next-failure')
    page.wait_for_selector('#results .failure .path a')
    assert ROOT in page.inner_text('#results .failure')
    page.fill('#tree-search input[name=task_id]', f'{ROOT}-g0001')
    page.click('#tree-search button')
    page.wait_for_selector('#results .path:nth-of-type(50)')
    assert _count(page, '#results .path') == 50
    assert time.monotonic() - started < 20
    _shot(page, 'tree')


def test_pause_with_the_token_stops_a_live_consumer_and_resume_restarts_it(
        world: dict[str, Any], run_script: Callable[..., Any], browser: Any, queue_name: str) -> None:
    run_script(CONSUMER, queue_name)
    publisher = Publisher(queue_name, KIND)
    broker = get_broker(KIND, queue_name)
    publisher.publish({'x': 1})
    assert wait_until(lambda: broker.count() == 0, 30)
    base = _dashboard(run_script, '--token', TOKEN)
    page = _page(browser)
    page.goto(f'{base}/queues?token={TOKEN}')
    row = f'tr[data-queue="{queue_name}"]'
    page.wait_for_selector(f'{row} button[data-act=pause]')
    page.click(f'{row} button[data-act=pause]')
    page.wait_for_selector(f'{row} button[data-act=resume]')
    time.sleep(2.5)  # the consumer reads its pause flag every ~2 s (its contract); nothing to poll before that
    for i in range(20):
        publisher.publish({'x': i + 1000})
    time.sleep(2.0)
    assert broker.count() == 20, 'a paused consumer went on fetching'
    publisher.publish({'x': 2000}, countdown=3600)  # delayed an hour: counted apart from the waiting ones
    # the oldest waiting message's age where the broker tells (Redis), a dash saying why where it cannot (ZeroMQ)
    page.reload()
    page.wait_for_selector(f'{row} td.oldest-age')
    assert re.fullmatch(r'\d+\.\d+ (s|ms)', _text(page, f'{row} td.oldest-age')), _text(page, f'{row} td.oldest-age')
    assert _text(page, f'{row} td.waiting') == '20'
    assert _text(page, 'tr[data-queue=zmq_q] td.oldest-age') == '—'
    assert 'cannot tell' in (page.get_attribute('tr[data-queue=zmq_q] td.oldest-age span', 'title') or '')
    assert _text(page, f'{row} td.delayed') == '1' and _text(page, f'{row} td.time-left') == 'paused'
    assert _text(page, 'tr[data-queue=zmq_q] td.delayed') == '—'
    assert 'cannot be counted' in (page.get_attribute('tr[data-queue=zmq_q] td.delayed span', 'title') or '')
    _shot(page, 'queues')
    page.click(f'{row} button[data-act=resume]')
    assert wait_until(lambda: broker.count() == 0, 20), 'the resumed consumer did not fetch again'
    broker.purge()  # the delayed message too


def test_read_only_hides_actions(world: dict[str, Any], run_script: Callable[..., Any], browser: Any) -> None:
    base = _dashboard(run_script, '--read-only')
    page = browser.new_page()
    page.goto(f'{base}/queues')
    page.wait_for_selector('tr[data-queue=tree_q]')
    assert not page.is_visible('tr[data-queue=tree_q] button[data-act=pause]')
    assert not page.is_visible('tr[data-queue=tree_q] button[data-act=purge]')
    page.goto(f'{base}/run?id={ROOT}')
    page.wait_for_selector('#arguments')
    assert not page.is_visible('#republish')
    _shot(page, 'read_only_run')
    page.goto(f'{base}/consumers')
    page.wait_for_selector('h1')
    _shot(page, 'consumers')

// Queue: its row, its function (with a link to its runs), its charts (60 s to 10 days), its consumers and their
// options, its recent failures.
import {api, delayedCount, el, fmtCount, fmtRate, fmtSeconds, fmtTime, historyChart, oldestAge, params, runLink,
  start, table, timeLeft} from './common.js';

const main = document.getElementById('main');
const name = params.get('name') || '';
const enc = encodeURIComponent;

start(async () => {
  const data = await api('/api/queue/' + enc(name));
  const q = data.queue;
  const chart = historyChart(name, ['60m', '60s', '24h', '10d']);
  chart.svg.id = 'queue-chart';
  const fn = data.function;
  main.append(el('h1', {}, 'Queue ' + name),
    el('dl', {}),
    el('p', {}, el('a', {href: '/runs?queue=' + enc(name)}, 'runs'), ' · ',
      fn ? [el('a', {id: 'function-runs', href: `/runs?queue=${enc(name)}&function=${enc(fn)}`}, `runs of ${fn}`),
        ' · ', el('a', {href: `/runs?queue=${enc(name)}&function=${enc(fn)}&status=failed`}, 'its failures'),
        ' · '] : null,
      el('a', {href: '/dlq?queue=' + enc(name)}, 'dead letters'), ' · ',
      el('a', {href: '/queues'}, 'pause / purge on the queues page')),
    el('h2', {}, 'Runs per bucket'), chart.tabs, chart.svg,
    el('h2', {}, 'Consumers and their options'), table(['host', 'pid', 'mode', 'concurrency', 'qps', 'runs/s',
      'heartbeat age', 'alive'],
      data.consumers.map(c => el('tr', {class: c.alive ? null : 'stale'}, el('td', {}, c.host), el('td', {}, c.pid),
        el('td', {}, c.concurrent_mode), el('td', {}, c.concurrency), el('td', {}, c.qps ?? '—'),
        el('td', {}, fmtRate((c.rates || {}).settled)), el('td', {}, fmtSeconds(c.beat_age)),
        el('td', {}, c.alive ? 'yes' : 'stale')))),
    el('h2', {}, 'Recent failures'), table(['ended', 'task', 'exception'],
      data.failures.map(r => el('tr', {}, el('td', {}, fmtTime(r.end_time)), el('td', {}, runLink(r.task_id)),
        el('td', {}, `${r.exception_type || ''}: ${r.exception_message || ''}`)))));
  const dl = main.querySelector('dl');
  for (const [k, v] of [['function', fn || '—'], ['broker', q.broker_kind], ['waiting', fmtCount(q.waiting)],
    ['delayed', delayedCount(q)], ['dead letters', fmtCount(q.dead_letters)],
    ['oldest waiting', oldestAge(q)], ['consumers alive', fmtCount(q.consumers_alive)], ['runs / s', fmtRate(q.rate)],
    ['time left', timeLeft(q)], ['paused', q.paused ? 'yes' : 'no']]) {
    dl.append(el('dt', {}, k), el('dd', {}, v));
  }
  await chart.show('60m');
});

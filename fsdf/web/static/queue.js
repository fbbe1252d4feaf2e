// Queue: its row, its chart (60 min per minute), its consumers, its recent failures.
import {api, el, fmtSeconds, fmtTime, lineChart, params, runLink, seriesOf, start, table} from './common.js';

const main = document.getElementById('main');
const name = params.get('name') || '';

start(async () => {
  const data = await api('/api/queue/' + encodeURIComponent(name));
  const q = data.queue;
  const chart = document.createElementNS('http://www.w3.org/2000/svg', 'svg');
  chart.classList.add('chart');
  main.append(el('h1', {}, 'Queue ' + name),
    el('dl', {}),
    el('p', {}, el('a', {href: '/runs?queue=' + encodeURIComponent(name)}, 'runs'), ' · ',
      el('a', {href: '/dlq?queue=' + encodeURIComponent(name)}, 'dead letters'), ' · ',
      el('a', {href: '/queues'}, 'pause / purge on the queues page')),
    el('h2', {}, 'Last 60 minutes (runs per minute)'), chart,
    el('h2', {}, 'Consumers'), table(['host', 'pid', 'mode', 'concurrency', 'heartbeat age', 'alive'],
      data.consumers.map(c => el('tr', {class: c.alive ? null : 'stale'}, el('td', {}, c.host), el('td', {}, c.pid),
        el('td', {}, c.concurrent_mode), el('td', {}, c.concurrency), el('td', {}, fmtSeconds(c.beat_age)),
        el('td', {}, c.alive ? 'yes' : 'stale')))),
    el('h2', {}, 'Recent failures'), table(['ended', 'task', 'exception'],
      data.failures.map(r => el('tr', {}, el('td', {}, fmtTime(r.end_time)), el('td', {}, runLink(r.task_id)),
        el('td', {}, `${r.exception_type || ''}: ${r.exception_message || ''}`)))));
  const dl = main.querySelector('dl');
  for (const [k, v] of [['broker', q.broker_kind], ['waiting', q.waiting ?? '—'], ['consumers alive', q.consumers_alive],
    ['runs / s', q.rate], ['time left', fmtSeconds(q.seconds_left)], ['paused', q.paused ? 'yes' : 'no']]) {
    dl.append(el('dt', {}, k), el('dd', {}, v));
  }
  const stats = await api(`/api/stats/${encodeURIComponent(name)}?window=60m`);
  const now = Date.now() / 1000;
  lineChart(chart, seriesOf(stats, now), {from: stats.since, to: now});
});

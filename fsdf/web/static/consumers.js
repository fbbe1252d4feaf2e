// Consumers: grouped by host or by queue, heartbeat age, stale ones marked (struck through).
import {api, el, fmtCount, fmtRate, fmtSeconds, fmtTime, params, start, table} from './common.js';

const main = document.getElementById('main');
const by = params.get('by') === 'queue' ? 'queue' : 'host';

start(async () => {
  const {consumers} = await api('/api/consumers');
  main.append(el('h1', {}, 'Consumers'), el('p', {}, 'Group by ',
    el('a', {href: '/consumers?by=host'}, 'host'), ' · ', el('a', {href: '/consumers?by=queue'}, 'queue')));
  const groups = new Map();
  for (const c of consumers) {
    const key = c[by] || '?';
    if (!groups.has(key)) groups.set(key, []);
    groups.get(key).push(c);
  }
  for (const [key, list] of groups) {
    main.append(el('h2', {}, `${by} ${key}`), table(['queue', 'host', 'pid', 'script', 'mode', 'concurrency',
      'started', 'heartbeat age', 'runs/s', 'succeeded', 'failed', 'state'],
      list.map(c => el('tr', {class: c.alive ? null : 'stale', 'data-alive': String(c.alive)},
        el('td', {}, c.queue), el('td', {}, c.host), el('td', {}, c.pid), el('td', {}, c.script),
        el('td', {}, c.concurrent_mode), el('td', {}, c.concurrency), el('td', {}, fmtTime(c.start_time)),
        el('td', {}, fmtSeconds(c.beat_age)), el('td', {}, fmtRate((c.rates || {}).settled)),
        el('td', {}, fmtCount((c.counters || {}).succeeded)), el('td', {}, fmtCount((c.counters || {}).failed)),
        el('td', {}, c.alive ? (c.paused ? 'paused' : 'alive') : 'stale')))));
  }
  if (!consumers.length) main.append(el('p', {}, 'No consumer has registered.'));
});

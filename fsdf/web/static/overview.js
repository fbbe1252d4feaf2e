// Overview: today's counts, a live per-second chart of the last 60 s (polled every 2 s), history tabs.
import {api, el, fmtCount, fmtRate, historyChart, lineChart, orDash, seriesOf, start} from './common.js';

const main = document.getElementById('main');
const cards = el('div', {class: 'cards', id: 'cards'});
const live = document.createElementNS('http://www.w3.org/2000/svg', 'svg');
live.id = 'live-chart'; live.classList.add('chart');
const history = historyChart('_all', ['60m', '24h', '10d']);
history.svg.id = 'history-chart';
main.append(el('h1', {}, 'Overview'), cards, el('h2', {}, 'Last 60 seconds (runs per second)'), live,
  el('h2', {}, 'History'), history.tabs, history.svg);

const NO_REPORT = 'no live consumer reports it (consumers older than this dashboard, or none running)';

function card(label, value, id) {
  return el('div', {class: 'card', id}, el('b', {}, orDash(value, NO_REPORT)), label);
}

async function refresh() {
  const o = await api('/api/overview');
  const count = n => n === null || n === undefined ? null : fmtCount(n);
  cards.replaceChildren(card('done today', count(o.done_today), 'done-today'),
    card('failed today', count(o.failed_today), 'failed-today'), card('in progress', count(o.in_progress), 'in-progress'),
    card('consumers alive', count(o.consumers_alive), 'consumers-alive'),
    card('records dropped', count(o.records_dropped), 'records-dropped'),
    card('runs / s now', o.rate === null || o.rate === undefined ? null : fmtRate(o.rate), 'rate'));
  const now = Math.floor(o.time);
  lineChart(live, seriesOf(await api('/api/stats/_all?window=60s'), now), {from: now - 60, to: now});
}

start(async () => {
  await refresh();
  await history.show('60m');
  setInterval(() => refresh().catch(() => {}), 2000);
});

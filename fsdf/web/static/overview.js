// Overview: today's counts, a live per-second chart of the last 60 s (polled every 2 s), history tabs.
import {api, el, lineChart, seriesOf, start} from './common.js';

const main = document.getElementById('main');
const cards = el('div', {class: 'cards', id: 'cards'});
const live = document.createElementNS('http://www.w3.org/2000/svg', 'svg');
live.id = 'live-chart'; live.classList.add('chart');
const history = document.createElementNS('http://www.w3.org/2000/svg', 'svg');
history.id = 'history-chart'; history.classList.add('chart');
let windowShown = '60m';
const tabs = el('div', {class: 'tabs'}, ['60m', '24h', '10d'].map(w =>
  el('button', {'data-window': w, class: w === windowShown ? 'on' : null, onclick: () => showHistory(w)},
     {'60m': '60 min', '24h': '24 h', '10d': '10 days'}[w])));
main.append(el('h1', {}, 'Overview'), cards, el('h2', {}, 'Last 60 seconds (runs per second)'), live,
  el('h2', {}, 'History'), tabs, history);

function card(label, value) {
  return el('div', {class: 'card'}, el('b', {}, value === null || value === undefined ? '—' : value), label);
}

async function refresh() {
  const o = await api('/api/overview');
  cards.replaceChildren(card('done today', o.done_today), card('failed today', o.failed_today),
    card('in progress', o.in_progress), card('consumers alive', o.consumers_alive),
    card('records dropped', o.records_dropped), card('runs / s now', o.rate));
  const now = Math.floor(o.time);
  lineChart(live, seriesOf(await api('/api/stats/_all?window=60s'), now), {from: now - 60, to: now});
}

async function showHistory(w) {
  windowShown = w;
  tabs.querySelectorAll('button').forEach(b => b.classList.toggle('on', b.dataset.window === w));
  const stats = await api('/api/stats/_all?window=' + w);
  const now = Date.now() / 1000;
  lineChart(history, seriesOf(stats, now), {from: stats.since, to: now});
}

start(async () => {
  await refresh();
  await showHistory(windowShown);
  setInterval(() => refresh().catch(() => {}), 2000);
});

// Queues: broker, waiting, delayed, dead letters (a link to them), oldest message age, consumers, rate, time left, paused;
// pause/resume, purge. Refreshes every 10 s.
import {act, api, delayedCount, el, fmtCount, fmtRate, oldestAge, start, table, timeLeft} from './common.js';

const main = document.getElementById('main');
const holder = el('div', {id: 'queues'});
main.append(el('h1', {}, 'Queues'), el('p', {}, 'Refreshes every 10 s.'), holder);

function actions(q) {
  const again = () => refresh();
  return el('span', {},
    el('button', {class: 'action', 'data-act': q.paused ? 'resume' : 'pause',
      onclick: () => act(`/api/queues/${encodeURIComponent(q.name)}/${q.paused ? 'resume' : 'pause'}`).then(again)},
      q.paused ? 'resume' : 'pause'), ' ',
    el('button', {class: 'action', 'data-act': 'purge', onclick: () => {
      const typed = prompt(`Purge removes every waiting message of ${q.name}. Type the queue's name to confirm:`);
      if (typed) act(`/api/queues/${encodeURIComponent(q.name)}/purge`, {confirm: typed}).then(again);
    }}, 'purge'));
}

async function refresh() {
  const {queues} = await api('/api/queues');
  holder.replaceChildren(table(['queue', 'broker', 'waiting', 'delayed', 'dead letters', 'oldest waiting', 'consumers', 'runs/s',
    'time left', 'paused', ''], queues.map(q => el('tr', {'data-queue': q.name},
      el('td', {}, el('a', {href: '/queue?name=' + encodeURIComponent(q.name)}, q.name)),
      el('td', {}, q.broker_kind || '?'), el('td', {class: 'waiting'}, fmtCount(q.waiting)),
      el('td', {class: 'delayed'}, delayedCount(q)),
      el('td', {class: 'dead-letters'}, el('a', {href: '/dlq?queue=' + encodeURIComponent(q.name)},
        fmtCount(q.dead_letters))),
      el('td', {class: 'oldest-age'}, oldestAge(q)),
      el('td', {}, fmtCount(q.consumers_alive)), el('td', {class: 'rate'}, fmtRate(q.rate)),
      el('td', {class: 'time-left'}, timeLeft(q)),
      el('td', {class: 'paused'}, q.paused ? 'paused' : 'no'), el('td', {}, actions(q))))));
}

start(async () => { await refresh(); setInterval(() => refresh().catch(() => {}), 10000); });

// Queues: broker, waiting, consumers, rate, time left, paused; pause/resume, purge, dead letters. Refreshes every 10 s.
import {act, api, el, fmtSeconds, start, table} from './common.js';

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
    }}, 'purge'), ' ',
    el('a', {href: '/dlq?queue=' + encodeURIComponent(q.name)}, 'dead letters'));
}

async function refresh() {
  const {queues} = await api('/api/queues');
  holder.replaceChildren(table(['queue', 'broker', 'waiting', 'consumers', 'runs/s', 'time left', 'paused', ''],
    queues.map(q => el('tr', {'data-queue': q.name},
      el('td', {}, el('a', {href: '/queue?name=' + encodeURIComponent(q.name)}, q.name)),
      el('td', {}, q.broker_kind || '?'), el('td', {}, q.waiting ?? '—'), el('td', {}, q.consumers_alive),
      el('td', {}, q.rate), el('td', {}, fmtSeconds(q.seconds_left)),
      el('td', {class: 'paused'}, q.paused ? 'paused' : 'no'), el('td', {}, actions(q))))));
}

start(async () => { await refresh(); setInterval(() => refresh().catch(() => {}), 10000); });

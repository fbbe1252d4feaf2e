// Dead letters of a queue: the messages with their reasons; re-drive or delete one or all.
import {act, api, el, fmtTime, params, runLink, start, table} from './common.js';

const main = document.getElementById('main');
const queue = params.get('queue') || '';
const base = '/api/dlq/' + encodeURIComponent(queue);

start(async () => {
  const data = await api(base);
  const reload = () => location.reload();
  main.append(el('h1', {}, `Dead letters of ${queue}`), el('p', {}, `${data.count ?? '?'} in the dead-letter queue; ` +
    `the first ${data.messages.length} shown. `,
    el('button', {class: 'action', id: 'redrive-all', onclick: () => confirm('Re-drive every dead letter?') &&
      act(base + '/redrive', {all: true}).then(reload)}, 're-drive all'), ' ',
    el('button', {class: 'action', id: 'delete-all', onclick: () => confirm('Delete every dead letter for good?') &&
      act(base + '/delete', {all: true}).then(reload)}, 'delete all')),
    table(['task', 'reason', 'exception', 'dead since', 'arguments', ''], data.messages.map(m => el('tr', {},
      el('td', {}, m.task_id ? runLink(m.task_id) : '—'), el('td', {}, m.reason || '?'),
      el('td', {}, [m.exception_type, m.error].filter(Boolean).join(': ')), el('td', {}, fmtTime(m.time)),
      el('td', {}, m.arguments), el('td', {}, m.task_id ? [
        el('button', {class: 'action', onclick: () => act(base + '/redrive', {task_id: m.task_id}).then(reload)},
          're-drive'), ' ',
        el('button', {class: 'action', onclick: () => act(base + '/delete', {task_id: m.task_id}).then(reload)},
          'delete')] : null)))));
});

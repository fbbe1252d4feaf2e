// Runs: newest first, filters in the URL (shareable), keyset paging ("older" follows next_cursor).
import {api, badge, el, fmtSeconds, fmtTime, params, runLink, start, table} from './common.js';

const FILTERS = [['queue', 'queue'], ['function', 'function'], ['status', 'status'], ['since', 'since (15m, 2h, ISO)'],
  ['until', 'until'], ['task_id', 'task id prefix'], ['host', 'host'], ['q', 'keyword']];
const main = document.getElementById('main');
const form = el('form', {class: 'filters', id: 'filters'},
  FILTERS.map(([name, label]) => el('input', {name, placeholder: label, value: params.get(name) || ''})),
  el('button', {type: 'submit'}, 'filter'), el('a', {href: '/runs'}, 'clear'));
// Submitting puts the filters in the address (a shareable URL) and starts from the newest page.
form.addEventListener('submit', event => {
  event.preventDefault();
  const query = new URLSearchParams();
  for (const [name] of FILTERS) if (form.elements[name].value.trim()) query.set(name, form.elements[name].value.trim());
  location.search = query.toString();
});
const holder = el('div', {id: 'runs'});
main.append(el('h1', {}, 'Runs'), form, holder);

start(async () => {
  const page = await api('/api/runs?' + params.toString());
  holder.replaceChildren(table(['ended', 'status', 'queue', 'function', 'task', 'duration', 'retries', 'where',
    'exception / result'], page.records.map(r => el('tr', {'data-status': r.status},
    el('td', {}, fmtTime(r.end_time)), el('td', {}, badge(r.status)),
    el('td', {}, el('a', {href: '/queue?name=' + encodeURIComponent(r.queue)}, r.queue)),
    el('td', {}, el('a', {class: 'function', href: '/runs?function=' + encodeURIComponent(r.function || '')},
      r.function)),
    el('td', {}, runLink(r.task_id)), el('td', {}, fmtSeconds(r.duration)), el('td', {}, r.retries),
    el('td', {}, `${r.host}:${r.pid}`),
    el('td', {}, r.exception_type ? `${r.exception_type}: ${r.exception_message}` : (r.result || '')))))
  );
  if (!page.records.length) holder.append(el('p', {id: 'empty'}, 'No runs match.'));
  const nav = el('p', {});
  if (params.get('cursor')) nav.append(el('a', {href: 'javascript:history.back()'}, '← newer'), ' ');
  if (page.next_cursor) {
    const next = new URLSearchParams(params);
    next.set('cursor', page.next_cursor);
    nav.append(el('a', {href: '/runs?' + next, id: 'older'}, 'older →'));
  }
  holder.append(nav);
});

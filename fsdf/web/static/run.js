// Run: arguments, result, traceback, timeline, where it ran, parent/root links, children, re-publish.
import {act, api, badge, countsText, el, fmtSeconds, fmtTime, params, runLink, start, table} from './common.js';

const main = document.getElementById('main');
const taskId = params.get('id') || '';

function pretty(text) {
  if (text === null || text === undefined) return '—';
  try { return JSON.stringify(JSON.parse(text), null, 2); } catch { return text; }
}

start(async () => {
  const {record: r, counts} = await api('/api/runs/' + encodeURIComponent(taskId));
  const dl = el('dl', {});
  const rows = [['status', badge(r.status)], ['queue', el('a', {href: '/queue?name=' + encodeURIComponent(r.queue)}, r.queue)],
    ['function', r.function], ['retries', r.retries], ['published', fmtTime(r.publish_time)],
    ['started', fmtTime(r.start_time)], ['ended', fmtTime(r.end_time)], ['queue wait', fmtSeconds(r.queue_wait)],
    ['duration', fmtSeconds(r.duration)], ['host / pid / thread', `${r.host} / ${r.pid} / ${r.thread_id}`],
    ['script', r.script], ['parent', r.parent_task_id ? runLink(r.parent_task_id) : '—'],
    ['root', r.root_task_id && r.root_task_id !== r.task_id ? runLink(r.root_task_id) : '(this task)'],
    ['children', countsText(counts.children) || 'none recorded'], ['tree', el('a', {href: '/tree?id=' +
      encodeURIComponent(r.root_task_id || r.task_id)}, 'open the task tree')]];
  for (const [k, v] of rows) dl.append(el('dt', {}, k), el('dd', {}, v));
  main.append(el('h1', {}, 'Run ' + r.task_id),
    el('button', {class: 'action', id: 'republish', onclick: () => act(
      `/api/runs/${encodeURIComponent(r.task_id)}/republish`).then(a => { location.href = '/run?id=' +
        encodeURIComponent(a.task_id); })}, 're-publish this call'),
    dl, el('h2', {}, 'Arguments'), el('pre', {id: 'arguments'}, pretty(r.arguments)),
    el('h2', {}, 'Result'), el('pre', {id: 'result'}, pretty(r.result)));
  if (r.exception_type) {
    main.append(el('h2', {}, 'Exception'), el('pre', {id: 'traceback'},
      r.traceback || `${r.exception_type}: ${r.exception_message}`));
  }
  const kids = await api(`/api/runs/${encodeURIComponent(r.task_id)}/children?limit=50`);
  if (kids.records.length) {
    main.append(el('h2', {}, 'Children (newest 50)'), table(['task', 'status', 'function', 'duration'],
      kids.records.map(c => el('tr', {}, el('td', {}, runLink(c.task_id)), el('td', {}, badge(c.status)),
        el('td', {}, c.function), el('td', {}, fmtSeconds(c.duration))))));
  }
});

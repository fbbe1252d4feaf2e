// Task tree: lazy expansion, children 200 a page, each node with status, duration and its children's counts;
// search inside the tree (id prefix, status, time, keyword); jump to the next failure. Nothing is loaded
// before it is opened, so a tree of any size costs one page of 200 per click.
import {api, badge, countsText, el, fmtSeconds, params, runLink, start} from './common.js';

const main = document.getElementById('main');
const rootId = params.get('id') || '';
const enc = encodeURIComponent;

function node(record, counts) {
  const childCounts = counts || record.counts || {};
  const hasChildren = Object.keys(childCounts).length > 0;
  const li = el('li', {class: 'node', 'data-id': record.task_id});
  const toggle = el('span', {class: 'toggle'}, hasChildren ? '▸' : '·');
  li.append(el('div', {class: 'row'}, toggle, badge(record.status), ' ', runLink(record.task_id), ' ',
    el('span', {}, record.function || ''), el('span', {class: 'meta'}, fmtSeconds(record.duration)),
    el('span', {class: 'meta counts'}, hasChildren ? 'children: ' + countsText(childCounts) : '')));
  if (hasChildren) toggle.addEventListener('click', () => expand(li, toggle));
  return li;
}

async function expand(li, toggle) {
  const open = li.querySelector(':scope > ul');
  if (open) { open.remove(); toggle.textContent = '▸'; return; }
  toggle.textContent = '▾';
  const list = el('ul', {class: 'tree'});
  li.append(list);
  await loadPage(li.dataset.id, list, null);
}

async function loadPage(taskId, list, cursor) {
  const page = await api(`/api/runs/${enc(taskId)}/children?limit=200` + (cursor ? '&cursor=' + enc(cursor) : ''));
  list.querySelector(':scope > li.more')?.remove();
  for (const record of page.records) list.append(node(record));
  if (page.next_cursor) {
    list.append(el('li', {class: 'more'}, el('button', {class: 'more-button', onclick: () =>
      loadPage(taskId, list, page.next_cursor)}, 'next 200 children')));
  }
}

function searchForm(onSearch) {
  const form = el('form', {class: 'filters', id: 'tree-search'},
    el('input', {name: 'task_id', placeholder: 'task id prefix'}),
    el('input', {name: 'status', placeholder: 'status'}), el('input', {name: 'since', placeholder: 'since'}),
    el('input', {name: 'until', placeholder: 'until'}), el('input', {name: 'q', placeholder: 'keyword'}),
    el('button', {type: 'submit'}, 'search in tree'));
  form.addEventListener('submit', event => {
    event.preventDefault();
    const query = new URLSearchParams({path: '1'});
    for (const name of ['task_id', 'status', 'since', 'until', 'q']) {
      if (form.elements[name].value.trim()) query.set(name, form.elements[name].value.trim());
    }
    onSearch(query);
  });
  return form;
}

function pathTo(record) {
  return el('div', {class: 'path'}, (record.path || []).map(id => [el('a', {href: '/tree?id=' + enc(id)}, id), ' › ']),
    badge(record.status), ' ', runLink(record.task_id), ' ', record.exception_type || '',
    ' ', el('a', {href: '/tree?id=' + enc(record.task_id)}, '(open as tree)'));
}

start(async () => {
  const data = await api('/api/tree/' + enc(rootId));
  const results = el('div', {id: 'results'});
  let failureCursor = null;
  const nextFailure = el('button', {id: 'next-failure', onclick: async () => {
    const page = await api(`/api/tree/${enc(rootId)}?status=failed&limit=1&path=1` +
      (failureCursor ? '&cursor=' + enc(failureCursor) : ''));
    const found = page.matches.records[0];
    results.replaceChildren(found ? el('div', {class: 'failure'}, el('h2', {}, 'Next failure'), pathTo(found))
      : el('p', {}, 'No more failures in this tree.'));
    failureCursor = page.matches.next_cursor;
  }}, 'jump to next failure');
  const form = searchForm(async query => {
    const page = await api(`/api/tree/${enc(rootId)}?` + query);
    results.replaceChildren(el('h2', {}, `Found (newest ${page.matches.records.length}` +
      (page.matches.next_cursor ? ', more exist)' : ')')), ...page.matches.records.map(pathTo));
  });
  const root = data.root || {task_id: rootId, status: 'unknown'};
  const tree = el('ul', {class: 'tree', id: 'tree'}, node(root, data.counts.children));
  main.append(el('h1', {}, 'Task tree of ' + rootId),
    el('p', {}, 'Below this task: ' + (countsText(data.counts.descendants) || 'no counts (an inner task: open its children)')),
    form, nextFailure, results, el('h2', {}, 'Tree'), tree);
});

// fsdf dashboard: what every page shares. Plain ES module, no build step, nothing fetched from elsewhere.
// Every value from the store is put in the page as text (textContent), never as HTML.

export const STATUS_COLORS = {succeeded: '#2e7d32', failed: '#c62828', dead_lettered: '#8e24aa',
  malformed: '#6d4c41', requeued: '#f9a825', retry_scheduled: '#f9a825', expired: '#757575', filtered: '#9e9e9e'};
export const params = new URLSearchParams(location.search);
export let config = {read_only: true, token_required: false};

export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === null || v === undefined || v === false) continue;
    if (k === 'class') node.className = v;
    else if (k.startsWith('on')) node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v === true ? '' : v);
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

export async function api(path) {
  const response = await fetch(path, {credentials: 'same-origin'});
  const body = await response.json().catch(() => ({error: response.statusText}));
  if (!response.ok) throw new Error(body.error || response.statusText);
  return body;
}

// Actions: JSON body plus the X-Fsdf-Action header, which no cross-site form can send (see security.py).
export async function act(path, body = {}) {
  const response = await fetch(path, {method: 'POST', credentials: 'same-origin',
    headers: {'Content-Type': 'application/json', 'X-Fsdf-Action': '1'}, body: JSON.stringify(body)});
  const answer = await response.json().catch(() => ({error: response.statusText}));
  notify(response.ok ? 'done: ' + JSON.stringify(answer) : 'refused: ' + (answer.error || response.status), !response.ok);
  if (!response.ok) throw new Error(answer.error);
  return answer;
}

export function notify(text, bad = false) {
  const box = document.getElementById('notice');
  box.textContent = text;
  box.className = bad ? 'notice bad' : 'notice';
}

export function fmtTime(seconds) {
  if (!seconds) return '—';
  const d = new Date(seconds * 1000);
  return d.toLocaleString(undefined, {hour12: false}) + '.' + String(d.getMilliseconds()).padStart(3, '0');
}

export function fmtSeconds(s) {
  if (s === null || s === undefined) return '—';
  if (s === 0) return '0 s';
  if (s < 1) return (s * 1000).toFixed(1) + ' ms';
  if (s < 90) return s.toFixed(2) + ' s';
  if (s < 5400) return (s / 60).toFixed(1) + ' min';
  if (s < 172800) return (s / 3600).toFixed(1) + ' h';
  return (s / 86400).toFixed(1) + ' days';
}

// Numbers in the reader's locale: counts with thousand separators, rates with at most one decimal.
export function fmtCount(n) {
  return n === null || n === undefined ? '—' : Number(n).toLocaleString(undefined, {maximumFractionDigits: 0});
}

export function fmtRate(r) {
  return r === null || r === undefined ? '—' : Number(r).toLocaleString(undefined, {maximumFractionDigits: 1});
}

// A value or, when the store or broker cannot give one, a dash whose tooltip says why.
export function orDash(text, why) {
  return text === null || text === undefined || text === '—' ? el('span', {class: 'unknown', title: why}, '—') : text;
}

// A queue's oldest waiting message's age ('0 s': none waits); a dash with the reason where the broker cannot tell.
export function oldestAge(queue) {
  const age = queue.oldest_age;
  return orDash(age === null || age === undefined ? null : fmtSeconds(age),
    'this broker cannot tell how long a message has waited without taking it (RabbitMQ, Kafka, NATS, ZeroMQ, ' +
    'KOMBU), or it could not be reached');
}

// A queue's delayed messages (held until due, not yet waiting); a dash with the reason where the broker cannot tell.
export function delayedCount(queue) {
  return orDash(queue.delayed === null || queue.delayed === undefined ? null : fmtCount(queue.delayed),
    'this broker keeps delayed messages where they cannot be counted (RabbitMQ, Kafka, NATS, ZeroMQ, KOMBU), ' +
    'or it could not be reached');
}

// A queue's time left at its current rate; 'paused' for a paused queue, whose last rate says nothing.
export function timeLeft(queue) {
  return queue.paused ? 'paused' : fmtSeconds(queue.seconds_left);
}

export function badge(status) {
  return el('span', {class: 'badge', style: `background:${STATUS_COLORS[status] || '#455a64'}`}, status || '?');
}

export function countsText(counts) {
  const parts = Object.entries(counts || {}).map(([s, n]) => `${s} ${n}`);
  return parts.length ? parts.join(' · ') : '';
}

export function runLink(taskId) {
  return el('a', {class: 'run', href: '/run?id=' + encodeURIComponent(taskId)}, taskId);
}

export function table(headers, rows) {
  return el('table', {}, el('thead', {}, el('tr', {}, headers.map(h => el('th', {}, h)))),
    el('tbody', {}, rows));
}

// A line chart drawn as inline SVG: a few lines of our own rather than a charting library, so the
// package ships no third-party JavaScript and no licence to track. series: {name: [[x, y], ...]};
// from/to: the time axis in epoch seconds, labelled at five ticks by tickLabel (default: see timeTick). Drawn at
// the element's own size, so text is never stretched.
export function lineChart(svg, series, {from, to, width = svg.clientWidth || 720, height = svg.clientHeight || 180,
  tickLabel = timeTick(from, to)}) {
  svg.replaceChildren();
  svg.setAttribute('viewBox', `0 0 ${width} ${height}`);
  const pad = 28, left = 44, bottom = 18;
  const top = Math.max(1, ...Object.values(series).flat().map(p => p[1]));
  const x = t => left + (t - from) / Math.max(1, to - from) * (width - left - 8);
  const y = v => height - bottom - v / top * (height - bottom - pad + 16);
  const ns = 'http://www.w3.org/2000/svg';
  const add = (tag, attrs, text) => {
    const node = document.createElementNS(ns, tag);
    for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
    if (text !== undefined) node.textContent = text;
    svg.append(node);
  };
  add('line', {x1: left, y1: y(0), x2: width - 8, y2: y(0), stroke: '#999'});
  add('text', {x: left - 4, y: y(top) + 4, 'font-size': 10, fill: '#555', 'text-anchor': 'end'}, fmtRate(top));
  add('text', {x: left - 4, y: y(0) + 3, 'font-size': 10, fill: '#555', 'text-anchor': 'end'}, '0');
  for (let i = 0; i <= 4; i++) {
    const t = from + (to - from) * i / 4;
    add('line', {x1: x(t), y1: y(0), x2: x(t), y2: y(0) + 3, stroke: '#999'});
    add('text', {class: 'x-label', x: x(t), y: height - 4, 'font-size': 10, fill: '#555',
      'text-anchor': i === 0 ? 'start' : i === 4 ? 'end' : 'middle'}, tickLabel(t, i));
  }
  for (const [name, points] of Object.entries(series)) {
    if (!points.length) continue;
    const path = points.map(([t, v]) => `${x(t).toFixed(1)},${y(v).toFixed(1)}`).join(' ');
    add('polyline', {points: path, fill: 'none', stroke: STATUS_COLORS[name] || '#1565c0', 'stroke-width': 2,
      'data-series': name});
  }
}

// Tick labels for a time axis: seconds back from now (-60 s ... now) over two minutes or less, the
// clock (HH:MM) up to two days, else the day (MM-DD HH:MM), all in the reader's time zone.
export function timeTick(from, to) {
  const span = to - from;
  if (span <= 120) return (t, i) => i === 4 ? 'now' : `-${Math.round(to - t)} s`;
  const two = n => String(n).padStart(2, '0');
  const clock = d => `${two(d.getHours())}:${two(d.getMinutes())}`;
  if (span <= 2 * 86400) return t => clock(new Date(t * 1000));
  return t => { const d = new Date(t * 1000); return `${two(d.getMonth() + 1)}-${two(d.getDate())} ${clock(d)}`; };
}

// Buckets from /api/stats -> {succeeded: [[t, n]...], failed: [...]} with every bucket present (zeros too).
export function seriesOf(stats, now) {
  const byBucket = new Map(stats.buckets.map(b => [b.bucket, b.counts]));
  const g = stats.granularity;
  const start = Math.floor(stats.since / g) * g;
  const out = {succeeded: [], failed: []};
  for (let t = start; t <= now; t += g) {
    const counts = byBucket.get(t) || {};
    out.succeeded.push([t, counts.succeeded || 0]);
    out.failed.push([t, (counts.failed || 0) + (counts.dead_lettered || 0) + (counts.malformed || 0)]);
  }
  return out;
}

// A chart of runs per bucket with tabs for its windows (queue '_all': every queue); the first window shows first.
export function historyChart(queue, windows) {
  const svg = document.createElementNS('http://www.w3.org/2000/svg', 'svg');
  svg.classList.add('chart');
  const names = {'60s': '60 s', '60m': '60 min', '24h': '24 h', '10d': '10 days'};
  const show = async w => {
    tabs.querySelectorAll('button').forEach(b => b.classList.toggle('on', b.dataset.window === w));
    const stats = await api(`/api/stats/${encodeURIComponent(queue)}?window=${w}`);
    const now = Date.now() / 1000;
    lineChart(svg, seriesOf(stats, now), {from: stats.since, to: now});
  };
  const tabs = el('div', {class: 'tabs'}, windows.map(w =>
    el('button', {'data-window': w, onclick: () => show(w)}, names[w] || w)));
  return {tabs, svg, show};
}

const PAGES = [['/', 'Overview'], ['/queues', 'Queues'], ['/runs', 'Runs'], ['/consumers', 'Consumers']];

export async function start(render) {
  document.body.prepend(el('header', {}, el('strong', {}, 'fsdf'),
    PAGES.map(([href, label]) => el('a', {href, class: location.pathname === href ? 'here' : null}, label)),
    el('span', {id: 'notice', class: 'notice'})));
  try {
    config = await api('/api/config');
    if (!config.read_only) document.body.classList.add('can-act');
    await render();
  } catch (error) {
    notify(String(error.message || error), true);
  }
}

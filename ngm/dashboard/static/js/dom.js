// DOM building and formatting. Text always goes in as text nodes, never as HTML: gateway names,
// descriptions and error messages come from users.

export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (name.startsWith('on')) el.addEventListener(name.slice(2), value);
    else if (name === 'dataset') Object.assign(el.dataset, value);
    else if (name in el && typeof value !== 'string') el[name] = value;
    else el.setAttribute(name, value === true ? '' : value);
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const child of children.flat(Infinity)) {
    if (child === undefined || child === null || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

export function replace(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

const SVG = 'http://www.w3.org/2000/svg';
export function s(tag, attrs = {}, ...children) {
  const el = document.createElementNS(SVG, tag);
  for (const [name, value] of Object.entries(attrs)) if (value !== undefined && value !== null) el.setAttribute(name, value);
  append(el, children);
  return el;
}

// Health and status as colour *and* text, so colour is never the only signal.
export function badge(value) {
  return h('span', { class: `badge badge-${value || 'unknown'}` }, value || 'unknown');
}

export function ms(value) {
  return value === null || value === undefined ? '—' : `${Math.round(value * 10) / 10} ms`;
}

export function percent(value, digits = 1) {
  return value === null || value === undefined ? '—' : `${Number(value).toFixed(digits)}%`;
}

export function ago(iso) {
  if (!iso) return 'never';
  const seconds = Math.max(0, (Date.now() - Date.parse(iso)) / 1000);
  if (seconds < 5) return 'just now';
  if (seconds < 90) return `${Math.round(seconds)} s ago`;
  if (seconds < 5400) return `${Math.round(seconds / 60)} min ago`;
  if (seconds < 129600) return `${Math.round(seconds / 3600)} h ago`;
  return `${Math.round(seconds / 86400)} d ago`;
}

export function when(iso) {
  return iso ? h('time', { datetime: iso, title: iso }, ago(iso)) : 'never';
}

export function table(columns, rows, { caption, empty = 'Nothing here yet.', rowAttrs } = {}) {
  if (!rows.length) return h('p', { class: 'empty' }, empty);
  return h('table', {},
    caption ? h('caption', {}, caption) : null,
    h('thead', {}, h('tr', {}, columns.map(([label]) => h('th', { scope: 'col' }, label)))),
    h('tbody', {}, rows.map(row => h('tr', rowAttrs ? rowAttrs(row) : {},
      columns.map(([, cell]) => h('td', {}, cell(row)))))));
}

export function section(title, ...children) {
  const id = `s-${title.toLowerCase().replace(/[^a-z0-9]+/g, '-')}`;
  return h('section', { 'aria-labelledby': id }, h('h2', { id }, title), ...children);
}

let toastTimer;
export function toast(message, kind = 'ok') {
  const el = document.getElementById('toast');
  replace(el, h('p', { class: `toast toast-${kind}` }, message));
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => el.replaceChildren(), 5000);
}

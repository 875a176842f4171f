// The organization's gateways, filtered by environment and status, a page at a time from the server (keyset
// cursors: an organization may have tens of thousands), and the form that registers one.
import { api, events, get, session } from '../api.js';
import { badge, h, ms, replace, table, toast, when } from '../dom.js';
import { form, values } from '../forms.js';
import { CREATE_FIELDS, ENVIRONMENTS, HEALTH, STATUSES } from './gateway_fields.js';

const filters = { environment: '', status: '', health_status: '' };
const PAGE = 50;
let cursors = [null]; // the cursor of every page up to the one shown (null: the first)
let loads = 0; // load()'s calls: an answer that a newer call overtook is dropped

export async function gatewaysView({ creating }, main) {
  const list = h('div', { id: 'gateway-list', 'aria-live': 'polite' });
  const filterBar = h('form', { class: 'filters', 'aria-label': 'Filter gateways', onsubmit: e => e.preventDefault() },
    select('environment', 'Environment', ENVIRONMENTS), select('status', 'Status', STATUSES),
    select('health_status', 'Health', HEALTH));
  filterBar.addEventListener('change', () => { cursors = [null]; load(list); });
  const canChange = session.me.can_change;
  replace(main,
    h('div', { class: 'title-row' }, h('h1', {}, 'Gateways'),
      canChange && !creating ? h('a', { href: '#/gateways/new', class: 'button primary' }, 'New gateway') : null),
    creating && canChange ? createForm() : null,
    filterBar, list);
  cursors = [null];
  await load(list);
  // Health and status cells follow the event stream; the rest changes only by someone's edit.
  return events((event) => {
    const d = event.data || {};
    const row = list.querySelector(`tr[data-gateway-id="${CSS.escape(d.gateway_id || '')}"]`);
    if (!row) return;
    const cells = row.children;
    if (event.type === 'health.probe') {
      replace(cells[4], badge(d.gateway_status));
      replace(cells[5], badge(d.status));
      replace(cells[6], when(d.last_check));
      replace(cells[7], ms(d.response_time_ms));
    } else if (event.type === 'health.transition') {
      replace(cells[4], badge(d.to_status));
      replace(cells[5], badge(d.to_health));
    }
  });
}

function select(name, label, options) {
  const id = `filter-${name}`;
  return h('div', { class: 'field' }, h('label', { for: id }, label),
    h('select', { id, name, onchange: e => { filters[name] = e.target.value; } },
      h('option', { value: '' }, 'all'),
      options.map(o => h('option', { value: o, selected: filters[name] === o }, o))));
}

async function load(list) {
  const mine = ++loads;
  const cursor = cursors[cursors.length - 1];
  const page = await get('/gateways', { ...filters, limit: PAGE, ...(cursor ? { cursor } : {}) });
  if (mine !== loads) return;
  const gateways = page.items;
  const first = (cursors.length - 1) * PAGE + 1;
  const turn = (delta) => {
    for (const button of list.querySelectorAll('.pager button')) button.disabled = true; // one turn per click
    if (delta > 0) cursors.push(page.next_cursor); else cursors.pop();
    load(list).catch(err => toast(err.message, 'error'));
  };
  const pager = h('nav', { class: 'pager', 'aria-label': 'Pages of gateways' },
    h('button', { type: 'button', disabled: cursors.length === 1, onclick: () => turn(-1) }, 'Previous'),
    h('span', {}, gateways.length ? `${first}–${first + gateways.length - 1} of ${page.total}` : ''),
    h('button', { type: 'button', disabled: !page.next_cursor, onclick: () => turn(1) }, 'Next'));
  replace(list, table([
    ['Name', g => h('a', { href: `#/gateways/${encodeURIComponent(g.id)}` }, g.name)],
    ['Environment', g => g.environment],
    ['Type', g => g.gateway_type],
    ['Region', g => g.region || '—'],
    ['Status', g => badge(g.status)],
    ['Health', g => badge(g.health_status)],
    ['Last check', g => when(g.last_health_check)],
    ['Response', g => ms(g.last_response_time_ms)],
  ], gateways, { caption: `${page.total} gateway${page.total === 1 ? '' : 's'}`,
    empty: 'No gateways match.', rowAttrs: g => ({ dataset: { gatewayId: g.id } }) }),
  cursors.length > 1 || page.next_cursor ? pager : null);
}

function createForm() {
  const el = form({
    label: 'New gateway', fields: CREATE_FIELDS, values: { environment: 'development', gateway_type: 'shared' },
    submit: 'Register gateway',
    onSubmit: async (f) => {
      const made = await api('POST', '/gateways', { body: values(f) });
      toast(`Gateway ${made.name} registered.`);
      location.hash = '#/gateways';
    },
    extra: [h('a', { href: '#/gateways', class: 'button' }, 'Cancel')],
  });
  return h('section', { class: 'panel', 'aria-labelledby': 'new-gw' }, h('h2', { id: 'new-gw' }, 'New gateway'), el);
}

// The gateways at a glance, kept current from the live event stream (no polling, no reloads): the count in each
// health state from the server, and tiles a page at a time (an organization may have tens of thousands).
import { events, get } from '../api.js';
import { badge, h, ms, replace, when } from '../dom.js';
import { HEALTH } from './gateway_fields.js';

const PAGE = 100;

export async function healthView(main) {
  const tiles = new Map();
  const grid = h('div', { class: 'tiles' });
  const feed = h('ol', { class: 'feed', 'aria-live': 'polite', 'aria-label': 'Transitions as they happen' });
  const state = h('p', { class: 'stream-state', role: 'status' }, 'connecting…');
  const counts = h('p', { class: 'counts', 'aria-live': 'polite' });
  const more = h('button', { type: 'button', hidden: true, onclick: () => loadPage().catch(() => {}) }, 'More gateways');
  replace(main, h('div', { class: 'title-row' }, h('h1', {}, 'Health'), state), counts, grid, more,
    h('section', { 'aria-labelledby': 'live-title' }, h('h2', { id: 'live-title' }, 'Live transitions'), feed,
      h('p', { class: 'empty', id: 'feed-empty' }, 'None since this page opened.')));

  const by = {};
  let cursor = null;
  let recount = null; // a count asked for again, at most every 2 s
  let paging = false;
  async function loadCounts() { // one short request per state: the totals, not the gateways
    const totals = await Promise.all(HEALTH.map(s => get('/gateways', { health_status: s, limit: 1 })));
    HEALTH.forEach((s, i) => { by[s] = totals[i].total; });
    tally();
  }

  async function loadPage() {
    if (paging) return; // a second click while the page comes
    paging = more.disabled = true;
    try {
      const page = await get('/gateways', { limit: PAGE, ...(cursor ? { cursor } : {}) });
      grid.append(...page.items.map(g => { const tile = h('article', { class: 'tile', dataset: { gatewayId: g.id } }); tiles.set(g.id, { g, tile }); draw(g, tile); return tile; }));
      cursor = page.next_cursor;
      more.hidden = !cursor;
    } finally {
      paging = more.disabled = false;
    }
  }

  function tally() {
    const shown = Object.entries(by).filter(([, v]) => v > 0);
    replace(counts, shown.length ? shown.map(([k, v]) => [badge(k), ` ${v}  `]) : 'No gateways yet.');
  }

  await Promise.all([loadCounts(), loadPage()]);
  const stop = events((event) => {
    const d = event.data || {};
    const entry = tiles.get(d.gateway_id);
    if (event.type === 'health.transition' && d.from_health !== d.to_health) {
      if (entry) { // counted when the counts were read: move it between them
        by[d.from_health] = Math.max(0, (by[d.from_health] || 0) - 1);
        by[d.to_health] = (by[d.to_health] || 0) + 1;
        tally();
      } else if (!recount) { // perhaps new since: ask again, once for a burst of them
        recount = setTimeout(() => { recount = null; loadCounts().catch(() => {}); }, 2000);
      }
    }
    if (!entry) return; // not on the pages shown
    if (event.type === 'health.probe') {
      Object.assign(entry.g, { health_status: d.status, status: d.gateway_status, last_health_check: d.last_check,
        last_response_time_ms: d.response_time_ms, last_outcome: d.outcome });
    } else if (event.type === 'health.transition') {
      Object.assign(entry.g, { health_status: d.to_health, status: d.to_status });
      document.getElementById('feed-empty')?.remove();
      feed.prepend(h('li', {}, when(d.occurred_at), ' ', h('strong', {}, d.gateway_name), ' ',
        badge(d.from_health), ' → ', badge(d.to_health), ` (${d.reason})`));
    } else if (event.type === 'router.circuit_open') {
      entry.g.circuit = 'open';
    }
    draw(entry.g, entry.tile);
  }, (s) => replace(state, s === 'live' ? h('span', { class: 'live' }, '● live') : 'reconnecting…'));
  const ticker = setInterval(() => { for (const { g, tile } of tiles.values()) draw(g, tile); }, 10000); // "x s ago"
  return () => { stop(); clearInterval(ticker); clearTimeout(recount); };
}

function draw(g, tile) {
  tile.className = `tile h-${g.health_status}`;
  replace(tile,
    h('h2', {}, h('a', { href: `#/gateways/${encodeURIComponent(g.id)}` }, g.name)),
    h('p', {}, g.environment, g.region ? ` · ${g.region}` : ''),
    h('p', { class: 'tile-health' }, badge(g.health_status), ' ', badge(g.status)),
    h('p', {}, ms(g.last_response_time_ms), ' · ', when(g.last_health_check)),
    g.last_outcome ? h('p', { class: 'outcome' }, g.last_outcome) : null,
    g.circuit === 'open' ? h('p', { class: 'outcome' }, 'router circuit opened') : null);
}

// Every gateway at a glance, kept current from the live event stream (no polling, no reloads).
import { all, events } from '../api.js';
import { badge, h, ms, replace, when } from '../dom.js';
import { ENVIRONMENTS } from './gateway_fields.js';

export async function healthView(main) {
  const tiles = new Map();
  const grid = h('div', { class: 'tiles' });
  const feed = h('ol', { class: 'feed', 'aria-live': 'polite', 'aria-label': 'Transitions as they happen' });
  const state = h('p', { class: 'stream-state', role: 'status' }, 'connecting…');
  const counts = h('p', { class: 'counts', 'aria-live': 'polite' });
  replace(main, h('div', { class: 'title-row' }, h('h1', {}, 'Health'), state), counts, grid,
    h('section', { 'aria-labelledby': 'live-title' }, h('h2', { id: 'live-title' }, 'Live transitions'), feed,
      h('p', { class: 'empty', id: 'feed-empty' }, 'None since this page opened.')));

  async function load() {
    const gateways = await all('/gateways');
    gateways.sort((a, b) => ENVIRONMENTS.indexOf(b.environment) - ENVIRONMENTS.indexOf(a.environment) || a.name.localeCompare(b.name));
    tiles.clear();
    replace(grid, gateways.map(g => { const tile = h('article', { class: 'tile', dataset: { gatewayId: g.id } }); tiles.set(g.id, { g, tile }); draw(g, tile); return tile; }));
    tally();
  }

  function tally() {
    const by = {};
    for (const { g } of tiles.values()) by[g.health_status] = (by[g.health_status] || 0) + 1;
    replace(counts, tiles.size ? Object.entries(by).map(([k, v]) => [badge(k), ` ${v}  `]) : 'No gateways yet.');
  }

  await load();
  const stop = events((event) => {
    const d = event.data || {};
    const entry = tiles.get(d.gateway_id);
    if (!entry) { if (d.gateway_id) load().catch(() => {}); return; }
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
    tally();
  }, (s) => replace(state, s === 'live' ? h('span', { class: 'live' }, '● live') : 'reconnecting…'));
  const ticker = setInterval(() => { for (const { g, tile } of tiles.values()) draw(g, tile); }, 10000); // "x s ago"
  return () => { stop(); clearInterval(ticker); };
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

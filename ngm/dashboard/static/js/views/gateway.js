// One gateway: live health with its history, configuration, rate limits, its API key, lifecycle actions.
import { api, events, get, session } from '../api.js';
import { legend, timeline } from '../charts.js';
import { badge, h, ms, percent, replace, section, table, toast, when } from '../dom.js';
import { form, values } from '../forms.js';
import { EDIT_FIELDS, RATE_LIMIT_FIELDS } from './gateway_fields.js';

export async function gatewayView(id, main) {
  const path = `/gateways/${encodeURIComponent(id)}`;
  const state = { window: '24h' };
  const summary = h('div', { class: 'summary', 'aria-live': 'polite' });
  const health = h('div');
  const limits = h('div');
  let gateway = await get(path);
  const me = session.me;

  async function refresh() {
    gateway = await get(path);
    renderSummary();
    await renderHealth();
  }

  function renderSummary() {
    replace(summary,
      h('dl', { class: 'facts' },
        fact('Status', badge(gateway.status)), fact('Health', badge(gateway.health_status)),
        fact('Last check', when(gateway.last_health_check)), fact('Response', ms(gateway.last_response_time_ms)),
        fact('Environment', gateway.environment), fact('Region', gateway.region || '—'),
        fact('API URL', gateway.api_url)),
      h('div', { class: 'actions' },
        me.can_check ? h('button', { type: 'button', onclick: check }, 'Check now') : null,
        me.can_change ? (gateway.status === 'inactive'
          ? h('button', { type: 'button', onclick: () => setStatus('active') }, 'Activate')
          : h('button', { type: 'button', onclick: () => setStatus('inactive') }, 'Deactivate')) : null,
        me.can_change ? h('button', { type: 'button', class: 'danger', onclick: () => confirmDelete(false) }, 'Delete…') : null));
  }

  async function check() {
    const result = await api('POST', `${path}/health`);
    toast(`Checked: ${result.status} (${result.outcome}) in ${ms(result.response_time_ms)}.`);
    await refresh();
  }

  async function setStatus(status) {
    gateway = await api('PUT', path, { body: { status } });
    toast(`Gateway ${status === 'active' ? 'activated' : 'deactivated'}.`);
    renderSummary();
  }

  function confirmDelete(force) {
    const message = h('p', { class: 'form-error', role: 'alert' });
    const dialog = h('dialog', { 'aria-labelledby': 'del-title', class: 'confirm' },
      h('h2', { id: 'del-title' }, `Delete gateway ${gateway.name}?`),
      h('p', {}, force ? 'Its deployments, active ones included, are deleted with it.' : 'This cannot be undone.'),
      message,
      h('div', { class: 'actions' },
        h('button', { type: 'button', class: 'danger', onclick: async () => {
          try {
            await api('DELETE', path, { query: force ? { force: true } : {} });
            dialog.close();
            toast(`Gateway ${gateway.name} deleted.`);
            location.hash = '#/gateways';
          } catch (err) {
            replace(message, err.message);
            if (err.status === 409 && !force) {
              message.after(h('button', { type: 'button', class: 'danger', onclick: () => { dialog.close(); confirmDelete(true); } },
                'Delete with its deployments…'));
            }
          }
        } }, force ? 'Delete with deployments' : 'Delete'),
        h('button', { type: 'button', onclick: () => dialog.close() }, 'Cancel')));
    dialog.addEventListener('close', () => dialog.remove());
    main.append(dialog);
    dialog.showModal();
  }

  async function renderHealth() {
    const [history, transitions] = await Promise.all([
      get(`${path}/health/history`, { window: state.window, limit: 500 }),
      get('/events/transitions', { gateway_id: id, limit: 20 }),
    ]);
    const windowSelect = h('select', { id: 'history-window', onchange: e => { state.window = e.target.value; renderHealth(); } },
      ['1h', '24h', '7d'].map(w => h('option', { value: w, selected: w === state.window }, w)));
    replace(health,
      h('div', { class: 'field inline' }, h('label', { for: 'history-window' }, 'Window'), windowSelect),
      h('dl', { class: 'facts' },
        fact('Uptime', h('span', { id: 'uptime' }, percent(history.uptime_percent, 2))),
        fact('Probes', `${history.successes} of ${history.probes} succeeded`),
        fact('p50', ms(history.latency_ms.p50)), fact('p99', ms(history.latency_ms.p99))),
      timeline(history.items), legend(),
      h('h3', {}, 'Recent transitions and alerts'),
      table([
        ['When', t => when(t.occurred_at)],
        ['Health', t => [badge(t.from_health), ' → ', badge(t.to_health)]],
        ['Status', t => `${t.from_status} → ${t.to_status}`],
        ['Reason', t => t.reason],
        ['Alerts', t => t.deliveries.length ? t.deliveries.map(d => h('span', { class: `badge badge-${d.status}` },
          `${d.status}${d.last_status_code ? ` (${d.last_status_code})` : ''}`)) : 'none'],
      ], transitions.items, { empty: 'No transitions recorded.', caption: 'Newest first' }));
  }

  async function renderLimits() {
    const usage = await get(`${path}/rate-limits`);
    const scopes = [['gateway', usage.gateway], ...usage.agents.map(a => [`agent ${a.agent_id}`, a]),
      ...usage.users.map(u => [`user ${u.key_name || u.key_id}`, u])];
    replace(limits,
      form({ label: 'Rate limits', fields: RATE_LIMIT_FIELDS, values: gateway, readonly: !me.can_change, submit: 'Save limits',
        onSubmit: async (f) => {
          const changed = values(f, { changedOnly: true });
          if (!Object.keys(changed).length) return toast('Nothing changed.');
          await api('PUT', `${path}/rate-limits`, { body: changed });
          gateway = await get(path);
          toast('Rate limits saved; every instance applies them within a second.');
          await renderLimits();
        } }),
      table([
        ['Scope', ([name]) => name],
        ['Limit', ([, s]) => s.limit || 'unlimited'],
        ['Used', ([, s]) => s.used ?? '—'],
        ['Remaining', ([, s]) => s.remaining ?? '—'],
      ], scopes, { caption: `Current usage (window ${usage.window_seconds} s, ${usage.algorithm})` }),
      h('p', {}, 'Rejected: ', Object.entries(usage.rejected || {}).map(([k, v]) => `${k} ${v}`).join(', ') || 'none'));
  }

  function keyPanel() {
    const state = gateway.api_key_set ? `set, ends in …${gateway.api_key_last4 || ''}` : 'not set';
    return h('div', {},
      h('p', {}, 'Gateway API key: ', h('strong', { id: 'key-state' }, state)),
      me.can_change ? form({ label: 'Rotate API key', submit: 'Replace key',
        fields: [{ name: 'api_key', label: 'New gateway API key', type: 'password', help: 'Write-only; the old key stops being sent at once.' }],
        onSubmit: async (f) => {
          const { api_key } = values(f);
          if (!api_key) throw { message: 'Enter the new key.', details: [{ field: 'api_key', message: 'is required' }] };
          gateway = await api('PUT', path, { body: { api_key } });
          toast('Gateway API key replaced.');
          f.reset();
          replace(document.getElementById('key-state'), `set, ends in …${gateway.api_key_last4 || ''}`);
        } }) : null);
  }

  const config = form({ label: 'Configuration', fields: EDIT_FIELDS, values: gateway, readonly: !me.can_change, submit: 'Save changes',
    onSubmit: async (f) => {
      const changed = values(f, { changedOnly: true });
      if (!Object.keys(changed).length) return toast('Nothing changed.');
      gateway = await api('PUT', path, { body: changed });
      f.original = gateway;
      toast('Gateway saved.');
      renderSummary();
      replace(document.getElementById('gateway-title'), gateway.name);
    } });

  renderSummary();
  replace(main,
    h('h1', { id: 'gateway-title' }, gateway.name),
    gateway.description ? h('p', { class: 'lead' }, gateway.description) : null,
    summary,
    section('Health', health),
    section('Configuration', config),
    section('Rate limits', limits),
    section('API key', keyPanel()));
  await Promise.all([renderHealth(), renderLimits()]);

  let pending = null; // live: this gateway's probes and transitions re-read the view, at most once a second
  const stop = events((event) => {
    if (event.data && event.data.gateway_id === id && !pending) {
      pending = setTimeout(() => { pending = null; refresh().catch(() => {}); }, 1000);
    }
  });
  return () => { stop(); clearTimeout(pending); };
}

function fact(label, value) {
  return h('div', {}, h('dt', {}, label), h('dd', {}, value));
}

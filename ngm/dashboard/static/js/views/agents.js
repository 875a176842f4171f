// Agents: where each is deployed, its weights and routing policy, the traffic it gets, and why a request
// would land where it lands.
import { all, api, get, session } from '../api.js';
import { splitChart } from '../charts.js';
import { badge, h, ms, percent, replace, section, table, toast } from '../dom.js';
import { form, values } from '../forms.js';
import { ENVIRONMENTS } from './gateway_fields.js';

const agentHref = (agent, env) => `#/agents/${encodeURIComponent(agent)}/${encodeURIComponent(env)}`;

export async function agentsView(main) {
  const [deployments, gateways, policies] = await Promise.all([all('/deployments'), all('/gateways'), get('/routing/policies')]);
  const envOf = Object.fromEntries(gateways.map(g => [g.id, g.environment]));
  const rows = new Map();
  const row = (agent, env) => {
    const key = `${agent}\u0000${env}`;
    if (!rows.has(key)) rows.set(key, { agent, env, active: 0, total: 0, versions: new Set(), strategy: 'weighted (default)' });
    return rows.get(key);
  };
  for (const d of deployments) {
    const r = row(d.agent_id, envOf[d.gateway_id] || '?');
    r.total += 1;
    if (d.status === 'active') r.active += 1;
    r.versions.add(d.agent_version);
  }
  for (const p of policies.items) row(p.agent_id, p.environment).strategy = p.strategy + (p.sticky ? ', sticky' : '');
  const list = [...rows.values()].sort((a, b) => a.agent.localeCompare(b.agent) || a.env.localeCompare(b.env));
  const open = form({ label: 'Open an agent', submit: 'Open',
    fields: [{ name: 'agent_id', label: 'Agent id' },
      { name: 'environment', label: 'Environment', type: 'select', options: ENVIRONMENTS }],
    values: { environment: 'production' },
    onSubmit: async (f) => {
      const { agent_id, environment } = values(f);
      if (!agent_id) throw { message: 'Enter an agent id.', details: [{ field: 'agent_id', message: 'is required' }] };
      location.hash = agentHref(agent_id, environment);
    } });
  replace(main, h('h1', {}, 'Agents & traffic'),
    table([
      ['Agent', r => h('a', { href: agentHref(r.agent, r.env) }, r.agent)],
      ['Environment', r => r.env],
      ['Deployments', r => `${r.active} active of ${r.total}`],
      ['Versions', r => [...r.versions].join(', ') || '—'],
      ['Strategy', r => r.strategy],
    ], list, { empty: 'No agent is deployed yet.' }),
    section('Open an agent', open));
}

export async function agentView(agent, env, main) {
  const me = session.me;
  const gateways = await all('/gateways', { environment: env });
  const byId = Object.fromEntries(gateways.map(g => [g.id, g]));
  const deploymentsBox = h('div');
  const trafficBox = h('div', { 'aria-live': 'off' });
  const explainBox = h('div', { 'aria-live': 'polite' });
  const policyBox = h('div');
  let trafficWindow = '5m';
  const trafficTotal = h('span', { class: 'help' });
  const trafficControls = h('div', { class: 'field inline' }, h('label', { for: 'traffic-window' }, 'Window'),
    h('select', { id: 'traffic-window', onchange: e => { trafficWindow = e.target.value; renderTraffic(); } },
      ['1m', '5m', '15m'].map(w => h('option', { value: w, selected: w === trafficWindow }, w))), trafficTotal);

  async function renderDeployments() {
    const deployments = (await all('/deployments', { agent_id: agent })).filter(d => byId[d.gateway_id]);
    const inputs = {};
    const shares = {};
    const recompute = () => {
      const weight = d => (d.status === 'active' ? Number(inputs[d.id] ? inputs[d.id].value : d.weight) || 0 : 0);
      const total = deployments.reduce((sum, d) => sum + weight(d), 0);
      for (const d of deployments) replace(shares[d.id], total ? percent((100 * weight(d)) / total) : '—');
    };
    for (const d of deployments) {
      shares[d.id] = h('output', { dataset: { shareFor: d.id }, for: `w-${d.id}` });
      if (me.can_change) {
        inputs[d.id] = h('input', { id: `w-${d.id}`, type: 'text', inputmode: 'numeric', value: String(d.weight), size: 5,
          'aria-label': `Weight of ${d.agent_version} on ${byId[d.gateway_id].name}`, dataset: { weightFor: d.id }, oninput: recompute });
      }
    }
    const error = h('p', { class: 'form-error', role: 'alert' });
    const act = (d, verb) => async () => {
      try {
        if (verb === 'delete') await api('DELETE', `/deployments/${d.id}`);
        else await api('POST', `/deployments/${d.id}/${verb}`, { body: {} });
        toast(`Deployment ${verb === 'drain' ? 'draining' : `${verb}d`}.`);
        await renderDeployments();
      } catch (err) { replace(error, err.message); }
    };
    const saveWeights = async () => {
      replace(error);
      try {
        const changed = deployments.filter(d => inputs[d.id].value.trim() !== String(d.weight));
        for (const d of changed) {
          const raw = inputs[d.id].value.trim();
          await api('PUT', `/deployments/${d.id}`, { body: { weight: /^\d+$/.test(raw) ? Number(raw) : raw } });
        }
        toast(changed.length ? 'Weights saved; routing follows at once.' : 'Nothing changed.');
        await renderDeployments();
      } catch (err) {
        replace(error, err.details.length ? `weight: ${err.details[0].message}` : err.message);
      }
    };
    replace(deploymentsBox, error, table([
      ['Gateway', d => h('a', { href: `#/gateways/${encodeURIComponent(d.gateway_id)}` }, byId[d.gateway_id].name)],
      ['Health', d => badge(byId[d.gateway_id].health_status)],
      ['Version', d => d.agent_version],
      ['Status', d => [badge(d.status), d.status === 'draining' ? ` (${d.in_flight} in flight)` : '']],
      ['Weight', d => inputs[d.id] || String(d.weight)],
      ['Share', d => shares[d.id]],
      ...(me.can_change ? [['Actions', d => h('div', { class: 'row-actions' },
        d.status === 'active' ? h('button', { type: 'button', onclick: act(d, 'drain') }, 'Drain') : null,
        d.status !== 'inactive' ? h('button', { type: 'button', onclick: act(d, 'deactivate') }, 'Deactivate')
          : h('button', { type: 'button', onclick: act(d, 'activate') }, 'Activate'),
        h('button', { type: 'button', class: 'danger', onclick: act(d, 'delete') }, 'Delete'))]] : []),
    ], deployments, { empty: `${agent} has no deployment in ${env}.`, rowAttrs: d => ({ dataset: { deploymentId: d.id } }) }),
    me.can_change && deployments.length ? h('div', { class: 'actions' }, h('button', { type: 'button', class: 'primary', onclick: saveWeights }, 'Save weights')) : null);
    recompute();
  }

  function assignForm() {
    return form({ label: 'Assign a version', submit: 'Assign',
      fields: [
        { name: 'gateway_id', label: 'Gateway', type: 'select', options: gateways.map(g => g.id), optional: true },
        { name: 'agent_version', label: 'Version', placeholder: 'v2' },
        { name: 'weight', label: 'Weight', type: 'number' },
        { name: 'workspace_id', label: 'Workspace (optional)' },
      ],
      values: { weight: 100 },
      onSubmit: async (f) => {
        await api('POST', '/deployments', { body: { agent_id: agent, ...values(f) } });
        toast('Deployment assigned.');
        f.reset();
        await renderDeployments();
      } });
  }

  async function renderPolicy() {
    const policy = await get('/routing/policy', { agent_id: agent, environment: env });
    replace(policyBox, form({ label: 'Routing policy', readonly: !me.can_change, submit: 'Save policy', values: policy,
      fields: [
        { name: 'strategy', label: 'Strategy', type: 'select', options: ['weighted', 'round_robin', 'least_connections', 'geographic'] },
        { name: 'sticky', label: 'Sticky: keep a user on one deployment', type: 'checkbox' },
        { name: 'sticky_header', label: 'Sticky key header', help: "Without it, the caller's API key id is the key." },
        { name: 'fallback', label: 'Geographic fallback', type: 'select', options: ['any_region', 'none'] },
        { name: 'fallback_regions', label: 'Fallback regions, in order', type: 'list' },
      ],
      onSubmit: async (f) => {
        await api('PUT', '/routing/policies', { body: { agent_id: agent, environment: env, ...values(f) } });
        toast('Routing policy saved.');
        await renderPolicy();
      } }), policy.default ? h('p', { class: 'help' }, 'No policy set: the default applies.') : null);
  }

  async function renderTraffic() {
    const t = await get(`/agents/${encodeURIComponent(agent)}/traffic`, { environment: env, window: trafficWindow });
    replace(trafficTotal, ` ${t.requests} requests routed in the window · updates every 2 s`);
    replace(trafficBox,
      t.deployments.length ? splitChart(t.deployments.map(d => ({ label: `${d.gateway_name} ${d.agent_version}`,
        configured: d.configured_share_percent, observed: d.observed_share_percent }))) : null,
      table([
        ['Deployment', d => `${d.gateway_name} ${d.agent_version}`],
        ['Configured', d => percent(d.configured_share_percent)],
        ['Observed', d => h('span', { dataset: { observedFor: d.deployment_id } }, percent(d.observed_share_percent))],
        ['Requests', d => d.requests],
        ['Errors', d => `${d.errors} (${percent(100 * d.error_rate)})`],
        ['p50', d => ms(d.latency_ms.p50)],
        ['p99', d => ms(d.latency_ms.p99)],
        ['Rate-limited', d => d.rate_limited],
        ['In flight', d => d.in_flight],
      ], t.deployments, { empty: 'No deployments, so no traffic.' }));
  }

  const explain = form({ label: 'Why this gateway', submit: 'Explain',
    fields: [{ name: 'region', label: "Caller's region (optional)" }, { name: 'routing_key', label: 'Routing key (optional)' }],
    onSubmit: async (f) => {
      const route = await api('POST', '/route', { body: { agent_id: agent, environment: env, ...values(f) } });
      const cols = [
        ['Gateway', c => c.gateway_name], ['Version', c => c.agent_version], ['Weight', c => c.weight],
        ['Share', c => percent(c.share_percent)], ['Region', c => c.region || '—'], ['Health', c => badge(c.health_status)],
        ['In flight', c => c.in_flight], ['Circuit', c => c.circuit],
      ];
      replace(explainBox,
        h('p', { class: 'verdict' }, route.deployment
          ? ['Served by ', h('strong', {}, route.deployment.gateway_name), ` (${route.deployment.agent_version}) — `, route.reason]
          : [h('strong', {}, 'No gateway: '), route.reason]),
        h('p', {}, `Strategy ${route.strategy}`, route.region_used ? ` · region ${route.region_used}` : '',
          route.sticky_key_source ? ` · sticky key from ${route.sticky_key_source}` : ''),
        table(cols, route.candidates, { caption: 'Candidates', empty: 'No candidates.' }),
        table([...cols, ['Skipped because', c => c.reason]], route.skipped, { caption: 'Skipped', empty: 'Nothing skipped.' }));
    } });

  replace(main, h('h1', {}, agent, h('span', { class: 'sub' }, ` in ${env}`)),
    section('Deployments', deploymentsBox),
    me.can_change ? section('Assign a version', assignForm()) : null,
    section('Routing policy', policyBox),
    section('Traffic', trafficControls, trafficBox),
    section('Why this gateway', explain, explainBox));
  // the gateway select shows names, submits ids
  for (const option of main.querySelectorAll('select[name=gateway_id] option')) if (byId[option.value]) option.textContent = `${byId[option.value].name} (${byId[option.value].region || 'no region'})`;
  await Promise.all([renderDeployments(), renderPolicy(), renderTraffic()]);
  const timer = setInterval(() => renderTraffic().catch(() => {}), 2000);
  return () => clearInterval(timer);
}

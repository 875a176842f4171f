// The dashboard shell: sign-in, navigation, and a hash router. Each view renders into <main> and may
// return a function that stops what it started (timers, the event stream) when the operator leaves it.
import { api, session } from './api.js';
import { h, replace } from './dom.js';
import { agentsView, agentView } from './views/agents.js';
import { gatewayView } from './views/gateway.js';
import { gatewaysView } from './views/gateways.js';
import { healthView } from './views/health.js';

const routes = [
  [/^#\/gateways\/new$/, (m, main) => gatewaysView({ creating: true }, main)],
  [/^#\/gateways\/([^/]+)$/, (m, main) => gatewayView(decodeURIComponent(m[1]), main)],
  [/^#\/gateways$/, (m, main) => gatewaysView({}, main)],
  [/^#\/health$/, (m, main) => healthView(main)],
  [/^#\/agents\/([^/]+)\/([^/]+)$/, (m, main) => agentView(decodeURIComponent(m[1]), decodeURIComponent(m[2]), main)],
  [/^#\/agents$/, (m, main) => agentsView(main)],
];

const main = document.getElementById('main');
const top = document.getElementById('top');
let leave = null;
let navigation = 0;  // show()'s calls: one that a newer navigation overtook while it waited must not finish

async function show() {
  const mine = ++navigation;
  if (leave) { leave(); leave = null; }
  delete main.dataset.shown;
  const hash = location.hash || '#/gateways';
  if (!session.key) return signIn(hash.startsWith('#/signin?expired') ? 'Your key is no longer accepted; sign in again.' : '');
  if (!session.me) {
    try { session.me = await api('GET', '/keys/me'); } catch (err) { return mine === navigation && signIn(err.message); }
    if (mine !== navigation) return;
  }
  header();
  const path = hash.split('?')[0];
  const route = routes.find(([re]) => re.test(path));
  if (!route) { location.hash = '#/gateways'; return; }
  // The view renders into a container of its own: one the operator has already left (its data came late)
  // writes into a container no longer shown, never over the view that replaced it.
  const view = h('div', { class: 'view' }, h('p', { class: 'loading' }, 'Loading…'));
  main.replaceChildren(view);
  let stop = null;
  let failure = null;
  try {
    stop = await route[1](path.match(route[0]), view) || null;
  } catch (err) {
    failure = err;
  }
  if (mine !== navigation) {  // overtaken: stop what this view started; the newer one owns the page
    if (stop) stop();
    return;
  }
  leave = stop;
  if (failure) replace(view, h('p', { class: 'form-error', role: 'alert' }, failure.message));
  for (const link of top.querySelectorAll('nav a')) {
    link.toggleAttribute('aria-current', path.startsWith(link.getAttribute('href')));
  }
  main.focus({ preventScroll: true });
  main.dataset.shown = path;  // the view is complete and has the focus (what the browser tests wait for)
}

function header() {
  const me = session.me;
  replace(top, h('div', { class: 'bar' },
    h('a', { href: '#/gateways', class: 'brand' }, 'ngm'),
    h('nav', { 'aria-label': 'Main' },
      h('a', { href: '#/gateways' }, 'Gateways'),
      h('a', { href: '#/health' }, 'Health'),
      h('a', { href: '#/agents' }, 'Agents & traffic')),
    h('p', { class: 'who', dataset: { role: me.role } }, `${me.organization_id} · ${me.name} (${me.role.replace('org_', '')})`,
      me.can_change ? null : h('span', { class: 'readonly-note' }, ' · read-only')),
    h('button', { type: 'button', class: 'link', onclick: () => { session.signOut(); top.replaceChildren(); location.hash = '#/signin'; show(); } }, 'Sign out')));
}

function signIn(message) {
  top.replaceChildren();
  const input = h('input', { id: 'signin-key', type: 'password', name: 'key', autocomplete: 'off', spellcheck: 'false',
    'aria-describedby': 'signin-help signin-error' });
  const error = h('p', { id: 'signin-error', class: 'form-error', role: 'alert' }, message);
  replace(main, h('section', { class: 'signin', 'aria-labelledby': 'signin-title' },
    h('h1', { id: 'signin-title' }, 'Nexus Gateway Manager'),
    h('form', { novalidate: true, onsubmit: async (event) => {
      event.preventDefault();
      const key = input.value.trim();
      if (!key) { replace(error, 'Enter an API key.'); input.focus(); return; }
      try {
        const me = await api('GET', '/keys/me', { key });
        session.signIn(key, me);
        input.value = '';
        if (location.hash.startsWith('#/signin') || !location.hash) location.hash = '#/gateways';
        else show();
      } catch (err) {
        replace(error, err.status === 401 ? 'That key was not accepted: it is unknown or revoked.' : err.message);
        input.focus();
      }
    } },
    h('label', { for: 'signin-key' }, 'API key'), input,
    h('p', { id: 'signin-help', class: 'help' }, 'Kept for this browser tab only and sent as a header. Create one with ',
      h('code', {}, 'ngm keys create --org ORG --role org_admin'), '.'),
    error,
    h('div', { class: 'actions' }, h('button', { type: 'submit', class: 'primary' }, 'Sign in')))));
  input.focus();
}

window.addEventListener('hashchange', show);
show();

// The REST API with the signed-in key. The key lives in sessionStorage (gone when the tab closes) and
// travels only in the X-API-Key header: never in a URL, so never in a server's access log or history.

const KEY = 'ngm.key';

export const session = {
  get key() { return sessionStorage.getItem(KEY); },
  me: null, // {organization_id, key_id, name, role, can_change, can_check}
  signIn(key, me) { sessionStorage.setItem(KEY, key); this.me = me; },
  signOut() { sessionStorage.removeItem(KEY); this.me = null; },
};

export class ApiError extends Error {
  constructor(status, body) {
    const error = (body && body.error) || {};
    super(error.message || `the server answered ${status}`);
    this.status = status;
    this.code = error.code || 'http_error';
    this.details = Array.isArray(error.details) ? error.details : [];
  }
}

function url(path, query) {
  const u = new URL(`/api/v1${path}`, location.origin);
  for (const [name, value] of Object.entries(query || {})) {
    if (value !== undefined && value !== null && value !== '') u.searchParams.set(name, value);
  }
  return u;
}

export async function api(method, path, { body, query, key } = {}) {
  const headers = { 'X-API-Key': key || session.key || '' };
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  const res = await fetch(url(path, query), {
    method, headers, cache: 'no-store', body: body === undefined ? undefined : JSON.stringify(body),
  });
  if (res.status === 401 && !key) {
    session.signOut();
    location.hash = '#/signin?expired=1';
  }
  if (res.status === 204) return null;
  const data = await res.json().catch(() => null);
  if (!res.ok) throw new ApiError(res.status, data);
  return data;
}

export const get = (path, query) => api('GET', path, { query });

// Every page of a paginated list (limit is at most 500 on the server).
export async function all(path, query = {}) {
  const items = [];
  for (let offset = 0; ; offset += 500) {
    const page = await get(path, { ...query, limit: 500, offset });
    items.push(...page.items);
    if (items.length >= page.total || !page.items.length) return items;
  }
}

// Server-Sent Events from GET /api/v1/events. EventSource cannot send a header, so this reads the
// stream with fetch and parses it; it reconnects after a drop (the views catch up with the next probe).
export function events(onEvent, onState = () => {}) {
  const controller = new AbortController();
  let delay = 500;
  (async () => {
    while (!controller.signal.aborted) {
      try {
        const headers = { 'X-API-Key': session.key || '', Accept: 'text/event-stream' };
        const res = await fetch(url('/events'), { headers, signal: controller.signal, cache: 'no-store' });
        if (!res.ok) throw new Error(`events: ${res.status}`);
        onState('live');
        delay = 500;
        const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
        let buffer = '';
        for (;;) {
          const { value, done } = await reader.read();
          if (done) break;
          buffer += value;
          let cut;
          while ((cut = buffer.indexOf('\n\n')) >= 0) {
            const block = buffer.slice(0, cut);
            buffer = buffer.slice(cut + 2);
            const data = block.split('\n').filter(l => l.startsWith('data:')).map(l => l.slice(5).trimStart());
            if (data.length) onEvent(JSON.parse(data.join('\n')));
          }
        }
      } catch (err) {
        if (controller.signal.aborted) return;
      }
      onState('reconnecting');
      await new Promise(r => setTimeout(r, delay));
      delay = Math.min(delay * 2, 10000);
    }
  })();
  return () => controller.abort();
}

// Forms described by field lists: labelled inputs, values read back typed, and the server's 422 details
// shown next to the fields they name. Forms are `novalidate`: the server is the one judge of input, so
// the browser never shows a different message than the API would give a script.
import { h, replace } from './dom.js';

let formSeq = 0;

export function form({ fields, values = {}, submit, onSubmit, readonly = false, extra = [], label }) {
  const id = `f${++formSeq}`;
  const el = h('form', { novalidate: true, 'aria-label': label, dataset: { form: id } });
  el.fields = fields;
  el.original = values;
  el.formError = h('p', { class: 'form-error', role: 'alert' });
  el.append(el.formError);
  for (const group of groups(fields)) {
    const box = group.title ? h('fieldset', {}, h('legend', {}, group.title)) : h('div', { class: 'fields' });
    for (const f of group.fields) box.append(field(id, f, values[f.name], readonly));
    el.append(box);
  }
  if (!readonly && submit) el.append(h('div', { class: 'actions' }, h('button', { type: 'submit', class: 'primary' }, submit), extra));
  el.addEventListener('submit', async (event) => {
    event.preventDefault();
    clearErrors(el);
    const button = el.querySelector('button[type=submit]');
    if (button) button.disabled = true;
    try {
      await onSubmit(el);
    } catch (err) {
      showErrors(el, err);
    } finally {
      if (button) button.disabled = false;
    }
  });
  return el;
}

function groups(fields) {
  const out = [];
  for (const f of fields) {
    if (!out.length || (f.group && f.group !== out[out.length - 1].title)) out.push({ title: f.group, fields: [] });
    out[out.length - 1].fields.push(f);
  }
  return out;
}

function field(formId, f, value, readonly) {
  const inputId = `${formId}-${f.name}`;
  const errorId = `${inputId}-error`;
  const helpId = f.help ? `${inputId}-help` : null;
  const common = { id: inputId, name: f.name, 'aria-describedby': [helpId, errorId].filter(Boolean).join(' '),
    disabled: readonly, dataset: { field: f.name } };
  let input;
  if (f.type === 'select') {
    input = h('select', common, (f.optional ? [['', '—']] : []).concat(f.options.map(o => [o, o]))
      .map(([v, text]) => h('option', { value: v, selected: String(value ?? '') === v }, text)));
  } else if (f.type === 'checkbox') {
    input = h('input', { ...common, type: 'checkbox', checked: Boolean(value) });
  } else if (f.type === 'textarea') {
    input = h('textarea', { ...common, rows: 2 }, value ?? '');
  } else {
    const shown = f.type === 'list' ? (value || []).join(', ') : (f.type === 'password' ? '' : value ?? '');
    input = h('input', {
      ...common, type: f.type === 'password' ? 'password' : 'text', value: shown,
      inputmode: f.type === 'number' ? 'decimal' : undefined, autocomplete: f.type === 'password' ? 'new-password' : 'off',
      placeholder: f.placeholder, spellcheck: 'false',
    });
  }
  return h('div', { class: `field field-${f.type || 'text'}` },
    h('label', { for: inputId }, f.label),
    input,
    f.help ? h('p', { class: 'help', id: helpId }, f.help) : null,
    h('p', { class: 'field-error', id: errorId, dataset: { errorFor: f.name } }));
}

function readOne(el, f) {
  const input = el.querySelector(`[data-field="${f.name}"]`);
  if (f.type === 'checkbox') return input.checked;
  const raw = input.value.trim();
  if (f.type === 'list') return raw ? raw.split(',').map(x => x.trim()).filter(Boolean) : [];
  if (raw === '') return null;
  if (f.type === 'number') return Number.isFinite(Number(raw)) ? Number(raw) : raw; // the server names a bad one
  return raw;
}

// {name: value} of the fields that have a value (create) or that differ from the original (update).
export function values(el, { changedOnly = false } = {}) {
  const out = {};
  for (const f of el.fields) {
    const value = readOne(el, f);
    if (changedOnly) {
      if (f.type === 'password' ? value === null : same(value, el.original[f.name])) continue;
    } else if (value === null || (f.type === 'list' && !value.length)) continue;
    out[f.name] = value;
  }
  return out;
}

function same(a, b) {
  return JSON.stringify(a ?? null) === JSON.stringify(b ?? null);
}

export function clearErrors(el) {
  el.formError.replaceChildren();
  for (const p of el.querySelectorAll('.field-error')) p.replaceChildren();
  for (const input of el.querySelectorAll('[aria-invalid]')) input.removeAttribute('aria-invalid');
}

export function showErrors(el, err) {
  const loose = [];
  for (const { field, message } of err.details || []) {
    const name = String(field || '').split('.')[0];
    const slot = el.querySelector(`[data-error-for="${name}"]`);
    if (slot) {
      slot.append(h('span', {}, message), ' ');
      el.querySelector(`[data-field="${name}"]`).setAttribute('aria-invalid', 'true');
    } else {
      loose.push(`${field}: ${message}`);
    }
  }
  const placed = (err.details || []).length > loose.length;
  const text = placed && !loose.length ? 'Please correct the fields marked below.' : [err.message, ...loose].join(' · ');
  replace(el.formError, text);
  const first = el.querySelector('[aria-invalid="true"]');
  if (first) first.focus();
}

// Two small SVG charts, drawn by hand: a library would be the dashboard's only dependency and its
// largest file. Each chart carries a text summary for screen readers; the tables beside it hold the figures.
import { h, s } from './dom.js';

// Configured share next to observed share, one pair of bars per deployment.
export function splitChart(rows) {
  const barH = 14, gap = 10, labelW = 180, width = 640, scale = (width - labelW - 60) / 100;
  const height = rows.length * (barH * 2 + gap) + 24;
  const svg = s('svg', { viewBox: `0 0 ${width} ${height}`, class: 'chart split', role: 'img',
    'aria-label': rows.map(r => `${r.label}: configured ${r.configured.toFixed(1)}%, observed ${r.observed.toFixed(1)}%`).join('; ') });
  rows.forEach((r, i) => {
    const y = i * (barH * 2 + gap);
    svg.append(s('text', { x: 0, y: y + barH + 4, class: 'label' }, r.label));
    [['configured', r.configured, 0], ['observed', r.observed, barH]].forEach(([kind, value, dy]) => {
      svg.append(s('rect', { x: labelW, y: y + dy, width: Math.max(1, value * scale), height: barH - 2, class: `bar ${kind}` }));
      svg.append(s('text', { x: labelW + value * scale + 6, y: y + dy + barH - 4, class: 'value' }, `${value.toFixed(1)}%`));
    });
  });
  const ly = height - 8;
  svg.append(s('rect', { x: labelW, y: ly - 9, width: 10, height: 10, class: 'bar configured' }),
    s('text', { x: labelW + 14, y: ly, class: 'value' }, 'configured'),
    s('rect', { x: labelW + 100, y: ly - 9, width: 10, height: 10, class: 'bar observed' }),
    s('text', { x: labelW + 114, y: ly, class: 'value' }, 'observed'));
  return svg;
}

// Probe latency over time as a line, with each probe's outcome as a coloured strip beneath it.
export function timeline(items) {
  const probes = [...items].reverse(); // oldest first
  const width = 640, plotH = 120, stripH = 12, pad = 30;
  const svg = s('svg', { viewBox: `0 0 ${width} ${plotH + stripH + 26}`, class: 'chart timeline', role: 'img' });
  if (!probes.length) {
    svg.setAttribute('aria-label', 'no probes in this window');
    svg.append(s('text', { x: pad, y: 60, class: 'value' }, 'No probes in this window yet.'));
    return svg;
  }
  const t0 = Date.parse(probes[0].checked_at), t1 = Date.parse(probes[probes.length - 1].checked_at);
  const span = Math.max(1, t1 - t0);
  const maxMs = Math.max(1, ...probes.map(p => p.response_time_ms || 0));
  const x = p => pad + ((Date.parse(p.checked_at) - t0) / span) * (width - pad - 4);
  const y = p => plotH - ((p.response_time_ms || 0) / maxMs) * (plotH - 10);
  svg.append(s('line', { x1: pad, y1: plotH, x2: width - 4, y2: plotH, class: 'axis' }));
  svg.append(s('text', { x: 0, y: 12, class: 'value' }, `${Math.round(maxMs)} ms`));
  svg.append(s('text', { x: 0, y: plotH, class: 'value' }, '0'));
  svg.append(s('polyline', { points: probes.map(p => `${x(p).toFixed(1)},${y(p).toFixed(1)}`).join(' '), class: 'latency' }));
  const cell = Math.max(2, (width - pad - 4) / probes.length);
  probes.forEach(p => svg.append(s('rect', { x: x(p) - cell / 2, y: plotH + 6, width: cell, height: stripH,
    class: `strip ${p.ok ? 'ok' : 'fail'} h-${p.health_status}` }, s('title', {}, `${p.checked_at}: ${p.outcome}`))));
  svg.append(s('text', { x: pad, y: plotH + stripH + 24, class: 'value' }, new Date(t0).toLocaleTimeString()),
    s('text', { x: width - 4, y: plotH + stripH + 24, class: 'value end' }, new Date(t1).toLocaleTimeString()));
  const failed = probes.filter(p => !p.ok).length;
  svg.setAttribute('aria-label', `${probes.length} probes, ${failed} failed, latency up to ${Math.round(maxMs)} ms`);
  return svg;
}

export function legend() {
  return h('p', { class: 'legend' }, h('span', { class: 'key ok' }), ' probe succeeded ',
    h('span', { class: 'key fail' }), ' probe failed');
}

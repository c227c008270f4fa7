// Small SVG charts drawn by hand (the page loads nothing from elsewhere):
// horizontal bars, vertical columns, and live line charts.

import { h, svg, formatNumber } from './dom.js';

export const PALETTE = ['#ff3d7f', '#2ee6d6', '#ffc857', '#8c7dff', '#5cd65c', '#ff8c42', '#4dabf7'];

// rows: [{label, value}]; bars scaled to `max` (default: the largest value).
export function barChart(rows, { max, format = formatNumber, className = '', color } = {}) {
  const top = max ?? Math.max(1e-9, ...rows.map((r) => Math.abs(r.value)));
  const rowH = 26;
  const width = 320;
  const labelW = 128;
  const valueW = 52;
  const barW = width - labelW - valueW - 8;
  const chart = svg('svg', { class: `chart bar-chart ${className}`, viewBox: `0 0 ${width} ${rows.length * rowH}`,
    role: 'img', 'aria-label': rows.map((r) => `${r.label} ${format(r.value)}`).join(', ') });
  rows.forEach((row, i) => {
    const y = i * rowH;
    const frac = Math.max(0, Math.min(1, Math.abs(row.value) / top));
    chart.append(
      svg('text', { x: labelW - 8, y: y + rowH / 2 + 4, 'text-anchor': 'end', class: 'chart-label',
        text: truncate(row.label, 20) }),
      svg('rect', { x: labelW, y: y + 5, width: barW, height: rowH - 10, rx: 4, class: 'chart-track' }),
      svg('rect', { x: labelW, y: y + 5, width: Math.max(2, frac * barW), height: rowH - 10, rx: 4,
        fill: color || PALETTE[i % PALETTE.length], class: 'chart-bar' }),
      svg('text', { x: width - 2, y: y + rowH / 2 + 4, 'text-anchor': 'end', class: 'chart-value',
        text: format(row.value) }));
  });
  return chart;
}

// rows: [{label, value}] drawn as columns, e.g. hours of the day.
export function columnChart(rows, { format = formatNumber, className = '', highlight } = {}) {
  const width = 320;
  const height = 140;
  const pad = 18;
  const top = Math.max(1e-9, ...rows.map((r) => r.value));
  const colW = (width - 8) / Math.max(1, rows.length);
  const chart = svg('svg', { class: `chart column-chart ${className}`, viewBox: `0 0 ${width} ${height}`,
    role: 'img', 'aria-label': rows.map((r) => `${r.label}: ${format(r.value)}`).join(', ') });
  const every = Math.ceil(rows.length / 8);
  rows.forEach((row, i) => {
    const barH = Math.max(1, (row.value / top) * (height - 2 * pad));
    const x = 4 + i * colW;
    chart.append(svg('rect', { x: x + 1, y: height - pad - barH, width: Math.max(1, colW - 2), height: barH,
      rx: 2, fill: highlight && highlight(row) ? PALETTE[2] : PALETTE[1], class: 'chart-bar' }));
    if (i % every === 0) {
      chart.append(svg('text', { x: x + colW / 2, y: height - 4, 'text-anchor': 'middle',
        class: 'chart-axis', text: truncate(row.label, 6) }));
    }
  });
  return chart;
}

// A line chart that is redrawn as points arrive. series: [{name, points: [[t, v], ...]}].
export class LineChart {
  constructor({ title, unit = '', format = formatNumber, height = 150 }) {
    this.format = format;
    this.unit = unit;
    this.height = height;
    this.width = 520;
    this.el = h('figure', { class: 'line-chart' },
      this.captionEl = h('figcaption', { text: title }),
      this.svgEl = svg('svg', { class: 'chart', viewBox: `0 0 ${this.width} ${height}`, role: 'img',
        'aria-label': title }),
      this.legend = h('div', { class: 'chart-legend' }));
  }

  caption(text) {
    this.captionEl.textContent = text;
  }

  draw(series) {
    const { width, height } = this;
    const padL = 46;
    const padB = 16;
    const padT = 8;
    const all = series.flatMap((s) => s.points);
    this.svgEl.replaceChildren();
    this.legend.replaceChildren();
    if (!all.length) {
      this.svgEl.append(svg('text', { x: width / 2, y: height / 2, 'text-anchor': 'middle',
        class: 'chart-label', text: 'waiting for data' }));
      return;
    }
    const t0 = Math.min(...all.map((p) => p[0]));
    const t1 = Math.max(t0 + 1, ...all.map((p) => p[0]));
    const vmax = Math.max(1e-9, ...all.map((p) => p[1])) * 1.1;
    const x = (t) => padL + ((t - t0) / (t1 - t0)) * (width - padL - 6);
    const y = (v) => height - padB - (v / vmax) * (height - padB - padT);
    for (const frac of [0, 0.5, 1]) {
      const v = vmax * frac;
      this.svgEl.append(
        svg('line', { x1: padL, x2: width - 6, y1: y(v), y2: y(v), class: 'chart-grid' }),
        svg('text', { x: padL - 6, y: y(v) + 4, 'text-anchor': 'end', class: 'chart-axis',
          text: this.format(v) }));
    }
    this.svgEl.append(svg('text', { x: width - 6, y: height - 3, 'text-anchor': 'end', class: 'chart-axis',
      text: `last ${Math.round((t1 - t0) / 1000)} s` }));
    series.forEach((s, i) => {
      const color = PALETTE[i % PALETTE.length];
      if (s.points.length) {
        const d = s.points.map((p, k) => `${k ? 'L' : 'M'}${x(p[0]).toFixed(1)},${y(p[1]).toFixed(1)}`).join('');
        this.svgEl.append(svg('path', { d, fill: 'none', stroke: color, 'stroke-width': 2, class: 'chart-line' }));
        const last = s.points[s.points.length - 1];
        this.svgEl.append(svg('circle', { cx: x(last[0]), cy: y(last[1]), r: 3, fill: color }));
      }
      const last = s.points.length ? s.points[s.points.length - 1][1] : null;
      this.legend.append(h('span', { class: 'legend-item' },
        h('i', { style: `background:${color}` }), `${s.name} `,
        h('b', { text: last === null ? '–' : `${this.format(last)}${this.unit}` })));
    });
  }
}

function truncate(text, n) {
  const s = String(text);
  return s.length > n ? `${s.slice(0, n - 1)}…` : s;
}

// rows: [{label, mine, theirs}]: two bars per row, this creator's against a reference.
export function pairChart(rows, { format = formatNumber, names = ['yours', 'similar'], className = '' } = {}) {
  const rowH = 34;
  const width = 320;
  const labelW = 96;
  const valueW = 48;
  const barW = width - labelW - valueW - 8;
  const top = Math.max(1e-9, ...rows.flatMap((r) => [r.mine || 0, r.theirs || 0]));
  const chart = svg('svg', { class: `chart pair-chart ${className}`, viewBox: `0 0 ${width} ${rows.length * rowH + 16}`,
    role: 'img', 'aria-label': rows.map((r) => `${r.label}: ${names[0]} ${format(r.mine)}, ${names[1]} ${format(r.theirs)}`).join('; ') });
  rows.forEach((row, i) => {
    const y = i * rowH;
    chart.append(svg('text', { x: labelW - 8, y: y + rowH / 2 + 2, 'text-anchor': 'end', class: 'chart-label',
      text: truncate(row.label, 14) }));
    [[row.mine, 0], [row.theirs, 1]].forEach(([value, k]) => {
      if (value === null || value === undefined) return;
      const by = y + 4 + k * 13;
      chart.append(
        svg('rect', { x: labelW, y: by, width: Math.max(2, (value / top) * barW), height: 11, rx: 3,
          fill: PALETTE[k], class: 'chart-bar' }),
        svg('text', { x: width - 2, y: by + 10, 'text-anchor': 'end', class: 'chart-value', text: format(value) }));
    });
  });
  const ly = rows.length * rowH + 10;
  names.forEach((name, k) => chart.append(
    svg('rect', { x: labelW + k * 90, y: ly - 8, width: 10, height: 10, rx: 2, fill: PALETTE[k] }),
    svg('text', { x: labelW + k * 90 + 14, y: ly + 1, class: 'chart-axis', text: name })));
  return chart;
}

// A bar chart as a standalone SVG string, written by hand (no chart library for one picture).
// Small multiples: one panel per group (workload × concurrency), each with its own scale, since the
// workloads differ by orders of magnitude (an insert of 1,000 documents vs a point read). A panel has
// two bar clusters: throughput (ops/s, higher is better) and p99 latency (ms, lower is better), one
// bar per target, the value written above each bar.
//
// renderChart({ title, subtitle, sections: [{ title, groups: [{ label, bars: [{ target, ops, p99_us }] }] }],
//               targets: ['direct', 'relay', 'proxy'] }) → '<svg ...>...</svg>'

const PALETTE = ['#4e79a7', '#f28e2b', '#59a14f', '#e15759', '#76b7b2', '#edc948'];
const PANEL_W = 250;
const PANEL_H = 170;
const COLUMNS = 4;
const GAP = 16;
const MARGIN = 20;

const escape = (s) => String(s).replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[c]);

/** 12345 → "12.3k", 0.0421 → "0.042": short labels that fit above a bar. */
export function shortNumber(x) {
  if (x === null || x === undefined || !Number.isFinite(x)) return 'n/a';
  const a = Math.abs(x);
  if (a === 0) return '0';
  if (a >= 1e6) return `${(x / 1e6).toFixed(a >= 1e7 ? 0 : 1)}M`;
  if (a >= 1e4) return `${(x / 1e3).toFixed(a >= 1e5 ? 0 : 1)}k`;
  if (a >= 100) return String(Math.round(x));
  if (a >= 10) return x.toFixed(1);
  if (a >= 1) return x.toFixed(2);
  return x.toPrecision(2);
}

/** One cluster of bars (one per target) in a box at (x, y) of size w × h, scaled to its own maximum. */
function cluster({ x, y, w, h, caption, values, colors }) {
  const out = [];
  const max = Math.max(...values.map((v) => (Number.isFinite(v) ? v : 0)), 0);
  const slot = w / values.length;
  const barW = Math.max(4, slot * 0.7);
  values.forEach((v, i) => {
    const bh = max > 0 && Number.isFinite(v) ? Math.max(1, (v / max) * (h - 14)) : 0;
    const bx = x + i * slot + (slot - barW) / 2;
    const by = y + h - bh;
    out.push(`<rect x="${bx.toFixed(1)}" y="${by.toFixed(1)}" width="${barW.toFixed(1)}" height="${bh.toFixed(1)}" fill="${colors[i]}"/>`);
    out.push(`<text x="${(bx + barW / 2).toFixed(1)}" y="${(by - 3).toFixed(1)}" class="v">${escape(shortNumber(v))}</text>`);
  });
  out.push(`<line x1="${x}" y1="${y + h}" x2="${x + w}" y2="${y + h}" class="axis"/>`);
  out.push(`<text x="${(x + w / 2).toFixed(1)}" y="${y + h + 13}" class="c">${escape(caption)}</text>`);
  return out.join('');
}

function panel({ x, y, group, targets, colors }) {
  const byTarget = new Map(group.bars.map((b) => [b.target, b]));
  const ops = targets.map((t) => byTarget.get(t)?.ops);
  const p99 = targets.map((t) => {
    const us = byTarget.get(t)?.p99_us;
    return Number.isFinite(us) && us > 0 ? us / 1000 : NaN;
  });
  const inner = PANEL_W - 20;
  const half = (inner - 14) / 2;
  const top = y + 26;
  const h = PANEL_H - 26 - 22;
  return [
    `<g><rect x="${x}" y="${y}" width="${PANEL_W}" height="${PANEL_H}" class="panel"/>`,
    `<text x="${x + PANEL_W / 2}" y="${y + 15}" class="t">${escape(group.label)}</text>`,
    cluster({ x: x + 10, y: top, w: half, h, caption: 'ops/s ↑', values: ops, colors }),
    cluster({ x: x + 10 + half + 14, y: top, w: half, h, caption: 'p99 ms ↓', values: p99, colors }),
    '</g>',
  ].join('');
}

/** The whole picture. Sections stack vertically (one per upstream), panels wrap in rows of COLUMNS. */
export function renderChart({ title, subtitle = '', sections, targets }) {
  const colors = targets.map((_, i) => PALETTE[i % PALETTE.length]);
  const width = MARGIN * 2 + COLUMNS * PANEL_W + (COLUMNS - 1) * GAP;
  const parts = [];
  let y = MARGIN + 18;
  parts.push(`<text x="${MARGIN}" y="${y}" class="h1">${escape(title)}</text>`);
  if (subtitle) {
    y += 18;
    parts.push(`<text x="${MARGIN}" y="${y}" class="sub">${escape(subtitle)}</text>`);
  }
  // The legend: one coloured square per target.
  y += 20;
  targets.forEach((t, i) => {
    const lx = MARGIN + i * 120;
    parts.push(`<rect x="${lx}" y="${y - 10}" width="12" height="12" fill="${colors[i]}"/><text x="${lx + 17}" y="${y}" class="l">${escape(t)}</text>`);
  });
  for (const section of sections) {
    y += 30;
    parts.push(`<text x="${MARGIN}" y="${y}" class="h2">${escape(section.title)}</text>`);
    y += 10;
    section.groups.forEach((group, i) => {
      const col = i % COLUMNS;
      if (i > 0 && col === 0) y += PANEL_H + GAP;
      parts.push(panel({ x: MARGIN + col * (PANEL_W + GAP), y, group, targets, colors }));
    });
    if (section.groups.length > 0) y += PANEL_H;
  }
  const height = y + MARGIN;
  return [
    `<?xml version="1.0" encoding="UTF-8"?>`,
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" font-family="Helvetica, Arial, sans-serif">`,
    '<style>',
    '.h1{font-size:16px;font-weight:bold}.h2{font-size:14px;font-weight:bold}.sub{font-size:11px;fill:#555}',
    '.l{font-size:12px}.t{font-size:12px;font-weight:bold;text-anchor:middle}.c{font-size:10px;fill:#555;text-anchor:middle}',
    '.v{font-size:9px;text-anchor:middle}.panel{fill:#fafafa;stroke:#ddd}.axis{stroke:#999}',
    '</style>',
    `<rect width="${width}" height="${height}" fill="#fff"/>`,
    ...parts,
    '</svg>',
    '',
  ].join('\n');
}

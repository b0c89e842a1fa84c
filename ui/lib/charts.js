// The geometry of the small charts (pure numbers: node's tests check them). The views turn
// them into SVG.

import { humanBytes, truncate } from './format.js';

/** @typedef {import('../types').CheckPoint} CheckPoint */
/** @typedef {import('../types').StorageItem} StorageItem */

/** @typedef {'pass' | 'fail' | 'unreachable' | 'none'} Outcome */

const DAY = 86_400_000;

/**
 * How many days a check chart spans: enough for the oldest check, from 1 to 14.
 * @param {CheckPoint[]} checks
 * @param {number} now
 * @returns {number}
 */
export function chartDays(checks, now) {
  let oldest = now;
  for (const c of checks) {
    const t = Date.parse(c.at);
    if (!Number.isNaN(t) && t < oldest) oldest = t;
  }
  return Math.min(14, Math.max(1, Math.ceil((now - oldest) / DAY)));
}

/**
 * @typedef {object} StripBar
 * @property {number} x
 * @property {number} y
 * @property {number} width
 * @property {number} height
 * @property {Outcome} outcome the worst outcome in the slot: fail, then unreachable, then pass
 * @property {number} from slot start (ms)
 * @property {number} to slot end (ms)
 * @property {number} pass
 * @property {number} fail
 * @property {number} unreachable
 */

/**
 * A strip of checks over time, like a status page: the time from `now - days` to `now` cut
 * into `slots`, each a bar coloured by the worst outcome in it. A passed or failed slot is a
 * full bar, an unreachable one a shorter bar, an empty one a small stub (so the chart reads
 * without colour too).
 * @param {CheckPoint[]} checks
 * @param {{ now: number, days?: number, slots?: number, width?: number, height?: number, gap?: number }} opts
 * @returns {{ width: number, height: number, bars: StripBar[], pass: number, fail: number, unreachable: number, total: number, from: number, to: number }}
 */
export function checkStrip(checks, opts) {
  const { now, days = 7, slots = 28, width = 196, height = 28, gap = 2 } = opts;
  const from = now - days * DAY;
  const slotMs = (now - from) / slots;
  const barWidth = Math.max(1, (width - gap * (slots - 1)) / slots);
  /** @type {StripBar[]} */
  const bars = [];
  for (let i = 0; i < slots; i += 1) {
    bars.push({
      x: round(i * (barWidth + gap)),
      y: 0,
      width: round(barWidth),
      height: 0,
      outcome: 'none',
      from: from + i * slotMs,
      to: from + (i + 1) * slotMs,
      pass: 0,
      fail: 0,
      unreachable: 0,
    });
  }
  let pass = 0;
  let fail = 0;
  let unreachable = 0;
  for (const c of checks) {
    const t = Date.parse(c.at);
    if (Number.isNaN(t) || t < from || t > now) continue;
    const bar = bars[Math.min(slots - 1, Math.floor((t - from) / slotMs))];
    if (c.outcome === 'pass') {
      bar.pass += 1;
      pass += 1;
    } else if (c.outcome === 'fail') {
      bar.fail += 1;
      fail += 1;
    } else {
      bar.unreachable += 1;
      unreachable += 1;
    }
  }
  for (const bar of bars) {
    bar.outcome = bar.fail > 0 ? 'fail' : bar.unreachable > 0 ? 'unreachable' : bar.pass > 0 ? 'pass' : 'none';
    const h = bar.outcome === 'none' ? Math.max(2, height * 0.15) : bar.outcome === 'unreachable' ? height * 0.55 : height;
    bar.height = round(h);
    bar.y = round(height - h);
  }
  return { width, height, bars, pass, fail, unreachable, total: pass + fail + unreachable, from, to: now };
}

/**
 * "All 42 checks passed", "40 of 42 checks passed", "No checks yet".
 * @param {{ pass: number, fail: number, unreachable: number, total: number }} s
 * @returns {string}
 */
export function stripSummary(s) {
  if (s.total === 0) return 'No checks in this time';
  if (s.pass === s.total) return s.total === 1 ? 'The check passed' : `All ${s.total.toLocaleString('en-US')} checks passed`;
  const parts = [`${s.pass.toLocaleString('en-US')} of ${s.total.toLocaleString('en-US')} checks passed`];
  if (s.fail > 0) parts.push(`${s.fail.toLocaleString('en-US')} failed`);
  if (s.unreachable > 0) parts.push(`${s.unreachable.toLocaleString('en-US')} got no answer`);
  return parts.join(', ');
}

/**
 * @typedef {object} BarRow
 * @property {string} name
 * @property {string} label the name, shortened to fit
 * @property {number} bytes
 * @property {string} value the size in words
 * @property {number} y top of the bar
 * @property {number} textY baseline of the row's texts
 * @property {number} barX
 * @property {number} barWidth
 * @property {number} trackWidth the bar's room (for the track behind it)
 * @property {number} valueX where the size's text starts
 */

/**
 * A horizontal bar chart of sizes, largest first: name on the left, bar, size after it.
 * @param {StorageItem[]} items
 * @param {{ width?: number, barHeight?: number, gap?: number, labelWidth?: number, valueWidth?: number, charWidth?: number }} [opts]
 * @returns {{ width: number, height: number, rows: BarRow[], total: number, totalText: string }}
 */
export function barChart(items, opts = {}) {
  const { width = 520, barHeight = 16, gap = 14, labelWidth = 150, valueWidth = 72, charWidth = 7.2 } = opts;
  const sorted = items
    .map((it, i) => ({ it, i }))
    .sort((a, b) => b.it.bytes - a.it.bytes || a.i - b.i)
    .map(({ it }) => it);
  const max = Math.max(1, ...sorted.map((it) => it.bytes));
  const track = Math.max(10, width - labelWidth - valueWidth);
  const maxChars = Math.max(4, Math.floor((labelWidth - 12) / charWidth));
  const rows = sorted.map((it, i) => {
    const y = i * (barHeight + gap);
    const barWidth = it.bytes > 0 ? Math.max(3, (it.bytes / max) * track) : 0;
    return {
      name: it.name,
      label: truncate(it.name, maxChars),
      bytes: it.bytes,
      value: it.bytes > 0 ? humanBytes(it.bytes) : 'nothing yet',
      y: round(y),
      textY: round(y + barHeight / 2 + 4.5),
      barX: labelWidth,
      barWidth: round(barWidth),
      trackWidth: round(track),
      valueX: round(labelWidth + barWidth + 8),
    };
  });
  const total = sorted.reduce((s, it) => s + it.bytes, 0);
  const height = rows.length === 0 ? 0 : rows.length * (barHeight + gap) - gap;
  return { width, height, rows, total, totalText: humanBytes(total) };
}

/**
 * @param {number} n
 * @returns {number}
 */
function round(n) {
  return Math.round(n * 100) / 100;
}

// A circle's health dashboard: the state and why, each member's checks over the last days,
// what this computer holds for each, and what happened; leaving the circle.

import { api, errorText } from '../api.js';
import { barChart, chartDays, checkStrip, stripSummary } from '../charts.js';
import { busy, byId, h, s } from '../dom.js';
import { ago, capitalize, clock, dayLabel, humanBytes, parseTime } from '../format.js';
import { groupTimeline, healthHeading, healthInfo, leaveDialog } from '../model.js';
import { avatar, badge, detailsBox, icon, setError } from './common.js';

/** @typedef {import('../ctx.js').Ctx} Ctx */
/** @typedef {import('../../types').Health} Health */
/** @typedef {import('../../types').MemberHealth} MemberHealth */
/** @typedef {import('../../types').CircleCard} CircleCard */

/**
 * Fetches the dashboard of the open circle and shows it.
 * @param {Ctx} ctx
 * @returns {Promise<void>}
 */
export async function loadHealth(ctx) {
  const uri = ctx.state.healthUri;
  if (!uri) return;
  try {
    const health = await api.circleHealth(uri);
    if (ctx.state.healthUri !== uri) return;
    ctx.state.health = health;
    ctx.state.healthError = null;
  } catch (e) {
    if (ctx.state.healthUri !== uri) return;
    ctx.state.healthError = errorText(e);
  }
  if (ctx.state.view === 'health') renderHealth(ctx);
}

/** What the dashboard shows now (see renderHealth). */
let renderedKey = '';

/**
 * @param {Ctx} ctx
 */
export function renderHealth(ctx) {
  const root = byId('health', HTMLElement);
  const uri = ctx.state.healthUri;
  const circle = ctx.state.overview?.circles.find((c) => c.uri === uri) ?? null;
  const health = ctx.state.health?.uri === uri ? ctx.state.health : null;
  // Redraw only when something shown changed (the overview refreshes often while backups
  // run), or a minute passed (relative times).
  const key = JSON.stringify([health, circle, ctx.state.healthError, Math.floor(Date.now() / 60_000)]);
  if (key === renderedKey && root.childElementCount > 0) return;
  renderedKey = key;
  const scroller = byId('main', HTMLElement);
  const scrollTop = scroller.scrollTop;
  const focused = document.activeElement instanceof HTMLElement && root.contains(document.activeElement) ? document.activeElement.id : '';

  const back = h('button', { class: 'btn btn-quiet back', type: 'button', id: 'health-back' }, icon('arrow-left'), 'Circles');
  back.addEventListener('click', () => ctx.go('circles'));

  /** @type {(HTMLElement | null)[]} */
  const parts = [h('div', { class: 'health-nav' }, back)];
  const name = health?.name ?? circle?.name ?? 'Circle';

  if (!health) {
    parts.push(
      h('div', { class: 'view-head' }, h('h1', { id: 'health-title', tabindex: '-1', text: name })),
      ctx.state.healthError
        ? h('div', { class: 'card notice', 'data-tone': 'danger', role: 'alert' }, icon('alert'), h('p', { text: ctx.state.healthError }))
        : h('div', { class: 'card loading-card', role: 'status' }, h('span', { class: 'spinner', 'aria-hidden': 'true' }), 'Checking on everyone…'),
      h('span', { id: 'health-state', class: 'raw', 'aria-hidden': 'true', text: '' }),
    );
  } else {
    parts.push(...dashboard(health));
  }
  if (circle) parts.push(leaveBlock(ctx, circle));
  root.replaceChildren(...parts.filter((p) => p != null));
  scroller.scrollTop = scrollTop;
  if (focused) document.getElementById(focused)?.focus();
}

/**
 * @param {Health} hl
 * @returns {HTMLElement[]}
 */
function dashboard(hl) {
  const info = healthHeading(hl);
  const now = Date.now();
  const evaluated = parseTime(hl.evaluatedAt);
  const hero = h(
    'section',
    { class: 'card hero', 'data-tone': info.tone, 'aria-labelledby': 'health-title' },
    h('div', { class: 'hero-icon', 'aria-hidden': 'true' }, icon(info.tone === 'ok' ? 'shield' : 'shield-alert')),
    h(
      'div',
      { class: 'hero-text' },
      h('p', { class: 'eyebrow', text: hl.name }),
      h(
        'h1',
        { id: 'health-title', class: 'hero-title', tabindex: '-1' },
        h('span', { id: 'health-state', class: 'raw', 'aria-hidden': 'true', text: hl.state }),
        h('span', { text: info.label }),
      ),
      h('p', { class: 'hero-sentence', text: capitalize(hl.sentence) }),
      Number.isNaN(evaluated) ? null : h('p', { class: 'hero-when', text: heroWhen(hl, evaluated, now) }),
    ),
  );

  /** @type {HTMLElement[]} */
  const out = [hero];
  const attention = hl.attention ?? [];
  if (attention.length > 0) {
    out.push(
      h(
        'section',
        { class: 'card reasons', 'aria-labelledby': 'reasons-title' },
        h('h2', { id: 'reasons-title', class: 'group-title', text: 'What needs attention' }),
        attention.map((g) =>
          h(
            'div',
            { class: 'attention-group', 'data-tone': attentionTone(g.tone), 'data-did': g.did ?? '' },
            h('h3', { class: 'attention-who', text: g.name }),
            h(
              'ul',
              { class: 'reason-list' },
              g.lines.map((r) => h('li', null, icon(g.tone === 'note' ? 'info' : 'alert'), h('span', { text: capitalize(r) }))),
            ),
          ),
        ),
        rawConditions(hl.details ?? []),
      ),
    );
  }
  if ((hl.rules ?? []).length > 0) {
    out.push(
      h(
        'section',
        { class: 'card rules', 'aria-labelledby': 'rules-title' },
        h('h2', { id: 'rules-title', class: 'group-title', text: "The circle's rules" }),
        h('ul', { class: 'rule-list' }, hl.rules.map((r) => h('li', { text: r }))),
      ),
    );
  }

  const days = Math.max(7, ...hl.members.map((m) => chartDays(m.checks, now)));
  out.push(
    h(
      'section',
      { class: 'card members', 'aria-labelledby': 'members-title' },
      h(
        'div',
        { class: 'group-head' },
        h('h2', { id: 'members-title', class: 'group-title', text: 'Members' }),
        legend(),
      ),
      hl.members.length
        ? h('ul', { class: 'member-list' }, hl.members.map((m) => memberRow(m, now, days)))
        : h('p', { class: 'muted', text: 'Nobody has accepted yet.' }),
    ),
  );

  out.push(
    h(
      'div',
      { class: 'two-col' },
      storageCard(hl),
      timelineCard(hl, now),
    ),
  );
  if (attention.length === 0) {
    const raw = rawConditions(hl.details ?? []);
    if (raw) out.push(raw);
  }
  out.push(detailsBox([['Circle record', hl.uri], ['Report computed', hl.evaluatedAt]]));
  return out;
}

/**
 * When the copies were last checked (only once every copy has passed a check) and when the
 * page was computed.
 * @param {Health} hl
 * @param {number} evaluated
 * @param {number} now
 * @returns {string}
 */
function heroWhen(hl, evaluated, now) {
  const checked = parseTime(hl.checkedAt);
  const updated = `updated ${ago(evaluated, now)}`;
  return Number.isNaN(checked) ? `Not checked yet · ${updated}` : `Every copy checked ${ago(checked, now)} · ${updated}`;
}

/**
 * A group's tone as the window colours it.
 * @param {string} tone "note", "waiting", "warn", "danger"
 * @returns {string}
 */
function attentionTone(tone) {
  return { note: 'muted', waiting: 'busy', warn: 'warn', danger: 'danger' }[tone] ?? 'muted';
}

/**
 * The policy engine's own conditions, one click away (closed).
 * @param {string[]} details
 * @returns {HTMLDetailsElement | null}
 */
function rawConditions(details) {
  if (details.length === 0) return null;
  return h(
    'details',
    { class: 'details raw-conditions', id: 'health-details' },
    h('summary', { text: 'Details' }),
    h('ul', { class: 'raw-list' }, details.map((d) => h('li', { class: 'mono', text: d }))),
  );
}

/** @returns {HTMLElement} */
function legend() {
  return h(
    'ul',
    { class: 'legend', 'aria-label': 'Chart key' },
    h('li', { 'data-outcome': 'pass' }, h('span', { class: 'swatch', 'aria-hidden': 'true' }), 'Passed'),
    h('li', { 'data-outcome': 'fail' }, h('span', { class: 'swatch', 'aria-hidden': 'true' }), 'Failed'),
    h('li', { 'data-outcome': 'unreachable' }, h('span', { class: 'swatch', 'aria-hidden': 'true' }), 'No answer'),
  );
}

/**
 * @param {MemberHealth} m
 * @param {number} now
 * @param {number} days
 * @returns {HTMLElement}
 */
function memberRow(m, now, days) {
  // "Healthy" only once a check of its copies passed (as the engine's words say).
  const passed = m.checks.some((c) => c.outcome === 'pass');
  const info = healthInfo(m.state === 'ok' && !passed ? 'unknown' : m.state);
  const strip = checkStrip(m.checks, { now, days, slots: 28, width: 224, height: 28, gap: 2 });
  const summary = stripSummary(strip);
  const seen = parseTime(m.lastSeen);
  const chart = s(
    'svg',
    {
      class: 'strip',
      viewBox: `0 0 ${strip.width} ${strip.height}`,
      width: strip.width,
      height: strip.height,
      role: 'img',
      'aria-label': `Checks of ${m.name}'s copies over the last ${days} days: ${summary}`,
    },
    strip.bars.map((b) =>
      s(
        'rect',
        { x: b.x, y: b.y, width: b.width, height: b.height, rx: 1.5, class: `slot ${b.outcome}` },
        s('title', { text: slotTitle(b, now) }),
      ),
    ),
  );
  return h(
    'li',
    { class: 'member-row', 'data-did': m.did, 'data-tone': info.tone },
    avatar(m.name),
    h(
      'div',
      { class: 'member-text' },
      h('p', { class: 'member-name' }, h('span', { text: m.name }), badge(info.label, info.tone)),
      h('p', { class: 'member-words', text: capitalize(m.words) }),
      ...(m.needs || []).map((n) => h('p', { class: 'member-needs', text: n })),
      Number.isNaN(seen) ? null : h('p', { class: 'member-seen', text: `Last heard from ${ago(seen, now)}` }),
    ),
    h(
      'figure',
      { class: 'member-chart' },
      chart,
      h(
        'figcaption',
        null,
        h('span', { class: 'axis' }, h('span', { text: `${days} days ago` }), h('span', { text: 'now' })),
        h('span', { class: 'strip-summary', text: summary }),
      ),
    ),
  );
}

/**
 * @param {import('../charts.js').StripBar} b
 * @param {number} now
 * @returns {string}
 */
function slotTitle(b, now) {
  const when = `${dayLabel(b.from, now)} ${clock(b.from)}–${clock(b.to)}`;
  if (b.outcome === 'none') return `${when}: no checks`;
  const parts = [];
  if (b.pass) parts.push(`${b.pass} passed`);
  if (b.fail) parts.push(`${b.fail} failed`);
  if (b.unreachable) parts.push(`${b.unreachable} got no answer`);
  return `${when}: ${parts.join(', ')}`;
}

/** Watches the storage chart's width, to draw it at its size (crisp text at any width). */
/** @type {ResizeObserver | null} */
let barsObserver = null;
/** The chart's last width: a redrawn dashboard draws at once at it (no flicker). */
let barsWidth = 0;

/**
 * @param {Health} hl
 * @returns {HTMLElement}
 */
function storageCard(hl) {
  const box = h('div', { class: 'bars-box' });
  const total = hl.storage.reduce((sum, it) => sum + it.bytes, 0);
  barsObserver?.disconnect();
  barsObserver = null;
  if (hl.storage.length > 0) {
    let drawnAt = 0;
    const draw = () => {
      const width = Math.floor(box.clientWidth);
      if (width <= 0 || width === drawnAt) return;
      drawnAt = width;
      barsWidth = width;
      box.replaceChildren(barsSvg(hl, width));
    };
    if (barsWidth > 0) box.replaceChildren(barsSvg(hl, barsWidth));
    if (typeof ResizeObserver !== 'undefined') {
      barsObserver = new ResizeObserver(draw);
      barsObserver.observe(box);
    }
    requestAnimationFrame(draw);
  }
  return h(
    'section',
    { class: 'card storage', 'aria-labelledby': 'storage-chart-title' },
    h('h2', { id: 'storage-chart-title', class: 'group-title', text: 'On this computer' }),
    hl.storage.length ? box : h('p', { class: 'muted', text: 'No copies kept for this circle yet.' }),
    h('p', { class: 'total' }, h('span', { text: 'Total' }), h('strong', { text: humanBytes(total) })),
  );
}

/**
 * The storage bar chart, drawn `width` pixels wide.
 * @param {Health} hl
 * @param {number} width
 * @returns {SVGSVGElement}
 */
function barsSvg(hl, width) {
  const barHeight = 14;
  const chart = barChart(hl.storage, {
    width,
    barHeight,
    gap: 16,
    labelWidth: Math.round(Math.min(180, width * 0.36)),
    valueWidth: 84,
  });
  const height = Math.max(1, chart.height);
  return s(
    'svg',
    {
      class: 'bars',
      width,
      height,
      viewBox: `0 0 ${width} ${height}`,
      role: 'img',
      'aria-label': `Space used on this computer: ${chart.rows.map((r) => `${r.name} ${r.value}`).join(', ')}; ${chart.totalText} in all`,
    },
    chart.rows.map((r) =>
      s(
        'g',
        { class: 'bar-row' },
        s('text', { x: 0, y: r.textY, class: 'bar-label', text: r.label }, s('title', { text: r.name })),
        s('rect', { x: r.barX, y: r.y, width: r.trackWidth, height: barHeight, rx: barHeight / 2, class: 'bar-track' }),
        r.barWidth > 0
          ? s('rect', { x: r.barX, y: r.y, width: r.barWidth, height: barHeight, rx: barHeight / 2, class: 'bar-value' })
          : null,
        s('text', { x: r.valueX, y: r.textY, class: r.bytes > 0 ? 'bar-size' : 'bar-size none', text: r.value }),
      ),
    ),
  );
}

/**
 * @param {Health} hl
 * @param {number} now
 * @returns {HTMLElement}
 */
function timelineCard(hl, now) {
  const groups = groupTimeline(hl.timeline, now);
  /** @type {Record<string, string>} */
  const icons = { sync: 'refresh', check: 'check', circle: 'users', alert: 'alert' };
  return h(
    'section',
    { class: 'card timeline', 'aria-labelledby': 'timeline-title' },
    h('h2', { id: 'timeline-title', class: 'group-title', text: 'What happened' }),
    groups.length
      ? h(
          'ol',
          { class: 'timeline-days' },
          groups.map((g) =>
            h(
              'li',
              null,
              h('h3', { class: 'day', text: g.label }),
              h(
                'ol',
                { class: 'events' },
                g.items.map((e) =>
                  h(
                    'li',
                    { class: 'event', 'data-kind': e.kind },
                    h('span', { class: 'event-icon', 'aria-hidden': 'true' }, icon(icons[e.kind] ?? 'info')),
                    h('span', { class: 'event-text', text: e.text }),
                    h('time', { class: 'event-time', text: e.time, title: e.ago }),
                  ),
                ),
              ),
            ),
          ),
        )
      : h('p', { class: 'muted', text: 'Nothing yet.' }),
  );
}

/**
 * The "leave circle" button (with its dialog).
 * @param {Ctx} ctx
 * @param {CircleCard} circle
 * @returns {HTMLElement | null}
 */
function leaveBlock(ctx, circle) {
  if (['left', 'revoked', 'declined', 'expired', 'gone'].includes(circle.state)) return null;
  const button = h('button', { class: 'btn btn-danger-quiet', type: 'button', id: 'leave-circle' }, 'Leave circle…');
  button.addEventListener('click', () => openLeave(ctx, circle));
  return h('div', { class: 'leave-row' }, button);
}

/**
 * @param {Ctx} ctx
 * @param {CircleCard} circle
 */
function openLeave(ctx, circle) {
  const d = leaveDialog(circle, ctx.state.overview?.friends ?? []);
  const dialog = byId('leave-dialog', HTMLDialogElement);
  byId('leave-title', HTMLElement).textContent = d.title;
  byId('leave-body', HTMLElement).textContent = d.body;
  const copies = byId('leave-copies', HTMLFieldSetElement);
  copies.hidden = !d.askCopies;
  byId('leave-keep-label', HTMLElement).textContent = d.keepLabel;
  byId('leave-keep-hint', HTMLElement).textContent = d.keepHint;
  byId('leave-delete-label', HTMLElement).textContent = d.deleteLabel;
  byId('leave-delete-hint', HTMLElement).textContent = d.deleteHint;
  byId('leave-keep', HTMLInputElement).checked = true;
  byId('leave-submit', HTMLButtonElement).textContent = d.confirm;
  setError(byId('leave-error', HTMLElement), null);
  dialog.dataset.uri = circle.uri;
  dialog.showModal();
  byId('leave-cancel', HTMLButtonElement).focus();
}

/**
 * Binds the leave dialog (once).
 * @param {Ctx} ctx
 */
export function initLeave(ctx) {
  const dialog = byId('leave-dialog', HTMLDialogElement);
  const submit = byId('leave-submit', HTMLButtonElement);
  byId('leave-cancel', HTMLButtonElement).addEventListener('click', () => dialog.close());
  byId('leave-form', HTMLFormElement).addEventListener('submit', async (e) => {
    e.preventDefault();
    const uri = dialog.dataset.uri;
    if (!uri) return;
    const keep = !byId('leave-copies', HTMLFieldSetElement).hidden ? byId('leave-keep', HTMLInputElement).checked : true;
    try {
      const o = await busy(submit, 'Leaving…', () => api.leaveCircle(uri, keep));
      dialog.close();
      ctx.setOverview(o);
      ctx.go('circles');
    } catch (err) {
      setError(byId('leave-error', HTMLElement), errorText(err));
    }
  });
}

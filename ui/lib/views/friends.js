// Friends: add one by handle; a card per backed-up account, with live progress.

import { api, errorText } from '../api.js';
import { busy, byId, h, reconcile } from '../dom.js';
import { ago, capitalize, parseTime } from '../format.js';
import { dismissFlagsDialog, EMPTY, friendFacts, friendTone, progressView, removeFriendDialog, withLiveProgress } from '../model.js';
import { checkFriend } from '../validate.js';
import { avatar, clearWhenEdited, detailsBox, icon, setError } from './common.js';
import { openRestore } from './restore.js';

/** @typedef {import('../ctx.js').Ctx} Ctx */
/** @typedef {import('../../types').Friend} Friend */
/** @typedef {import('../../types').Progress} Progress */

/**
 * @param {Ctx} ctx
 */
export function initFriends(ctx) {
  const form = byId('add-friend-form', HTMLFormElement);
  const input = byId('add-friend-input', HTMLInputElement);
  const submit = byId('add-friend-submit', HTMLButtonElement);
  const error = byId('add-friend-error', HTMLElement);
  clearWhenEdited(error, input);
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    const checked = checkFriend(input.value);
    if (!checked.ok) {
      setError(error, checked.error, input);
      return;
    }
    setError(error, null);
    try {
      const o = await busy(submit, 'Adding…', () => api.addFriend(checked.value));
      input.value = '';
      ctx.setOverview(o);
    } catch (err) {
      setError(error, errorText(err), input);
    }
  });
}

/**
 * @param {Ctx} ctx
 */
export function renderFriends(ctx) {
  const o = ctx.state.overview;
  if (!o) return;
  const list = byId('friend-list', HTMLElement);
  const friends = withLiveProgress(o.friends, ctx.state.live);
  if (friends.length === 0) {
    reconcile(list, [
      h(
        'div',
        { class: 'empty', 'data-key': 'empty' },
        icon('user', 'empty-icon'),
        h('h2', { text: EMPTY.friends.title }),
        h('p', { text: EMPTY.friends.body }),
      ),
    ]);
    return;
  }
  reconcile(
    list,
    friends.map((f) => friendCard(ctx, f)),
  );
}

/**
 * @param {Ctx} ctx
 * @param {Friend} f
 * @returns {HTMLElement}
 */
function friendCard(ctx, f) {
  const key = `friend:${f.did}`;
  const cardError = ctx.state.errors.get(key) ?? null;
  const last = parseTime(f.lastBackupAt);
  const stop = h(
    'button',
    { class: 'btn btn-quiet stop', type: 'button', 'data-focus': 'stop' },
    'Stop backing up',
  );
  stop.addEventListener('click', async () => {
    const d = removeFriendDialog(f);
    if (!(await ctx.confirm(d))) return;
    ctx.state.errors.delete(key);
    try {
      ctx.setOverview(await busy(stop, 'Stopping…', () => api.removeFriend(f.did)));
    } catch (err) {
      ctx.state.errors.set(key, errorText(err));
      ctx.render();
    }
  });
  const flagged = f.flags.length > 0;
  const restore = f.canRestore
    ? h(
        'button',
        { class: flagged ? 'btn btn-primary restore' : 'btn btn-quiet restore', type: 'button', 'data-focus': 'restore' },
        'Give back…',
      )
    : null;
  restore?.addEventListener('click', () => openRestore(ctx, f));
  const dismiss = flagged
    ? h('button', { class: 'btn btn-quiet dismiss', type: 'button', 'data-focus': 'dismiss' }, 'Dismiss')
    : null;
  dismiss?.addEventListener('click', async () => {
    const days = ctx.state.overview?.storage.retentionDays ?? 30;
    if (!(await ctx.confirm(dismissFlagsDialog(f, days)))) return;
    ctx.state.errors.delete(key);
    try {
      ctx.setOverview(await busy(dismiss, 'Dismissing…', () => api.dismissFlags(f.did)));
    } catch (err) {
      ctx.state.errors.set(key, errorText(err));
      ctx.render();
    }
  });
  return h(
    'article',
    { class: 'card friend-card', 'data-did': f.did, 'data-key': key, 'data-state': f.state, 'data-flagged': String(flagged) },
    h(
      'div',
      { class: 'friend-main' },
      avatar(f.name),
      h(
        'div',
        { class: 'friend-text' },
        h('h2', { class: 'friend-name', text: f.name }),
        h(
          'p',
          { class: 'friend-status', 'data-tone': friendTone(f.state) },
          h('span', { class: 'dot', 'aria-hidden': 'true' }),
          // As the app words it ("backed up 3 minutes ago"): a status line under the name.
          f.statusText,
        ),
        h('p', { class: 'friend-facts', text: friendFacts(f) }),
        // Live, reconnecting, or checked on a schedule: how fresh the copy stays.
        f.state === 'gone' || f.state === 'deactivated'
          ? null
          : h('p', { class: 'friend-follow', 'data-followed': f.followed, text: capitalize(f.followText) }),
      ),
      h('div', { class: 'friend-actions' }, restore, stop),
    ),
    flagged
      ? h(
          'div',
          { class: 'friend-flags', role: 'group', 'aria-label': 'What happened' },
          f.flags.map((fl) => h('p', { class: 'friend-flag', 'data-kind': fl.kind }, icon('alert'), h('span', { text: fl.text }))),
          h('div', { class: 'flag-actions' }, dismiss),
        )
      : null,
    progressBlock(f.progress),
    f.problem ? h('p', { class: 'friend-problem' }, icon('alert'), h('span', { text: capitalize(f.problem) })) : null,
    cardError ? h('p', { class: 'form-error', role: 'alert', text: cardError }) : null,
    detailsBox([
      ['Account', f.did],
      ...(f.handle ? /** @type {[string, string][]} */ ([['Handle', `@${f.handle}`]]) : []),
      ['Last full backup', Number.isNaN(last) ? 'not yet' : `${new Date(last).toLocaleString()} (${ago(last)})`],
      ['In circles', f.circles.length ? f.circles.join(', ') : 'none'],
      ...f.flags.map((fl) => /** @type {[string, string]} */ ([`Noticed ${new Date(fl.detectedAt).toLocaleString()}`, fl.detail])),
    ]),
  );
}

/**
 * The progress block of a card (hidden while no backup runs).
 * @param {Progress | null} p
 * @returns {HTMLElement}
 */
function progressBlock(p) {
  const el = h('div', { class: 'friend-progress' });
  fillProgress(el, p);
  return el;
}

/**
 * @param {HTMLElement} el
 * @param {Progress | null} p
 */
function fillProgress(el, p) {
  el.hidden = p == null;
  if (!p) {
    el.replaceChildren();
    return;
  }
  const v = progressView(p);
  const fill = h('div', { class: 'bar-fill' });
  const bar = h('div', {
    class: v.fraction == null ? 'bar indeterminate' : 'bar',
    role: 'progressbar',
    'aria-label': v.label,
    'aria-valuetext': v.detail || v.label,
  }, fill);
  if (v.fraction != null) {
    bar.setAttribute('aria-valuemin', '0');
    bar.setAttribute('aria-valuemax', '100');
    bar.setAttribute('aria-valuenow', String(Math.round(v.fraction * 100)));
    fill.style.width = `${(v.fraction * 100).toFixed(1)}%`;
  }
  el.replaceChildren(
    h(
      'div',
      { class: 'progress-text' },
      h('span', { class: 'progress-phase', text: v.label }),
      h('span', { class: 'progress-detail', text: v.detail }),
    ),
    bar,
  );
}

/**
 * Updates one friend's progress bar in place, from an engine event.
 * @param {string} did
 * @param {Progress} p
 */
export function updateProgress(did, p) {
  for (const card of document.querySelectorAll('.friend-card')) {
    if (!(card instanceof HTMLElement) || card.dataset.did !== did) continue;
    const el = card.querySelector('.friend-progress');
    if (el instanceof HTMLElement) fillProgress(el, p);
  }
}

// Circles: invitations first, then the circles; the "create a circle" dialog.

import { api, errorText } from '../api.js';
import { busy, byId, h, reconcile } from '../dom.js';
import {
  canCreateCircle,
  circleChoices,
  circleSections,
  circleStateInfo,
  copiesHint,
  EMPTY,
  healthInfo,
  isPastCircle,
  memberChips,
} from '../model.js';
import { checkCircle, minCopiesBounds } from '../validate.js';
import { avatar, badge, detailsBox, icon, setError } from './common.js';
import { bindLinkForm, highlighted, initQr, shareBlock } from './invite.js';

/** @typedef {import('../ctx.js').Ctx} Ctx */
/** @typedef {import('../../types').CircleCard} CircleCard */
/** @typedef {import('../../types').InvitationCard} InvitationCard */

/**
 * @param {Ctx} ctx
 */
export function initCircles(ctx) {
  const dialog = byId('circle-dialog', HTMLDialogElement);
  const form = byId('circle-form', HTMLFormElement);
  const name = byId('circle-name', HTMLInputElement);
  const copies = byId('circle-min-copies', HTMLInputElement);
  const error = byId('circle-error', HTMLElement);
  const submit = byId('circle-submit', HTMLButtonElement);
  const friendsBox = byId('circle-friends', HTMLElement);
  /** Whether the person changed the number themselves (else it follows the default). */
  let copiesTouched = false;

  const picked = () =>
    Array.from(friendsBox.querySelectorAll('input.circle-friend-checkbox'))
      .filter((c) => c instanceof HTMLInputElement && c.checked)
      .map((c) => /** @type {HTMLInputElement} */ (c).value);

  const updateCopies = () => {
    const n = picked().length;
    const b = minCopiesBounds(n);
    copies.min = String(b.min);
    copies.max = String(b.max);
    const current = Number(copies.value);
    if (!copiesTouched || !Number.isInteger(current)) copies.value = String(b.value);
    else copies.value = String(Math.min(b.max, Math.max(b.min, current)));
    copies.disabled = n === 0;
    const v = Number(copies.value);
    byId('circle-min-copies-unit', HTMLElement).textContent = v === 1 ? 'friend' : 'friends';
    byId('circle-copies-hint', HTMLElement).textContent = copiesHint(v, n);
  };

  byId('create-circle', HTMLButtonElement).addEventListener('click', () => {
    const o = ctx.state.overview;
    if (!o) return;
    form.reset();
    copiesTouched = false;
    setError(error, null);
    friendsBox.replaceChildren(
      ...circleChoices(o).map((f) =>
        h(
          'label',
          { class: 'check-item' },
          h('input', { type: 'checkbox', class: 'circle-friend-checkbox', value: f.did }),
          avatar(f.name, 'small'),
          h('span', { class: 'check-name', text: f.name }),
        ),
      ),
    );
    updateCopies();
    dialog.showModal();
    name.focus();
  });
  friendsBox.addEventListener('change', updateCopies);
  copies.addEventListener('input', () => {
    copiesTouched = true;
    const n = picked().length;
    const v = Number(copies.value);
    byId('circle-min-copies-unit', HTMLElement).textContent = v === 1 ? 'friend' : 'friends';
    byId('circle-copies-hint', HTMLElement).textContent = copiesHint(v, n);
  });
  byId('circle-cancel', HTMLButtonElement).addEventListener('click', () => dialog.close());
  initQr();
  bindLinkForm(
    ctx,
    { form: 'invite-link-form', input: 'invite-link-input', submit: 'invite-link-open', error: 'invite-link-error', note: 'invite-link-note' },
    'circles',
  );
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    const members = picked();
    const checked = checkCircle(name.value, members, Number(copies.value));
    if (!checked.ok) {
      const field = checked.field === 'name' ? name : checked.field === 'minCopies' ? copies : friendsBox.querySelector('input');
      setError(error, checked.error, field instanceof HTMLElement ? field : null);
      return;
    }
    setError(error, null);
    try {
      const v = checked.value;
      const o = await busy(submit, 'Creating…', () => api.createCircle(v.name, v.members, v.minCopies));
      dialog.close();
      ctx.setOverview(o);
      ctx.notify('Circle created', `Invitations to “${v.name}” are on their way.`, 'ok');
    } catch (err) {
      setError(error, errorText(err));
    }
  });
}

/**
 * @param {Ctx} ctx
 */
export function renderCircles(ctx) {
  const o = ctx.state.overview;
  if (!o) return;
  const { invitations, current, past } = circleSections(o);

  const can = canCreateCircle(o);
  byId('create-circle', HTMLButtonElement).disabled = !can.ok;
  const note = byId('create-circle-note', HTMLElement);
  // With nothing to list, the empty state says it instead.
  note.hidden = can.ok || (current.length === 0 && invitations.length === 0);
  note.textContent = can.reason ?? '';

  reconcile(
    byId('invitation-list', HTMLElement),
    invitations.map((i) => invitationCard(ctx, i)),
  );

  /** @type {HTMLElement[]} */
  let cards = current.map((c) => circleCard(ctx, c));
  if (cards.length === 0 && invitations.length === 0) {
    cards = [
      h(
        'div',
        { class: 'empty', 'data-key': 'empty' },
        icon('users', 'empty-icon'),
        h('h2', { text: EMPTY.circles.title }),
        h('p', { text: EMPTY.circles.body }),
        can.reason ? h('p', { class: 'empty-note', text: can.reason }) : null,
      ),
    ];
  }
  reconcile(byId('circle-list', HTMLElement), cards);

  const pastBox = byId('past-circles', HTMLDetailsElement);
  pastBox.hidden = past.length === 0;
  byId('past-circles-title', HTMLElement).textContent = `Past circles (${past.length})`;
  reconcile(
    byId('past-circle-list', HTMLElement),
    past.map((c) => circleCard(ctx, c)),
  );
}

/**
 * @param {Ctx} ctx
 * @param {InvitationCard} inv
 * @returns {HTMLElement}
 */
function invitationCard(ctx, inv) {
  const key = `invite:${inv.uri}`;
  const err = ctx.state.errors.get(key) ?? null;
  const accept = h('button', { class: 'btn btn-primary accept', type: 'button', 'data-focus': 'accept' }, 'Accept');
  const decline = h('button', { class: 'btn btn-secondary decline', type: 'button', 'data-focus': 'decline' }, 'Decline');
  /**
   * @param {HTMLButtonElement} button
   * @param {string} label
   * @param {() => Promise<import('../../types').Overview>} run
   */
  const act = async (button, label, run) => {
    ctx.state.errors.delete(key);
    accept.disabled = true;
    decline.disabled = true;
    try {
      ctx.setOverview(await busy(button, label, run));
    } catch (e) {
      ctx.state.errors.set(key, errorText(e));
      ctx.render();
    } finally {
      accept.disabled = false;
      decline.disabled = false;
    }
  };
  accept.addEventListener('click', () => act(accept, 'Accepting…', () => api.acceptInvitation(inv.uri)));
  decline.addEventListener('click', () => act(decline, 'Declining…', () => api.declineInvitation(inv.uri)));
  return h(
    'article',
    { class: highlighted(inv.uri) ? 'card invitation-card link-opened' : 'card invitation-card', 'data-uri': inv.uri, 'data-key': key },
    h('div', { class: 'invite-icon', 'aria-hidden': 'true' }, icon('mail')),
    h(
      'div',
      { class: 'invite-body' },
      h('p', { class: 'eyebrow', text: `Invitation from ${inv.fromName}` }),
      h('h2', { class: 'card-title', text: inv.circleName }),
      h('p', { class: 'invite-text', text: inv.text }),
      inv.memberNames.length
        ? h(
            'ul',
            { class: 'chips', 'aria-label': 'Members' },
            inv.memberNames.map((n) => h('li', { class: 'chip' }, avatar(n, 'tiny'), h('span', { text: n }))),
          )
        : null,
      err ? h('p', { class: 'form-error', role: 'alert', text: err }) : null,
      h('div', { class: 'card-actions' }, accept, decline),
    ),
  );
}

/**
 * @param {Ctx} ctx
 * @param {CircleCard} c
 * @returns {HTMLElement}
 */
function circleCard(ctx, c) {
  const state = circleStateInfo(c.state);
  // "Healthy" only once every copy has passed a check: nothing wrong yet is not checked.
  const health = c.health != null ? healthInfo(c.health === 'ok' && !c.checked ? 'unknown' : c.health) : null;
  const open = h(
    'button',
    { class: 'circle-open', type: 'button', 'data-focus': 'open', 'aria-label': `${c.name}: see how everyone is doing` },
    h('span', { class: 'card-title', text: c.name }),
    icon('chevron', 'chev'),
  );
  open.addEventListener('click', () => ctx.openHealth(c.uri));
  const chips = memberChips(c);
  const meta = [
    c.youWroteIt ? 'Started by you' : `Started by ${c.authorName}`,
    `each account kept by at least ${c.minCopies} ${c.minCopies === 1 ? 'friend' : 'friends'}`,
  ].join(' · ');
  const card = h(
    'article',
    {
      class: highlighted(c.uri) ? 'card circle-card link-opened' : 'card circle-card',
      'data-uri': c.uri,
      'data-key': `circle:${c.uri}`,
      'data-state': c.state,
    },
    h(
      'header',
      { class: 'circle-head' },
      open,
      health ? badge(health.label, health.tone) : badge(state.label, state.tone),
      h('span', { class: 'raw circle-health', 'aria-hidden': 'true', text: c.health ?? '' }),
    ),
    h('p', { class: 'circle-sentence', text: c.sentence }),
    h(
      'ul',
      { class: 'chips', 'aria-label': 'Members' },
      chips.map((m) =>
        h(
          'li',
          { class: m.accepted ? 'chip accepted' : 'chip waiting', title: m.title },
          m.accepted ? icon('check', 'chip-icon') : icon('clock', 'chip-icon'),
          h('span', { text: m.text }),
          h('span', { class: 'sr-only', text: m.accepted ? ' (accepted)' : ' (waiting)' }),
        ),
      ),
    ),
    h(
      'p',
      { class: 'circle-meta' },
      h('span', { class: 'raw circle-state', 'aria-hidden': 'true', text: c.state }),
      // The badge shows the state when there is no health yet: no need to say it twice.
      health ? h('span', { class: 'circle-state-label', text: `${state.label} · ` }) : null,
      h('span', { text: meta }),
    ),
    // A circle this account is still in can be shared by its link.
    isPastCircle(c.state) ? null : shareBlock(ctx, c),
    detailsBox([['Circle record', c.uri]]),
  );
  // The whole card opens the dashboard (the name is the button for keyboards and readers).
  card.addEventListener('click', (e) => {
    const t = e.target;
    if (t instanceof Element && t.closest('button, a, summary, details, input, label')) return;
    if (window.getSelection()?.toString()) return;
    ctx.openHealth(c.uri);
  });
  return card;
}

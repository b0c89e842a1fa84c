// Invitation links: "Copy invitation link" and "Show as QR code" on a circle's card, the QR
// code's dialog, and the "I have an invitation link" forms (the first screen's and the Circles
// screen's). The engine makes and checks every link; this only shows what it says.

import { api, errorText } from '../api.js';
import { busy, byId, h } from '../dom.js';
import { cleanLink, copyText, importSvg, linkCircleUri, linkErrorText, openedText, waitingHint } from '../invite.js';
import { setError } from './common.js';

/** @typedef {import('../ctx.js').Ctx} Ctx */
/** @typedef {import('../../types').CircleCard} CircleCard */

/** The links fetched for circles, by circle: shown under the buttons once asked for. */
/** @type {Map<string, { link: string, copied: boolean }>} */
const shared = new Map();

/** The invitation or circle a link just opened, marked for a while so the eye finds it. */
let marked = { uri: '', until: 0 };

/**
 * Whether a card (invitation or circle) is the one a link just opened.
 * @param {string} uri
 * @returns {boolean}
 */
export function highlighted(uri) {
  return marked.uri === uri && Date.now() < marked.until;
}

/**
 * The card of `uri` in the Circles screen, if shown.
 * @param {string} selector `.invitation-card` or `.circle-card`
 * @param {string} uri
 * @returns {HTMLElement | null}
 */
function cardOf(selector, uri) {
  for (const el of document.querySelectorAll(selector)) {
    if (el instanceof HTMLElement && el.dataset.uri === uri) return el;
  }
  return null;
}

/**
 * The circle's link, asked of the engine once per window.
 * @param {string} uri
 * @returns {Promise<string>}
 */
async function linkFor(uri) {
  const known = shared.get(uri);
  return known ? known.link : api.invitationLink(uri);
}

/**
 * The share buttons of a circle this account is in, with the link under them once asked for
 * (selected for copying by hand when the clipboard refused it).
 * @param {Ctx} ctx
 * @param {CircleCard} c
 * @returns {HTMLElement}
 */
export function shareBlock(ctx, c) {
  const key = `share:${c.uri}`;
  const err = ctx.state.errors.get(key) ?? null;
  const done = shared.get(c.uri);
  const copy = h(
    'button',
    { class: 'btn btn-secondary share-link', type: 'button', 'data-focus': 'share-link' },
    h('span', { class: 'btn-label', text: 'Copy invitation link' }),
  );
  const qr = h(
    'button',
    { class: 'btn btn-secondary share-qr', type: 'button', 'data-focus': 'share-qr' },
    h('span', { class: 'btn-label', text: 'Show as QR code' }),
  );
  copy.addEventListener('click', async () => {
    ctx.state.errors.delete(key);
    try {
      const link = await busy(copy, 'Copying…', () => linkFor(c.uri));
      const copied = await copyText(link, navigator.clipboard);
      shared.set(c.uri, { link, copied });
      ctx.render();
      const field = cardOf('.circle-card', c.uri)?.querySelector('.share-link-field');
      if (!copied && field instanceof HTMLInputElement) {
        field.focus();
        field.select();
      }
    } catch (e) {
      ctx.state.errors.set(key, errorText(e));
      ctx.render();
    }
  });
  qr.addEventListener('click', async () => {
    ctx.state.errors.delete(key);
    try {
      await busy(qr, 'Drawing…', async () => {
        const link = await linkFor(c.uri);
        const svg = await api.invitationQr(link);
        if (!shared.has(c.uri)) shared.set(c.uri, { link, copied: false });
        showQr(c.name, link, svg);
      });
    } catch (e) {
      ctx.state.errors.set(key, errorText(e));
      ctx.render();
    }
  });
  /** @type {HTMLInputElement | null} */
  let field = null;
  if (done) {
    const f = h('input', {
      class: 'share-link-field mono',
      type: 'text',
      readonly: true,
      spellcheck: 'false',
      'aria-label': 'Invitation link',
    });
    // An attribute, not the property: a card redrawn with the same link stays the same node.
    f.setAttribute('value', done.link);
    f.addEventListener('focus', () => f.select());
    field = f;
  }
  const hint = waitingHint(c);
  return h(
    'div',
    { class: 'share' },
    hint ? h('p', { class: 'hint share-hint', text: hint }) : null,
    h('div', { class: 'share-actions' }, copy, qr),
    done
      ? h('p', {
          class: 'share-note',
          role: 'status',
          text: done.copied
            ? 'Copied. Send it by chat or email to the people in the circle: it brings them the invitation.'
            : 'It could not be copied by itself: the link is selected below. Copy it (Ctrl+C, or ⌘C on a Mac) and send it by chat or email.',
        })
      : null,
    field,
    err ? h('p', { class: 'form-error', role: 'alert', text: err }) : null,
  );
}

/**
 * Opens the QR code's dialog.
 * @param {string} name the circle's name
 * @param {string} link
 * @param {string} svg the engine's SVG document
 */
function showQr(name, link, svg) {
  const dialog = byId('qr-dialog', HTMLDialogElement);
  const node = importSvg(
    svg,
    (m) => new DOMParser().parseFromString(m, 'image/svg+xml'),
    (n) => document.importNode(/** @type {Node} */ (/** @type {unknown} */ (n)), true),
  );
  byId('qr-title', HTMLElement).textContent = `Invitation to “${name}”`;
  byId('qr-code', HTMLElement).replaceChildren(node);
  const field = byId('qr-link', HTMLInputElement);
  field.value = link;
  dialog.showModal();
  byId('qr-close', HTMLButtonElement).focus();
}

/**
 * Binds the QR code's dialog (once, at start).
 */
export function initQr() {
  const dialog = byId('qr-dialog', HTMLDialogElement);
  byId('qr-close', HTMLButtonElement).addEventListener('click', () => dialog.close());
  const field = byId('qr-link', HTMLInputElement);
  field.addEventListener('focus', () => field.select());
  dialog.addEventListener('close', () => byId('qr-code', HTMLElement).replaceChildren());
}

/**
 * Binds an "I have an invitation link" form: the link goes to the engine, which reads the
 * circle from its author's account; an open invitation is then shown on the Circles screen,
 * marked. A refusal stays beside the field (with what was pasted) until the field changes.
 * @param {Ctx} ctx
 * @param {{ form: string, input: string, submit: string, error: string, note: string }} ids
 * @param {'welcome' | 'circles'} where
 */
export function bindLinkForm(ctx, ids, where) {
  const form = byId(ids.form, HTMLFormElement);
  const input = byId(ids.input, HTMLInputElement);
  const submit = byId(ids.submit, HTMLButtonElement);
  const error = byId(ids.error, HTMLElement);
  const note = byId(ids.note, HTMLElement);
  input.addEventListener('input', () => {
    setError(error, null);
    note.hidden = true;
  });
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    note.hidden = true;
    const link = cleanLink(input.value);
    if (!link) {
      setError(error, 'Paste the invitation link you were sent first.', input);
      return;
    }
    setError(error, null);
    try {
      const o = await busy(submit, 'Opening…', () => api.openInvitationLink(link));
      const uri = linkCircleUri(link);
      const said = openedText(o, uri);
      if (uri) marked = { uri, until: Date.now() + 6000 };
      input.value = '';
      note.textContent = said.text;
      note.hidden = false;
      ctx.setOverview(o);
      if (!o.welcomed) return;
      ctx.go('circles');
      // The Circles screen's own form says it too, where the person now looks.
      if (where === 'welcome') showNote(said.text);
      const card = uri ? cardOf(said.found === 'circle' ? '.circle-card' : '.invitation-card', uri) : null;
      if (card) {
        card.scrollIntoView({ block: 'center' });
        const target = card.querySelector(said.found === 'circle' ? 'button' : 'button.accept');
        if (target instanceof HTMLElement) target.focus();
      }
    } catch (err) {
      // Kept for after signing in: the Circles screen's field holds it then.
      if (where === 'welcome') byId('invite-link-input', HTMLInputElement).value = link;
      setError(error, linkErrorText(err, where), input);
    }
  });
}

/**
 * Shows `text` under the Circles screen's link field.
 * @param {string} text
 */
function showNote(text) {
  const note = byId('invite-link-note', HTMLElement);
  note.textContent = text;
  note.hidden = false;
}

/**
 * Opens an invitation link the system gave the app (a `p2pds:` link clicked in a chat or an
 * email), as if it was pasted: on the Circles screen once signed in, else on the first screen
 * (which says to sign in first and keeps the link for after).
 * @param {Ctx} ctx
 * @param {string} link
 */
export function openGivenLink(ctx, link) {
  const signedIn = Boolean(ctx.state.overview?.welcomed);
  if (signedIn) ctx.go('circles');
  const prefix = signedIn ? 'invite-link' : 'welcome-link';
  byId(`${prefix}-box`, HTMLDetailsElement).open = true;
  byId(`${prefix}-input`, HTMLInputElement).value = link;
  byId(`${prefix}-form`, HTMLFormElement).requestSubmit();
}

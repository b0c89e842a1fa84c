// Toasts (engine alerts, confirmations, errors that belong to no form) and the confirm dialog.

import { byId, h } from '../dom.js';
import { icon } from './common.js';

/** @typedef {import('../model.js').Tone} Tone */

/** @type {ReturnType<typeof setTimeout> | undefined} */
let errorTimer;

/**
 * Shows an error in the error toast (until dismissed, or 12 seconds).
 * @param {string} message
 */
export function showError(message) {
  const toast = byId('error-toast', HTMLElement);
  byId('error-toast-text', HTMLElement).textContent = message;
  toast.hidden = false;
  clearTimeout(errorTimer);
  errorTimer = setTimeout(hideError, 12_000);
}

export function hideError() {
  byId('error-toast', HTMLElement).hidden = true;
  byId('error-toast-text', HTMLElement).textContent = '';
}

/**
 * Shows a message toast; one with the same key replaces the one shown.
 * @param {string} title
 * @param {string} [body]
 * @param {Tone} [tone]
 * @param {string} [key]
 */
export function notify(title, body, tone = 'busy', key) {
  const box = byId('toasts', HTMLElement);
  if (key) {
    for (const t of box.querySelectorAll('.toast-message')) {
      if (t instanceof HTMLElement && t.dataset.key === key) t.remove();
    }
  }
  const close = h('button', { class: 'icon-btn', type: 'button', 'aria-label': 'Dismiss' }, icon('x'));
  const toast = h(
    'div',
    { class: 'toast toast-message', 'data-tone': tone, 'data-key': key ?? '' },
    icon(tone === 'ok' ? 'check' : tone === 'danger' || tone === 'warn' ? 'alert' : 'info', 'toast-icon'),
    h('div', { class: 'toast-body' }, h('p', { class: 'toast-title', text: title }), body ? h('p', { text: body }) : null),
    close,
  );
  const remove = () => toast.remove();
  close.addEventListener('click', remove);
  box.prepend(toast);
  // Keep a few; each goes after a while (alerts stay longer: they are worth reading).
  const all = box.querySelectorAll('.toast-message');
  for (let i = 4; i < all.length; i += 1) all[i].remove();
  setTimeout(remove, tone === 'ok' ? 5000 : 15_000);
}

export function initMessages() {
  byId('error-toast-close', HTMLButtonElement).addEventListener('click', hideError);
}

/**
 * Asks before something that can't be undone.
 * @param {{ title: string, body: string, confirm: string }} o
 * @returns {Promise<boolean>}
 */
export function confirm(o) {
  const dialog = byId('confirm-dialog', HTMLDialogElement);
  const form = byId('confirm-form', HTMLFormElement);
  const cancel = byId('confirm-cancel', HTMLButtonElement);
  byId('confirm-title', HTMLElement).textContent = o.title;
  byId('confirm-body', HTMLElement).textContent = o.body;
  byId('confirm-ok', HTMLButtonElement).textContent = o.confirm;
  return new Promise((resolve) => {
    /** @param {boolean} answer */
    const done = (answer) => {
      form.removeEventListener('submit', onSubmit);
      cancel.removeEventListener('click', onCancel);
      dialog.removeEventListener('close', onClose);
      if (dialog.open) dialog.close();
      resolve(answer);
    };
    /** @param {SubmitEvent} e */
    const onSubmit = (e) => {
      e.preventDefault();
      done(true);
    };
    const onCancel = () => done(false);
    const onClose = () => done(false);
    form.addEventListener('submit', onSubmit);
    cancel.addEventListener('click', onCancel);
    dialog.addEventListener('close', onClose);
    dialog.showModal();
    cancel.focus();
  });
}

// Giving a friend's account back on a new server: which version, where to, the run with its
// progress (engine events), and what was restored and what is left to do.

import { api, errorText } from '../api.js';
import { byId, h } from '../dom.js';
import { restoreResultView, restoreStepView, versionLabel } from '../model.js';
import { checkRestore } from '../validate.js';
import { setError } from './common.js';

/** @typedef {import('../ctx.js').Ctx} Ctx */
/** @typedef {import('../../types').Friend} Friend */
/** @typedef {import('../../types').RestoreChoice} RestoreChoice */
/** @typedef {import('../../types').RestoreStep} RestoreStep */
/** @typedef {import('../validate.js').RestoreForm} RestoreForm */

/** The account the dialog is about, while it is open. */
/** @type {RestoreChoice | null} */
let choice = null;
/** A restore runs: the dialog can't be closed. */
let running = false;

const el = {
  dialog: () => byId('restore-dialog', HTMLDialogElement),
  form: () => byId('restore-form', HTMLFormElement),
  title: () => byId('restore-title', HTMLElement),
  steps: () => byId('restore-steps', HTMLElement),
  why: () => byId('restore-why', HTMLElement),
  lastGood: () => byId('restore-last-good', HTMLInputElement),
  earlier: () => byId('restore-earlier', HTMLInputElement),
  list: () => byId('restore-version-list', HTMLSelectElement),
  toPds: () => byId('restore-pds', HTMLInputElement),
  handle: () => byId('restore-handle', HTMLInputElement),
  password: () => byId('restore-password', HTMLInputElement),
  ownerDiffers: () => byId('restore-owner-differs', HTMLInputElement),
  oldField: () => byId('restore-old-field', HTMLElement),
  oldPassword: () => byId('restore-old-password', HTMLInputElement),
  email: () => byId('restore-email', HTMLInputElement),
  invite: () => byId('restore-invite', HTMLInputElement),
  code: () => byId('restore-code', HTMLInputElement),
  recoveryKey: () => byId('restore-recovery-key', HTMLInputElement),
  running: () => byId('restore-running', HTMLElement),
  phase: () => byId('restore-phase', HTMLElement),
  bar: () => byId('restore-bar', HTMLElement),
  result: () => byId('restore-result', HTMLElement),
  error: () => byId('restore-error', HTMLElement),
  cancel: () => byId('restore-cancel', HTMLButtonElement),
  submit: () => byId('restore-submit', HTMLButtonElement),
};

/** @type {Record<string, () => HTMLElement>} */
const FIELDS = {
  toPds: el.toPds,
  handle: el.handle,
  password: el.password,
  oldPassword: el.oldPassword,
  email: el.email,
  recoveryKey: el.recoveryKey,
};

/**
 * @param {Ctx} ctx
 */
export function initRestore(ctx) {
  const syncVersion = () => {
    el.list().disabled = !el.earlier().checked;
  };
  el.lastGood().addEventListener('change', syncVersion);
  el.earlier().addEventListener('change', syncVersion);
  el.ownerDiffers().addEventListener('change', () => {
    el.oldField().hidden = !el.ownerDiffers().checked;
    if (el.ownerDiffers().checked) el.oldPassword().focus();
  });
  el.cancel().addEventListener('click', () => {
    if (!running) el.dialog().close();
  });
  el.dialog().addEventListener('cancel', (e) => {
    if (running) e.preventDefault();
  });
  el.dialog().addEventListener('close', clearSecrets);
  el.form().addEventListener('submit', async (e) => {
    e.preventDefault();
    if (!choice || running) return;
    if (!el.result().hidden) {
      el.dialog().close();
      return;
    }
    const checked = checkRestore(readForm(choice));
    if (!checked.ok) {
      const field = checked.field ? FIELDS[checked.field]?.() : null;
      // A field under "More options" is shown before it is pointed at.
      const more = field?.closest('details');
      if (more) more.open = true;
      setError(el.error(), checked.error, field ?? null);
      return;
    }
    setError(el.error(), null);
    running = true;
    el.steps().hidden = true;
    el.running().hidden = false;
    el.cancel().disabled = true;
    el.submit().disabled = true;
    showStep({ phase: 'preparing', bytes: 0, imagesDone: 0, imagesTotal: 0 });
    try {
      const outcome = await api.restoreAccount(checked.value);
      clearSecrets();
      const v = restoreResultView(outcome);
      el.title().textContent = v.title;
      el.result().replaceChildren(
        h(
          'div',
          null,
          h('p', { text: v.restored }),
          v.missing.length
            ? h('div', null, h('h3', { text: 'Not brought back' }), h('ul', null, v.missing.map((m) => h('li', { text: m }))))
            : null,
          v.steps.length
            ? h('div', null, h('h3', { text: 'What is left to do' }), h('ol', null, v.steps.map((s) => h('li', { text: s }))))
            : null,
        ),
      );
      el.result().hidden = false;
      el.running().hidden = true;
      el.submit().textContent = 'Done';
      ctx.refresh().catch(() => {});
    } catch (err) {
      // Shown whole: some (the identity step) explain what to do at length.
      el.running().hidden = true;
      el.steps().hidden = false;
      setError(el.error(), errorText(err));
    } finally {
      running = false;
      el.cancel().disabled = false;
      el.submit().disabled = false;
    }
  });
}

/**
 * Opens the dialog for a friend's account.
 * @param {Ctx} ctx
 * @param {Friend} friend
 */
export async function openRestore(ctx, friend) {
  if (running) return;
  let c;
  try {
    c = await api.restoreChoice(friend.did);
  } catch (err) {
    ctx.showError(errorText(err));
    return;
  }
  choice = c;
  el.title().textContent = `Give ${c.name}'s account back`;
  el.why().textContent = `${versionLabel(c.suggested)}. ${c.why}`;
  el.list().replaceChildren(...c.versions.map((v) => h('option', { value: v.rev, text: versionLabel(v) })));
  el.list().value = c.suggested.rev;
  el.lastGood().checked = true;
  el.list().disabled = true;
  el.earlier().disabled = c.versions.length < 2;
  for (const f of [el.toPds(), el.handle(), el.email(), el.invite(), el.code()]) f.value = '';
  el.ownerDiffers().checked = false;
  el.oldField().hidden = true;
  clearSecrets();
  setError(el.error(), null);
  el.steps().hidden = false;
  el.running().hidden = true;
  el.result().hidden = true;
  el.result().replaceChildren();
  el.submit().textContent = 'Give it back';
  el.dialog().showModal();
  el.toPds().focus();
}

/**
 * A restore's progress, from the engine's events.
 * @param {string} did
 * @param {RestoreStep} step
 */
export function updateRestore(did, step) {
  if (!running || choice?.did !== did) return;
  showStep(step);
}

/**
 * @param {RestoreStep} step
 */
function showStep(step) {
  const v = restoreStepView(step);
  el.phase().textContent = v.label;
  const bar = el.bar();
  const fill = bar.querySelector('.bar-fill');
  bar.classList.toggle('indeterminate', v.fraction == null);
  if (fill instanceof HTMLElement) fill.style.width = v.fraction == null ? '' : `${(v.fraction * 100).toFixed(1)}%`;
}

/** Passwords leave the page as soon as they are not needed. */
function clearSecrets() {
  el.password().value = '';
  el.oldPassword().value = '';
}

/**
 * @param {RestoreChoice} c
 * @returns {RestoreForm}
 */
function readForm(c) {
  return {
    did: c.did,
    rev: el.earlier().checked ? el.list().value || null : null,
    toPds: el.toPds().value,
    handle: el.handle().value,
    password: el.password().value,
    ownerPasswordDiffers: el.ownerDiffers().checked,
    oldPassword: el.oldPassword().value,
    email: el.email().value,
    inviteCode: el.invite().value,
    plcToken: el.code().value,
    recoveryKey: el.recoveryKey().value,
  };
}

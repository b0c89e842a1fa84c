// Settings: the account (sign in or out), where the copies are kept (moving them, deleting the
// copy a move left behind), storage, backups, serving to friends.

import { api, errorText } from '../api.js';
import { busy, byId } from '../dom.js';
import {
  accountInfo,
  deleteOldCopyDialog,
  locationInfo,
  moveDialog,
  movedText,
  moveProgressText,
  recoveryKeyView,
} from '../model.js';
import { checkMoveTarget, checkSettings, folderExample, settingsToForm } from '../validate.js';
import { setError } from './common.js';
import { bindSignIn } from './welcome.js';

/** @typedef {import('../ctx.js').Ctx} Ctx */
/** @typedef {import('../../types').Settings} Settings */
/** @typedef {import('../../types').MoveProgress} MoveProgress */
/** @typedef {import('../../types').RecoveryKeyStatus} RecoveryKeyStatus */
/** @typedef {import('../validate.js').SettingsForm} SettingsForm */

/** The settings as loaded (the form edits a copy). */
/** @type {Settings | null} */
let loaded = null;
/** The form was changed since it was filled. */
let dirty = false;
/** A move runs (or finished: the app is restarting). */
let moving = false;

const fields = {
  limitGb: () => byId('settings-limit', HTMLInputElement),
  retentionDays: () => byId('settings-retention', HTMLInputElement),
  checkEveryMinutes: () => byId('settings-check-every', HTMLInputElement),
  startAtLogin: () => byId('settings-start-login', HTMLInputElement),
  pauseOnBattery: () => byId('settings-pause-battery', HTMLInputElement),
  serve: () => byId('settings-serve', HTMLInputElement),
  listen: () => byId('settings-listen', HTMLInputElement),
  endpoint: () => byId('settings-endpoint', HTMLInputElement),
};

/**
 * @param {Ctx} ctx
 */
export function initSettings(ctx) {
  const form = byId('settings-form', HTMLFormElement);
  const error = byId('settings-error', HTMLElement);
  const status = byId('settings-status', HTMLElement);
  const save = byId('settings-save', HTMLButtonElement);
  form.addEventListener('input', () => {
    dirty = true;
    status.textContent = '';
    syncServeFields();
  });
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    if (!loaded) {
      setError(error, 'The settings could not be read, so there is nothing to save yet. Try again in a moment.');
      loadSettings(ctx);
      return;
    }
    const checked = checkSettings(loaded, readForm());
    if (!checked.ok) {
      const key = /** @type {keyof typeof fields | undefined} */ (checked.field);
      setError(error, checked.error, key && key in fields ? fields[key]() : null);
      return;
    }
    setError(error, null);
    try {
      const saved = await busy(save, 'Saving…', () => api.saveSettings(checked.value));
      loaded = saved;
      dirty = false;
      fillForm(saved);
      status.textContent = 'Saved';
      // A new number of days changes what can be freed.
      loadReclaim();
      ctx.refresh().catch(() => {});
    } catch (err) {
      setError(error, errorText(err));
    }
  });

  initLocation(ctx);
  initReclaim(ctx);
  initRecovery();

  bindSignIn(ctx, {
    form: 'account-form',
    handle: 'account-handle',
    password: 'account-password',
    submit: 'account-submit',
    error: 'account-error',
  });
  const signOut = byId('sign-out', HTMLButtonElement);
  signOut.addEventListener('click', async () => {
    const ok = await ctx.confirm({
      title: 'Sign out?',
      body: 'Your friends’ copies stay on this computer and keep being backed up. Circles need you signed in, and your app password is removed from the keyring.',
      confirm: 'Sign out',
    });
    if (!ok) return;
    try {
      ctx.setOverview(await busy(signOut, 'Signing out…', () => api.signOut()));
    } catch (err) {
      ctx.showError(errorText(err));
    }
  });
}

/**
 * The storage location: moving the copies, and deleting the copy a move left behind.
 * @param {Ctx} ctx
 */
function initLocation(ctx) {
  const form = byId('move-form', HTMLFormElement);
  const input = byId('move-input', HTMLInputElement);
  const submit = byId('move-submit', HTMLButtonElement);
  const error = byId('move-error', HTMLElement);
  const status = byId('move-status', HTMLElement);
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    if (!loaded || moving) return;
    const checked = checkMoveTarget(loaded, input.value);
    if (!checked.ok) {
      setError(error, checked.error, input);
      return;
    }
    setError(error, null);
    const ok = await ctx.confirm(moveDialog(loaded.dataDir, checked.value));
    if (!ok) return;
    moving = true;
    input.disabled = true;
    status.textContent = 'Getting ready to move…';
    try {
      const report = await busy(submit, 'Moving…', () => api.moveStorage(checked.value));
      status.textContent = movedText(report);
      submit.disabled = true;
    } catch (err) {
      moving = false;
      input.disabled = false;
      status.textContent = '';
      setError(error, errorText(err), input);
    }
  });

  const del = byId('old-copy-delete', HTMLButtonElement);
  const delError = byId('old-copy-error', HTMLElement);
  del.addEventListener('click', async () => {
    const old = loaded?.oldDataDir;
    if (!loaded || !old) return;
    const ok = await ctx.confirm(deleteOldCopyDialog(old));
    if (!ok) return;
    setError(delError, null);
    try {
      const s = await busy(del, 'Deleting…', () => api.deleteOldCopy());
      if (loaded) loaded = { ...loaded, oldDataDir: s.oldDataDir };
      if (loaded) fillLocation(loaded);
      ctx.notify('The old copy was deleted', undefined, 'ok');
    } catch (err) {
      setError(delError, errorText(err));
    }
  });
}

/**
 * Old versions no longer needed: how much collecting them frees, and "Free it now".
 * @param {Ctx} ctx
 */
function initReclaim(ctx) {
  const run = byId('reclaim-run', HTMLButtonElement);
  const text = byId('reclaim-text', HTMLElement);
  const error = byId('reclaim-error', HTMLElement);
  run.addEventListener('click', async () => {
    setError(error, null);
    try {
      const done = await busy(run, 'Freeing…', () => api.collectGarbage());
      text.textContent = done.text;
      run.disabled = true;
      ctx.refresh().catch(() => {});
    } catch (err) {
      setError(error, errorText(err));
    }
  });
}

/** Asks the engine what collecting old versions would free (when Settings opens). */
async function loadReclaim() {
  const run = byId('reclaim-run', HTMLButtonElement);
  const text = byId('reclaim-text', HTMLElement);
  text.textContent = 'Looking…';
  run.disabled = true;
  try {
    const plan = await api.reclaimable();
    text.textContent = plan.text;
    run.disabled = plan.bytes === 0;
  } catch (err) {
    text.textContent = errorText(err);
  }
}

/**
 * Shows a move's progress (from the engine's events).
 * @param {MoveProgress} p
 */
export function updateMoveProgress(p) {
  if (!moving) return;
  byId('move-status', HTMLElement).textContent = moveProgressText(p);
}

/**
 * The location part of the form.
 * @param {Settings} s
 */
function fillLocation(s) {
  const info = locationInfo(s);
  byId('settings-data-dir', HTMLOutputElement).value = s.dataDir;
  const fixed = byId('location-fixed', HTMLElement);
  fixed.textContent = info.fixedNote ?? '';
  fixed.hidden = !info.fixedNote;
  const input = byId('move-input', HTMLInputElement);
  input.placeholder = folderExample(s.dataDir);
  input.disabled = !info.canMove || moving;
  byId('move-submit', HTMLButtonElement).disabled = !info.canMove || moving;
  byId('old-copy-text', HTMLElement).textContent = info.oldCopy ?? '';
  byId('old-copy', HTMLElement).hidden = !info.oldCopy;
}

/**
 * Loads the settings into the form, unless the person is editing it.
 * @param {Ctx} ctx
 * @returns {Promise<void>}
 */
export async function loadSettings(ctx) {
  loadReclaim();
  if (dirty) return;
  try {
    const s = await api.getSettings();
    if (dirty) return;
    loaded = s;
    fillForm(s);
    setError(byId('settings-error', HTMLElement), null);
  } catch (e) {
    ctx.showError(errorText(e));
  }
}

/** The recovery key as last shown (null: not read yet, or signed out). */
/** @type {RecoveryKeyStatus | null} */
let recovery = null;
/** Whether the recovery form was opened with "Set up". */
let recoveryOpen = false;
/** The identity permission was given in the browser: no main password is asked for. */
let allowedInBrowser = false;

/**
 * "Protect your account": a recovery key, set up in two steps (the server emails a code).
 */
function initRecovery() {
  const form = byId('recovery-form', HTMLFormElement);
  const password = byId('recovery-password', HTMLInputElement);
  const code = byId('recovery-code', HTMLInputElement);
  const submit = byId('recovery-submit', HTMLButtonElement);
  const error = byId('recovery-error', HTMLElement);
  const allowBtn = byId('recovery-browser', HTMLButtonElement);
  const waiting = byId('recovery-waiting', HTMLElement);
  allowBtn.addEventListener('click', async () => {
    setError(error, null);
    try {
      const started = await busy(allowBtn, 'Opening your server’s page…', () => api.startRecoveryConsent());
      byId('recovery-url', HTMLElement).textContent = started.url;
      form.hidden = true;
      waiting.hidden = false;
      const status = await api.finishRecoveryConsent();
      allowedInBrowser = true;
      waiting.hidden = true;
      showRecovery(status);
    } catch (err) {
      waiting.hidden = true;
      form.hidden = false;
      setError(error, errorText(err));
    }
  });
  byId('recovery-cancel', HTMLButtonElement).addEventListener('click', () => {
    // The waiting consent then fails with "cancelled", said above.
    api.cancelRecoveryConsent();
  });
  byId('recovery-start', HTMLButtonElement).addEventListener('click', () => {
    recoveryOpen = true;
    if (recovery) showRecovery(recovery);
    password.focus();
  });
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    if (!password.value && !allowedInBrowser) {
      setError(error, 'Type your main password (the one you sign in to Bluesky with, not an app password).', password);
      return;
    }
    const withCode = recovery?.state === 'code-sent';
    if (withCode && !code.value.trim()) {
      setError(error, 'Type the confirmation code from the email your server sent.', code);
      return;
    }
    setError(error, null);
    try {
      const label = withCode ? 'Adding…' : 'Asking your server…';
      const status = await busy(submit, label, () => api.addRecoveryKey(password.value, withCode ? code.value.trim() : null));
      if (status.state === 'registered') {
        password.value = '';
        code.value = '';
        recoveryOpen = false;
        allowedInBrowser = false;
      }
      showRecovery(status);
    } catch (err) {
      setError(error, errorText(err));
    }
  });
}

/** Reads the recovery key's status and shows it. */
async function loadRecovery() {
  try {
    showRecovery(await api.recoveryKeyStatus());
  } catch (err) {
    byId('recovery-text', HTMLElement).textContent = errorText(err);
  }
}

/**
 * @param {RecoveryKeyStatus} status
 */
function showRecovery(status) {
  recovery = status;
  const v = recoveryKeyView(status);
  byId('recovery-text', HTMLElement).textContent = v.text;
  const start = byId('recovery-start', HTMLButtonElement);
  start.textContent = v.start ?? '';
  start.hidden = !v.start || recoveryOpen;
  byId('recovery-form', HTMLFormElement).hidden = !(v.form || (recoveryOpen && v.start));
  byId('recovery-code-field', HTMLElement).hidden = !v.codeField;
  // Allowed in the browser: the code is all that is left to type.
  byId('recovery-allow', HTMLElement).hidden = allowedInBrowser || v.codeField;
  byId('recovery-password-field', HTMLElement).hidden = allowedInBrowser;
  byId('recovery-password-hint', HTMLElement).hidden = allowedInBrowser;
  byId('recovery-submit', HTMLButtonElement).textContent = v.submit;
  const key = byId('recovery-key', HTMLElement);
  key.textContent = v.key ?? '';
  key.hidden = !v.key;
}

/**
 * The account part, from the overview.
 * @param {Ctx} ctx
 */
export function renderAccount(ctx) {
  const o = ctx.state.overview;
  if (!o) return;
  const info = accountInfo(o);
  byId('account-text', HTMLElement).textContent = info.text;
  byId('sign-out', HTMLButtonElement).hidden = !info.signedIn;
  byId('account-form', HTMLFormElement).hidden = info.signedIn;
  byId('recovery', HTMLElement).hidden = !info.signedIn;
  if (!info.signedIn) {
    recovery = null;
  } else if (!recovery) {
    recovery = { state: 'unknown', text: 'Checking…', code: null };
    byId('recovery-text', HTMLElement).textContent = recovery.text;
    loadRecovery();
  }
}

/**
 * @param {Settings} s
 */
function fillForm(s) {
  const f = settingsToForm(s);
  fillLocation(s);
  fields.limitGb().value = f.limitGb;
  fields.retentionDays().value = f.retentionDays;
  fields.checkEveryMinutes().value = f.checkEveryMinutes;
  fields.startAtLogin().checked = f.startAtLogin;
  fields.pauseOnBattery().checked = f.pauseOnBattery;
  fields.serve().checked = f.serve;
  fields.listen().value = f.listen;
  fields.endpoint().value = f.endpoint;
  syncServeFields();
}

/** @returns {SettingsForm} */
function readForm() {
  return {
    limitGb: fields.limitGb().value,
    retentionDays: fields.retentionDays().value,
    checkEveryMinutes: fields.checkEveryMinutes().value,
    startAtLogin: fields.startAtLogin().checked,
    pauseOnBattery: fields.pauseOnBattery().checked,
    serve: fields.serve().checked,
    listen: fields.listen().value,
    endpoint: fields.endpoint().value,
  };
}

/** The address fields only matter while serving. */
function syncServeFields() {
  const on = fields.serve().checked;
  byId('serve-fields', HTMLElement).dataset.off = String(!on);
  fields.listen().disabled = !on;
  fields.endpoint().disabled = !on;
}

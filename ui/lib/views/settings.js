// Settings: the account (sign in or out), storage, backups, serving to friends.

import { api, errorText } from '../api.js';
import { busy, byId } from '../dom.js';
import { accountInfo } from '../model.js';
import { checkSettings, settingsToForm } from '../validate.js';
import { setError } from './common.js';
import { bindSignIn } from './welcome.js';

/** @typedef {import('../ctx.js').Ctx} Ctx */
/** @typedef {import('../../types').Settings} Settings */
/** @typedef {import('../validate.js').SettingsForm} SettingsForm */

/** The settings as loaded (the form edits a copy). */
/** @type {Settings | null} */
let loaded = null;
/** The form was changed since it was filled. */
let dirty = false;

const fields = {
  limitGb: () => byId('settings-limit', HTMLInputElement),
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
      ctx.refresh().catch(() => {});
    } catch (err) {
      setError(error, errorText(err));
    }
  });

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
 * Loads the settings into the form, unless the person is editing it.
 * @param {Ctx} ctx
 * @returns {Promise<void>}
 */
export async function loadSettings(ctx) {
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
}

/**
 * @param {Settings} s
 */
function fillForm(s) {
  const f = settingsToForm(s);
  byId('settings-data-dir', HTMLOutputElement).value = s.dataDir;
  fields.limitGb().value = f.limitGb;
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

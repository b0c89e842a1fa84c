// First run: sign in with Bluesky in the browser (or with an app password), or skip.

import { api, errorText } from '../api.js';
import { busy, byId } from '../dom.js';
import { checkSignIn } from '../validate.js';
import { clearWhenEdited, setError } from './common.js';
import { bindLinkForm } from './invite.js';

/** @typedef {import('../ctx.js').Ctx} Ctx */

/**
 * Binds a sign-in form (the welcome's, or the one in Settings).
 * @param {Ctx} ctx
 * @param {{ form: string, handle: string, password: string, submit: string, error: string }} ids
 */
export function bindSignIn(ctx, ids) {
  const form = byId(ids.form, HTMLFormElement);
  const handle = byId(ids.handle, HTMLInputElement);
  const password = byId(ids.password, HTMLInputElement);
  const submit = byId(ids.submit, HTMLButtonElement);
  const error = byId(ids.error, HTMLElement);
  clearWhenEdited(error, handle, password);
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    const checked = checkSignIn(handle.value, password.value);
    if (!checked.ok) {
      setError(error, checked.error, checked.field === 'password' ? password : handle);
      return;
    }
    setError(error, null);
    try {
      const o = await busy(submit, 'Signing in…', () => api.signIn(checked.value.handle, checked.value.password));
      password.value = '';
      ctx.setOverview(o);
    } catch (err) {
      setError(error, errorText(err), signInField(err, handle, password));
    }
  });
}

/**
 * The first screen's form: "Sign in with Bluesky" opens the server's page in the browser and
 * waits (with the address shown and a cancel button); "Use an app password instead" switches
 * to the app-password form.
 * @param {Ctx} ctx
 */
function bindBrowserSignIn(ctx) {
  const form = byId('signin-form', HTMLFormElement);
  const handle = byId('signin-handle', HTMLInputElement);
  const password = byId('signin-password', HTMLInputElement);
  const passwordField = byId('signin-password-field', HTMLElement);
  const browser = byId('signin-browser', HTMLButtonElement);
  const submit = byId('signin-submit', HTMLButtonElement);
  const mode = byId('signin-mode', HTMLButtonElement);
  const error = byId('signin-error', HTMLElement);
  const waiting = byId('signin-waiting', HTMLElement);
  const url = byId('signin-url', HTMLElement);
  const cancel = byId('signin-cancel', HTMLButtonElement);
  const skipBox = byId('skip-signin-box', HTMLElement);
  let withPassword = false;
  const showMode = () => {
    passwordField.hidden = !withPassword;
    submit.hidden = !withPassword;
    browser.hidden = withPassword;
    mode.textContent = withPassword ? 'Sign in with Bluesky instead' : 'Use an app password instead';
  };
  mode.addEventListener('click', () => {
    withPassword = !withPassword;
    setError(error, null);
    showMode();
  });
  clearWhenEdited(error, handle, password);
  /** @param {boolean} on */
  const showWaiting = (on) => {
    form.hidden = on;
    skipBox.hidden = on;
    waiting.hidden = !on;
  };
  cancel.addEventListener('click', async () => {
    // The waiting sign-in then fails with "cancelled", said below.
    await api.cancelBrowserSignIn();
  });
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    const checked = checkSignIn(handle.value, withPassword ? password.value : '-');
    if (!checked.ok) {
      setError(error, checked.error, checked.field === 'password' ? password : handle);
      return;
    }
    setError(error, null);
    if (withPassword) {
      try {
        const o = await busy(submit, 'Signing in…', () => api.signIn(checked.value.handle, checked.value.password));
        password.value = '';
        ctx.setOverview(o);
      } catch (err) {
        setError(error, errorText(err), signInField(err, handle, password));
      }
      return;
    }
    try {
      const started = await busy(browser, 'Opening your server’s page…', () => api.startBrowserSignIn(checked.value.handle));
      url.textContent = started.url;
      showWaiting(true);
      const o = await api.finishBrowserSignIn();
      showWaiting(false);
      ctx.setOverview(o);
    } catch (err) {
      showWaiting(false);
      setError(error, errorText(err), handle);
    }
  });
  showMode();
}

/**
 * The field a failed sign-in points at, from the error's code: the password when the server
 * refused the sign-in (`sign-in-refused`), the handle otherwise (an account nobody has is
 * `invalid`, no network is `network`).
 * @template T
 * @param {unknown} err
 * @param {T} handle
 * @param {T} password
 * @returns {T}
 */
export function signInField(err, handle, password) {
  const code = err && typeof err === 'object' && 'code' in err ? err.code : null;
  return code === 'sign-in-refused' ? password : handle;
}

/**
 * @param {Ctx} ctx
 */
export function initWelcome(ctx) {
  bindBrowserSignIn(ctx);
  bindLinkForm(
    ctx,
    { form: 'welcome-link-form', input: 'welcome-link-input', submit: 'welcome-link-open', error: 'welcome-link-error', note: 'welcome-link-note' },
    'welcome',
  );
  const skip = byId('skip-signin', HTMLButtonElement);
  skip.addEventListener('click', async () => {
    const error = byId('signin-error', HTMLElement);
    setError(error, null);
    try {
      ctx.setOverview(await busy(skip, 'One moment…', () => api.skipSignIn()));
    } catch (err) {
      setError(error, errorText(err));
    }
  });
}

// First run: sign in with an app password, or skip.

import { api, errorText } from '../api.js';
import { busy, byId } from '../dom.js';
import { checkSignIn } from '../validate.js';
import { setError } from './common.js';

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
      setError(error, errorText(err), password);
    }
  });
}

/**
 * @param {Ctx} ctx
 */
export function initWelcome(ctx) {
  bindSignIn(ctx, {
    form: 'signin-form',
    handle: 'signin-handle',
    password: 'signin-password',
    submit: 'signin-submit',
    error: 'signin-error',
  });
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

// Form errors: the field a sign-in error points at (from its code, never its words), and an
// error that goes away once the field it is about is edited. A few stand-in elements play the
// form (no browser here): just what `setError` and `clearWhenEdited` touch.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { clearWhenEdited, setError } from '../../ui/lib/views/common.js';
import { signInField } from '../../ui/lib/views/welcome.js';

/** A stand-in input or paragraph: attributes, `dataset`, `hidden`, listeners, focus. */
function element(id = '') {
  /** @type {Map<string, string>} */
  const attrs = new Map();
  /** @type {Map<string, (() => void)[]>} */
  const listeners = new Map();
  const el = {
    id,
    hidden: true,
    textContent: '',
    dataset: /** @type {Record<string, string>} */ ({}),
    focused: false,
    form: /** @type {any} */ (null),
    setAttribute: (/** @type {string} */ k, /** @type {string} */ v) => attrs.set(k, v),
    removeAttribute: (/** @type {string} */ k) => attrs.delete(k),
    getAttribute: (/** @type {string} */ k) => attrs.get(k) ?? null,
    hasAttribute: (/** @type {string} */ k) => attrs.has(k),
    focus: () => {
      el.focused = true;
    },
    closest: () => el.form,
    addEventListener: (/** @type {string} */ type, /** @type {() => void} */ fn) => {
      listeners.set(type, [...(listeners.get(type) ?? []), fn]);
    },
    /** The person types in it. */
    edit: () => (listeners.get('input') ?? []).forEach((fn) => fn()),
  };
  return el;
}

/** A sign-in form: handle, password, and the error paragraph. */
function signInForm() {
  const handle = element('signin-handle');
  const password = element('signin-password');
  const error = element('signin-error');
  const fields = [handle, password];
  const form = {
    querySelectorAll: (/** @type {string} */ sel) => {
      assert.equal(sel, '[aria-invalid]');
      return fields.filter((f) => f.hasAttribute('aria-invalid'));
    },
  };
  for (const el of [handle, password, error]) el.form = form;
  clearWhenEdited(/** @type {any} */ (error), /** @type {any} */ (handle), /** @type {any} */ (password));
  return { handle, password, error };
}

const invalid = (/** @type {{ getAttribute: (k: string) => string | null }} */ f) => f.getAttribute('aria-invalid') === 'true';

test('a failed sign-in outlines the field its code points at', () => {
  const cases = [
    // An account nobody has: the handle.
    [{ code: 'invalid', message: 'There is no Bluesky account called bob.bsky.social.' }, 'handle'],
    // Offline: the handle (it could not be looked up), not the password.
    [{ code: 'network', message: 'Couldn’t reach the internet to find alice.example.' }, 'handle'],
    // The server refused the password.
    [{ code: 'sign-in-refused', message: 'bob.bsky.social’s server refused the sign-in' }, 'password'],
    // Words that mention a password do not decide: the code does.
    [{ code: 'other', message: 'password' }, 'handle'],
    ['a plain string', 'handle'],
  ];
  for (const [err, want] of cases) {
    assert.equal(signInField(err, 'handle', 'password'), want, JSON.stringify(err));
  }
  const { handle, password, error } = signInForm();
  setError(/** @type {any} */ (error), 'There is no Bluesky account called bob.bsky.social.', /** @type {any} */ (signInField({ code: 'invalid' }, handle, password)));
  assert.ok(invalid(handle) && handle.focused);
  assert.ok(!invalid(password), 'the password is not marked when the handle is the problem');
});

test('editing the field an error is about clears it; editing another field does not', () => {
  const { handle, password, error } = signInForm();
  setError(/** @type {any} */ (error), 'There is no Bluesky account called bob.bsky.social.', /** @type {any} */ (handle));
  assert.equal(error.hidden, false);
  password.edit();
  assert.equal(error.hidden, false, 'still about the handle');
  assert.ok(invalid(handle));
  handle.edit();
  assert.equal(error.hidden, true, 'the fixed mistake no longer shows');
  assert.equal(error.textContent, '');
  assert.ok(!invalid(handle), 'and the field is no longer outlined');
});

test('an error about no field in particular clears when any field is edited', () => {
  const { handle, password, error } = signInForm();
  setError(/** @type {any} */ (error), 'Couldn’t reach the internet. Check your connection and try again.');
  password.edit();
  assert.equal(error.hidden, true);
  setError(/** @type {any} */ (error), 'The keyring is locked.');
  handle.edit();
  assert.equal(error.hidden, true);
});

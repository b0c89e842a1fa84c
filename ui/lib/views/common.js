// Pieces the views share.

import { h, s } from '../dom.js';
import { hueFor, initial } from '../format.js';

/** @typedef {import('../model.js').Tone} Tone */

/**
 * An icon from the sprite in index.html.
 * @param {string} name
 * @param {string} [extra] more classes
 * @returns {SVGSVGElement}
 */
export function icon(name, extra) {
  return s('svg', { class: extra ? `icon ${extra}` : 'icon', 'aria-hidden': 'true' }, s('use', { href: `#i-${name}` }));
}

/**
 * A round avatar with a person's initial, in a colour of their own.
 * @param {string} name
 * @param {string} [size] "small"
 * @returns {HTMLSpanElement}
 */
export function avatar(name, size) {
  const el = h('span', { class: size ? `avatar ${size}` : 'avatar', 'aria-hidden': 'true', text: initial(name) });
  el.style.setProperty('--hue', String(hueFor(name)));
  return el;
}

/**
 * A coloured badge with words; `raw` (for tests and tools) is kept in a hidden element of
 * class `rawClass` whose text is the state as the app names it ("at-risk").
 * @param {string} label
 * @param {Tone} tone
 * @param {string} [rawClass]
 * @param {string} [raw]
 * @returns {HTMLSpanElement}
 */
export function badge(label, tone, rawClass, raw) {
  return h(
    'span',
    { class: 'badge', 'data-tone': tone },
    rawClass && raw != null ? h('span', { class: `raw ${rawClass}`, 'aria-hidden': 'true', text: raw }) : null,
    h('span', { class: 'badge-dot', 'aria-hidden': 'true' }),
    h('span', { text: label }),
  );
}

/**
 * Shows or clears a form's error, marking the field it is about.
 * @param {HTMLElement} el the error paragraph
 * @param {string | null} message
 * @param {HTMLElement | null} [field]
 */
export function setError(el, message, field) {
  el.textContent = message ?? '';
  el.hidden = !message;
  const form = el.closest('form, article, section');
  form?.querySelectorAll('[aria-invalid]').forEach((f) => f.removeAttribute('aria-invalid'));
  // The field the error is about: editing that field clears it (see `clearWhenEdited`).
  el.dataset.field = message && field?.id ? field.id : '';
  if (message && field) {
    field.setAttribute('aria-invalid', 'true');
    field.focus();
  }
}

/**
 * Clears a form's error once the person edits the field it is about (any of `fields` when
 * the error names none): a fixed mistake no longer shows.
 * @param {HTMLElement} error the error paragraph
 * @param {...HTMLElement} fields
 */
export function clearWhenEdited(error, ...fields) {
  for (const field of fields) {
    field.addEventListener('input', () => {
      if (error.hidden) return;
      const about = error.dataset.field;
      if (!about || about === field.id) setError(error, null);
    });
  }
}

/**
 * A "details" disclosure for the identifiers people don't need (DIDs, addresses).
 * @param {[string, string][]} rows
 * @returns {HTMLDetailsElement}
 */
export function detailsBox(rows) {
  return h(
    'details',
    { class: 'details' },
    h('summary', { text: 'Details' }),
    h(
      'dl',
      null,
      rows.flatMap(([k, v]) => [h('dt', { text: k }), h('dd', { class: 'mono', text: v })]),
    ),
  );
}

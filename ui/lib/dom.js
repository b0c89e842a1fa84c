// Small helpers to build the DOM without HTML strings (names and texts come from the network:
// they only ever go into text nodes and attributes). Nothing here runs at import time.

/**
 * @typedef {{ [key: string]: unknown }} Props
 * Keys: `class`, `text`, `on<event>` (a listener), `data-*`/`aria-*`/other attributes
 * (strings; `true` sets an empty attribute, `false`/null/undefined leave it out), and the
 * properties `value`, `checked`, `disabled`, `hidden`, `open`, `htmlFor`.
 */

/** @typedef {Node | string | number | null | undefined | false} Child */

const PROPS = new Set(['value', 'checked', 'disabled', 'hidden', 'open', 'htmlFor', 'type', 'id', 'min', 'max']);

/**
 * An HTML element.
 * @template {keyof HTMLElementTagNameMap} K
 * @param {K} tag
 * @param {Props | null} [props]
 * @param {...(Child | Child[])} children
 * @returns {HTMLElementTagNameMap[K]}
 */
export function h(tag, props, ...children) {
  const el = document.createElement(tag);
  apply(el, props);
  append(el, children);
  return el;
}

const SVG_NS = 'http://www.w3.org/2000/svg';

/**
 * An SVG element (attributes only).
 * @template {keyof SVGElementTagNameMap} K
 * @param {K} tag
 * @param {Props | null} [props]
 * @param {...(Child | Child[])} children
 * @returns {SVGElementTagNameMap[K]}
 */
export function s(tag, props, ...children) {
  const el = document.createElementNS(SVG_NS, tag);
  for (const [k, v] of Object.entries(props ?? {})) {
    if (v == null || v === false) continue;
    if (k === 'text') el.textContent = String(v);
    else if (k === 'class') el.setAttribute('class', String(v));
    else el.setAttribute(k, String(v));
  }
  append(el, children);
  return el;
}

/**
 * @param {Element} el
 * @param {Props | null | undefined} props
 */
function apply(el, props) {
  if (!props) return;
  for (const [k, v] of Object.entries(props)) {
    if (v == null) continue;
    if (k === 'class') {
      el.className = Array.isArray(v) ? v.filter(Boolean).join(' ') : String(v);
    } else if (k === 'text') {
      el.textContent = String(v);
    } else if (k.startsWith('on') && typeof v === 'function') {
      el.addEventListener(k.slice(2), /** @type {EventListener} */ (v));
    } else if (PROPS.has(k)) {
      /** @type {Record<string, unknown>} */ (/** @type {unknown} */ (el))[k] = v;
    } else if (v === false) {
      continue;
    } else {
      el.setAttribute(k, v === true ? '' : String(v));
    }
  }
}

/**
 * @param {Node} el
 * @param {(Child | Child[])[]} children
 */
function append(el, children) {
  for (const c of children.flat()) {
    if (c == null || c === false) continue;
    el.appendChild(typeof c === 'string' || typeof c === 'number' ? document.createTextNode(String(c)) : c);
  }
}

/**
 * The element with this id, of this kind (a missing one is a bug in index.html).
 * @template {Element} T
 * @param {string} id
 * @param {{ new (): T, prototype: T }} type
 * @returns {T}
 */
export function byId(id, type) {
  const el = document.getElementById(id);
  if (!(el instanceof type)) throw new Error(`#${id} is missing from index.html`);
  return el;
}

/**
 * Replaces a container's children with new ones, keeping the old node where a new one with
 * the same `data-key` looks the same (so focus, open details and scroll stay put while the
 * overview refreshes), and putting focus back on the like element when a focused one goes.
 * @param {Element} container
 * @param {Element[]} next
 */
export function reconcile(container, next) {
  const active = document.activeElement;
  /** @type {string | null} */
  let focusKey = null;
  /** @type {string | null} */
  let focusOwner = null;
  if (active instanceof HTMLElement && container.contains(active)) {
    focusKey = active.dataset.focus ?? active.id ?? null;
    const owner = active.closest('[data-key]');
    focusOwner = owner instanceof HTMLElement ? owner.dataset.key ?? null : null;
  }
  /** @type {Map<string, Element>} */
  const old = new Map();
  for (const child of Array.from(container.children)) {
    const key = child instanceof HTMLElement || child instanceof SVGElement ? child.dataset.key : undefined;
    if (key) old.set(key, child);
  }
  const out = next.map((n) => {
    const key = n instanceof HTMLElement ? n.dataset.key : undefined;
    const prev = key ? old.get(key) : undefined;
    if (prev && prev.isEqualNode(n)) return prev;
    if (prev instanceof HTMLElement && n instanceof HTMLElement) keepOpenDetails(prev, n);
    return n;
  });
  container.replaceChildren(...out);
  if (focusKey && !(document.activeElement && container.contains(document.activeElement))) {
    const scope = focusOwner ? out.find((n) => n instanceof HTMLElement && n.dataset.key === focusOwner) : container;
    const target = scope?.querySelector(`[data-focus="${focusKey}"]`) ?? (focusKey ? document.getElementById(focusKey) : null);
    if (target instanceof HTMLElement) target.focus();
  }
}

/**
 * Opens in `next` the <details> that were open in `prev` (matched by order).
 * @param {HTMLElement} prev
 * @param {HTMLElement} next
 */
function keepOpenDetails(prev, next) {
  const a = prev.querySelectorAll('details');
  const b = next.querySelectorAll('details');
  a.forEach((d, i) => {
    if (d.open && b[i]) b[i].open = true;
  });
}

/**
 * Sets a busy state on a button while a promise runs: disabled, with another label.
 * @template T
 * @param {HTMLButtonElement} button
 * @param {string} busyLabel
 * @param {() => Promise<T>} run
 * @returns {Promise<T>}
 */
export async function busy(button, busyLabel, run) {
  const target = button.querySelector('.btn-label') ?? button;
  const label = target.textContent;
  button.disabled = true;
  button.setAttribute('aria-busy', 'true');
  target.textContent = busyLabel;
  try {
    return await run();
  } finally {
    button.disabled = false;
    button.removeAttribute('aria-busy');
    target.textContent = label;
  }
}

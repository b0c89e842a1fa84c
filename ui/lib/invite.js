// Invitation links in the window: reading a pasted link, the words around it, copying it,
// and putting the engine's QR code (an SVG document as text) into the page. Pure: what the
// page offers (a parser, a clipboard, a document) comes in as arguments, so node tests it.
// The engine checks every link itself; nothing here decides whether a link is good.

import { capitalize } from './format.js';

/** @typedef {import('../types').CircleCard} CircleCard */

/**
 * A link as pasted, without what chat apps and mail add around it: spaces, line breaks and
 * angle brackets (`<p2pds://…>`).
 * @param {string} text
 * @returns {string}
 */
export function cleanLink(text) {
  let t = text.trim();
  if (t.startsWith('<') && t.endsWith('>')) t = t.slice(1, -1).trim();
  return t;
}

/**
 * The circle a link names (its `uri=` part, decoded), to find the invitation once it is
 * open; null when the text is not a readable invitation link.
 * @param {string} text
 * @returns {string | null}
 */
export function linkCircleUri(text) {
  const t = cleanLink(text);
  const m = /^p2pds:\/\/invite\/?\?(.*)$/i.exec(t);
  if (!m) return null;
  for (const pair of m[1].split('&')) {
    const eq = pair.indexOf('=');
    if (eq < 0 || pair.slice(0, eq) !== 'uri') continue;
    try {
      const uri = decodeURIComponent(pair.slice(eq + 1));
      return uri.startsWith('at://') ? uri : null;
    } catch {
      return null;
    }
  }
  return null;
}

/**
 * Why a link was not opened, as a sentence to show beside the field. The engine says the
 * link's problems in words already; signing in is said here, for where the field is.
 * @param {unknown} err the rejection (`{code, message}` from the engine, or anything)
 * @param {'welcome' | 'circles'} where
 * @returns {string}
 */
export function linkErrorText(err, where) {
  const code = err && typeof err === 'object' && 'code' in err ? err.code : null;
  if (code === 'not-signed-in') {
    return where === 'welcome'
      ? 'Sign in first, then open the link again: the invitation is for your account.'
      : 'Sign in first (in Settings), then open the link again: the invitation is for your account.';
  }
  const message =
    typeof err === 'string'
      ? err
      : err && typeof err === 'object' && 'message' in err && typeof err.message === 'string'
        ? err.message
        : err instanceof Error
          ? err.message
          : '';
  const m = message.trim();
  if (!m) return 'This link could not be opened. Please try again.';
  return /[.!?]$/.test(m) ? capitalize(m) : `${capitalize(m)}.`;
}

/**
 * What to say where the link was pasted, once the engine opened it: whether the invitation
 * waits to be answered, or its circle is already among the person's circles.
 * @param {import('../types').Overview} overview after opening the link
 * @param {string | null} uri the circle the link names
 * @returns {{ found: 'invitation' | 'circle' | null, text: string }}
 */
export function openedText(overview, uri) {
  const inv = uri ? overview.invitations.find((i) => i.uri === uri) : undefined;
  if (inv) return { found: 'invitation', text: `The invitation to “${inv.circleName}” from ${inv.fromName} is open: accept or decline it below.` };
  const circle = uri ? overview.circles.find((c) => c.uri === uri) : undefined;
  if (circle) return { found: 'circle', text: `You already answered this invitation: “${circle.name}” is among your circles.` };
  return { found: null, text: 'The invitation is open: it shows with your circles.' };
}

/**
 * A line under a circle's share buttons when some members have not answered yet.
 * @param {CircleCard} c
 * @returns {string | null}
 */
export function waitingHint(c) {
  const waiting = c.members.filter((m) => !m.accepted && !m.isYou).map((m) => m.name);
  if (waiting.length === 0) return null;
  const names =
    waiting.length === 1
      ? waiting[0]
      : `${waiting.slice(0, -1).join(', ')} and ${waiting[waiting.length - 1]}`;
  const they = waiting.length === 1 ? 'has' : 'have';
  return `${names} ${they} not answered yet. If the invitation has not reached them, send them the invitation link.`;
}

/**
 * Copies `text` with the page's clipboard; false when there is none or it refuses (some
 * windows allow it only on a click, or not at all).
 * @param {string} text
 * @param {{ writeText?: (t: string) => Promise<void> } | undefined | null} clipboard
 * @returns {Promise<boolean>}
 */
export async function copyText(text, clipboard) {
  if (!clipboard || typeof clipboard.writeText !== 'function') return false;
  try {
    await clipboard.writeText(text);
    return true;
  } catch {
    return false;
  }
}

const SVG_NS = 'http://www.w3.org/2000/svg';
/** Elements that could run, load or style something: never taken into the page. */
const UNSAFE = new Set(['script', 'style', 'foreignobject', 'iframe', 'image', 'use', 'a', 'animate', 'set']);

/**
 * @typedef {object} SvgNode what the import needs of an element (a DOM Element has it)
 * @property {string} localName
 * @property {string | null} namespaceURI
 * @property {ArrayLike<{ name: string, value: string }>} attributes
 * @property {ArrayLike<SvgNode>} children
 * @property {(name: string) => void} removeAttribute
 * @property {() => void} remove
 */

/**
 * An SVG document's text (the engine's QR code) as an element to put in the page: parsed as
 * XML, never as HTML, so nothing in it runs; refused unless its root is an `<svg>` and it parsed
 * cleanly; anything that could run, load or carry styles removed (the page's policy allows
 * neither inline styles nor images from elsewhere).
 * @template T
 * @param {string} markup
 * @param {(markup: string) => { documentElement: SvgNode | null }} parse e.g.
 *   `(m) => new DOMParser().parseFromString(m, 'image/svg+xml')`
 * @param {(node: SvgNode) => T} adopt e.g. `(n) => document.importNode(n, true)`
 * @returns {T}
 */
export function importSvg(markup, parse, adopt) {
  const root = parse(markup).documentElement;
  if (!root || root.localName !== 'svg' || root.namespaceURI !== SVG_NS) {
    throw new Error('The QR code could not be drawn.');
  }
  clean(root);
  return adopt(root);
}

/**
 * @param {SvgNode} el
 */
function clean(el) {
  for (const a of Array.from(el.attributes)) {
    const name = a.name.toLowerCase();
    const value = a.value.trim().toLowerCase();
    const link = name === 'href' || name.endsWith(':href');
    if (name.startsWith('on') || name === 'style' || (link && !value.startsWith('#'))) el.removeAttribute(a.name);
  }
  for (const child of Array.from(el.children)) {
    const name = child.localName.toLowerCase();
    if (name === 'parsererror') throw new Error('The QR code could not be drawn.');
    if (UNSAFE.has(name) || child.namespaceURI !== SVG_NS) child.remove();
    else clean(child);
  }
}

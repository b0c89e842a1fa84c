// Formatting for people: sizes, counts, relative times. Pure (no DOM): node's tests import it.
// Wording follows the Rust side (src/app/words.rs), which writes every other sentence.

const KB = 1000;
const UNITS = ['kB', 'MB', 'GB', 'TB', 'PB'];

/**
 * A size in words, decimal units like the operating systems show: "0 bytes", "1 byte",
 * "512 bytes", "1.5 kB", "12 MB", "1.2 GB" (the same words as `words::size` in
 * src/app/words.rs, which writes the sizes in the engine's sentences).
 * @param {number} bytes
 * @returns {string}
 */
export function humanBytes(bytes) {
  if (!Number.isFinite(bytes) || bytes < 0) return '—';
  if (bytes < KB) return bytes === 1 ? '1 byte' : `${Math.round(bytes)} bytes`;
  let value = bytes / KB;
  let unit = 0;
  while (value >= KB && unit < UNITS.length - 1) {
    value /= KB;
    unit += 1;
  }
  // One decimal below 10 ("1.5 MB"), none above ("120 MB"); 9.96 rounds up to "10 MB".
  let text = value < 10 ? value.toFixed(1) : String(Math.round(value));
  if (text === '1000' && unit < UNITS.length - 1) {
    text = '1.0';
    unit += 1;
  }
  return `${text.replace(/\.0$/, '')} ${UNITS[unit]}`;
}

/**
 * A count with thousands separators: 1234 -> "1,234".
 * @param {number} n
 * @returns {string}
 */
export function formatCount(n) {
  return Math.round(n).toLocaleString('en-US');
}

/**
 * "1 post", "2 posts", "1,234 images".
 * @param {number} n
 * @param {string} one
 * @param {string} [many]
 * @returns {string}
 */
export function plural(n, one, many) {
  return `${formatCount(n)} ${n === 1 ? one : (many ?? `${one}s`)}`;
}

/**
 * First letter upper case: the Rust sentences are written to follow a name ("backed up …").
 * A sentence that starts with a handle or an address ("bob.bsky.social checked …") stays
 * as it is: handles are lower case.
 * @param {string} s
 * @returns {string}
 */
export function capitalize(s) {
  if (!s) return s;
  const first = s.split(/\s/, 1)[0].replace(/['’]s$/, '');
  if (/[.@:/\d]/.test(first.replace(/[.,;:!?…]+$/, ''))) return s;
  return s.charAt(0).toUpperCase() + s.slice(1);
}

/**
 * Milliseconds since the epoch of an RFC 3339 time, or NaN.
 * @param {string | null | undefined} iso
 * @returns {number}
 */
export function parseTime(iso) {
  return iso ? Date.parse(iso) : Number.NaN;
}

/**
 * How long ago, like the Rust side words it: "just now", "a minute ago", "3 minutes ago",
 * "an hour ago", "5 hours ago", "yesterday", "4 days ago". Times in the future read
 * "in 3 minutes", "in an hour", "tomorrow", "in 2 days".
 * @param {string | number | Date} then
 * @param {number} [now] milliseconds since the epoch
 * @returns {string}
 */
export function ago(then, now = Date.now()) {
  const t = then instanceof Date ? then.getTime() : typeof then === 'number' ? then : Date.parse(then);
  if (Number.isNaN(t)) return '';
  const diff = Math.round((now - t) / 1000);
  const future = diff < 0;
  const s = Math.abs(diff);
  if (s < 60) return future ? 'in a moment' : 'just now';
  /** @type {string} */
  let span;
  if (s < 120) span = 'a minute';
  else if (s < 3600) span = `${Math.floor(s / 60)} minutes`;
  else if (s < 7200) span = 'an hour';
  else if (s < 86_400) span = `${Math.floor(s / 3600)} hours`;
  else if (s < 172_800) return future ? 'tomorrow' : 'yesterday';
  else span = `${Math.floor(s / 86_400)} days`;
  return future ? `in ${span}` : `${span} ago`;
}

/**
 * A duration: "45 minutes", "1 hour", "3 days" (for "paused for …").
 * @param {number} seconds
 * @returns {string}
 */
export function span(seconds) {
  const s = Math.max(0, Math.floor(seconds));
  if (s < 3600) return plural(Math.max(1, Math.floor(s / 60)), 'minute');
  if (s < 86_400) return plural(Math.floor(s / 3600), 'hour');
  return plural(Math.floor(s / 86_400), 'day');
}

/**
 * Midnight (local) of the day holding `ms`.
 * @param {number} ms
 * @returns {number}
 */
export function startOfDay(ms) {
  const d = new Date(ms);
  d.setHours(0, 0, 0, 0);
  return d.getTime();
}

/**
 * A clock time in the person's locale: "3:40 PM" or "15:40".
 * @param {number} ms
 * @param {string} [locale]
 * @returns {string}
 */
export function clock(ms, locale) {
  return new Date(ms).toLocaleTimeString(locale, { hour: 'numeric', minute: '2-digit' });
}

/**
 * A day in words relative to today: "Today", "Yesterday", "Tomorrow", else "Mon 3 Mar"
 * (in the person's locale).
 * @param {number} ms
 * @param {number} [now]
 * @param {string} [locale]
 * @returns {string}
 */
export function dayLabel(ms, now = Date.now(), locale) {
  const days = Math.round((startOfDay(now) - startOfDay(ms)) / 86_400_000);
  if (days === 0) return 'Today';
  if (days === 1) return 'Yesterday';
  if (days === -1) return 'Tomorrow';
  const sameYear = new Date(ms).getFullYear() === new Date(now).getFullYear();
  return new Date(ms).toLocaleDateString(locale, {
    weekday: 'short',
    day: 'numeric',
    month: 'short',
    ...(sameYear ? {} : { year: 'numeric' }),
  });
}

/**
 * "3:40 PM" today, "tomorrow 9:00 AM", else "Mon 3 Mar 9:00 AM": when something ends.
 * @param {number} ms
 * @param {number} [now]
 * @param {string} [locale]
 * @returns {string}
 */
export function whenText(ms, now = Date.now(), locale) {
  const day = dayLabel(ms, now, locale);
  const time = clock(ms, locale);
  if (day === 'Today') return time;
  return `${day === 'Tomorrow' ? 'tomorrow' : day} ${time}`;
}

/**
 * Shorten to at most `max` characters, with an ellipsis.
 * @param {string} s
 * @param {number} max
 * @returns {string}
 */
export function truncate(s, max) {
  if (s.length <= max) return s;
  return `${s.slice(0, Math.max(1, max - 1))}…`;
}

/**
 * The letter shown in a person's round avatar.
 * @param {string} name
 * @returns {string}
 */
export function initial(name) {
  const m = name.replace(/^@/, '').match(/[\p{L}\p{N}]/u);
  return m ? m[0].toUpperCase() : '?';
}

/**
 * A stable hue (0–359) for a name, so each friend keeps the same avatar colour.
 * @param {string} name
 * @returns {number}
 */
export function hueFor(name) {
  // FNV-1a: names that differ in one letter still get far-apart colours.
  let h = 0x811c9dc5;
  for (const ch of name) {
    h ^= ch.codePointAt(0) ?? 0;
    h = Math.imul(h, 0x01000193) >>> 0;
  }
  return h % 360;
}

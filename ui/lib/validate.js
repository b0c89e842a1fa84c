// Checks of what people type, before anything is sent. Pure: node's tests import it.
// Messages are sentences for people, shown next to the field.

/** @typedef {import('../types').Settings} Settings */
/** @typedef {import('../types').RestoreInput} RestoreInput */

/**
 * @template T
 * @typedef {{ ok: true, value: T } | { ok: false, error: string, field?: string }} Checked
 */

/** Bytes in a gigabyte, as the storage limit field counts them (decimal, like sizes). */
export const GB = 1_000_000_000;

/** Days older versions of an account are kept: what the app accepts (as the engine checks). */
export const RETENTION_DAYS = /** @type {const} */ ({ min: 1, max: 3650 });

/**
 * What someone typed or pasted for an account, tidied: spaces and a leading "@" dropped,
 * a Bluesky profile link ("https://bsky.app/profile/alice.bsky.social") reduced to the handle,
 * lower case (handles are case-insensitive; DIDs are left as they are).
 * @param {string} input
 * @returns {string}
 */
export function normalizeHandle(input) {
  let s = input.trim();
  const link = s.match(/^(?:https?:\/\/)?(?:www\.)?bsky\.app\/profile\/([^/?#\s]+)/i);
  if (link) s = decodeURIComponent(link[1]);
  s = s.replace(/^@/, '');
  return s.startsWith('did:') ? s : s.toLowerCase();
}

/**
 * The AT Protocol handle syntax: dot-separated labels of letters, digits and hyphens
 * (not at a label's ends), at least two labels, the last not starting with a digit.
 * @param {string} s
 * @returns {boolean}
 */
export function isHandle(s) {
  if (s.length > 253) return false;
  const labels = s.split('.');
  if (labels.length < 2) return false;
  const ok = labels.every((l) => /^[a-zA-Z0-9](?:[a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?$/.test(l));
  return ok && /^[a-zA-Z]/.test(labels[labels.length - 1]);
}

/**
 * A DID ("did:plc:…", "did:web:…"): accepted where a handle is, for people who have one.
 * @param {string} s
 * @returns {boolean}
 */
export function isDid(s) {
  return /^did:[a-z]+:[a-zA-Z0-9._:%-]*[a-zA-Z0-9._-]$/.test(s) && s.length <= 2048;
}

/**
 * The "add a friend" field.
 * @param {string} input
 * @returns {Checked<string>}
 */
export function checkFriend(input) {
  const who = normalizeHandle(input);
  if (!who) return { ok: false, error: 'Type your friend’s handle, like alice.bsky.social.' };
  if (isHandle(who) || isDid(who)) return { ok: true, value: who };
  if (!who.includes('.') && /^[a-z0-9-]+$/.test(who)) {
    return { ok: false, error: `Handles have a dot in them. Did you mean ${who}.bsky.social?` };
  }
  return { ok: false, error: 'That doesn’t look like a handle. Handles look like alice.bsky.social.' };
}

/**
 * The sign-in form.
 * @param {string} handle
 * @param {string} password
 * @returns {Checked<{ handle: string, password: string }>}
 */
export function checkSignIn(handle, password) {
  const who = normalizeHandle(handle);
  if (!who) return { ok: false, field: 'handle', error: 'Type your handle, like alice.bsky.social.' };
  if (!isHandle(who) && !isDid(who)) {
    return {
      ok: false,
      field: 'handle',
      error: who.includes('.')
        ? 'That doesn’t look like a handle. Handles look like alice.bsky.social.'
        : `Handles have a dot in them. Did you mean ${who}.bsky.social?`,
    };
  }
  if (!password.trim()) {
    return { ok: false, field: 'password', error: 'Paste the app password you created in Bluesky.' };
  }
  return { ok: true, value: { handle: who, password: password.trim() } };
}

/**
 * Whether a password has the shape of a Bluesky app password ("abcd-efgh-ijkl-mnop"):
 * only a hint, the server decides.
 * @param {string} password
 * @returns {boolean}
 */
export function looksLikeAppPassword(password) {
  return /^[a-z0-9]{4}-[a-z0-9]{4}-[a-z0-9]{4}-[a-z0-9]{4}$/i.test(password.trim());
}

/**
 * The choices for "each account kept by at least N friends", for a circle of you and
 * `picked` friends: every account can be kept by at most the other members, so 1..picked;
 * the default is 2 where possible (one computer can be off), else 1.
 * @param {number} picked
 * @returns {{ min: number, max: number, value: number }}
 */
export function minCopiesBounds(picked) {
  const max = Math.max(1, picked);
  return { min: 1, max, value: Math.min(2, max) };
}

/**
 * The "create a circle" form.
 * @param {string} name
 * @param {string[]} members the picked friends' DIDs
 * @param {number} minCopies
 * @returns {Checked<{ name: string, members: string[], minCopies: number }>}
 */
export function checkCircle(name, members, minCopies) {
  const n = name.trim().replace(/\s+/g, ' ');
  if (!n) return { ok: false, field: 'name', error: 'Give the circle a name, like “Family” or “Book club”.' };
  if (n.length > 64) return { ok: false, field: 'name', error: 'Please use a shorter name (64 letters at most).' };
  if (members.length === 0) {
    return { ok: false, field: 'members', error: 'Pick at least one friend to share backups with.' };
  }
  const { min, max } = minCopiesBounds(members.length);
  if (!Number.isInteger(minCopies) || minCopies < min || minCopies > max) {
    return {
      ok: false,
      field: 'minCopies',
      error:
        max === 1
          ? 'With one friend, each account can be kept by 1 friend.'
          : `Choose a number from ${min} to ${max}: each account can be kept by at most the ${max} other members.`,
    };
  }
  return { ok: true, value: { name: n, members: [...new Set(members)], minCopies } };
}

/**
 * What the settings form holds (text as typed).
 * @typedef {object} SettingsForm
 * @property {string} limitGb empty for no limit
 * @property {string} retentionDays days older versions are kept
 * @property {boolean} startAtLogin
 * @property {string} checkEveryMinutes
 * @property {boolean} pauseOnBattery
 * @property {boolean} serve
 * @property {string} listen
 * @property {string} endpoint empty for none
 */

/**
 * The form's fields for some settings.
 * @param {Settings} s
 * @returns {SettingsForm}
 */
export function settingsToForm(s) {
  return {
    limitGb: s.storageLimitBytes == null ? '' : String(Math.round((s.storageLimitBytes / GB) * 100) / 100),
    retentionDays: String(s.retentionDays),
    startAtLogin: s.startAtLogin,
    checkEveryMinutes: String(s.checkEveryMinutes),
    pauseOnBattery: s.pauseOnBattery,
    serve: s.serve,
    listen: s.listen,
    endpoint: s.endpoint ?? '',
  };
}

/**
 * The settings to save from the form, on top of the ones loaded (which keep what the form
 * does not show, like the storage location).
 * @param {Settings} base
 * @param {SettingsForm} form
 * @returns {Checked<Settings>}
 */
export function checkSettings(base, form) {
  /** @type {number | null} */
  let limit = null;
  const gb = form.limitGb.trim().replace(',', '.');
  if (gb) {
    const v = Number(gb);
    if (!Number.isFinite(v) || v <= 0) {
      return { ok: false, field: 'limitGb', error: 'Type a size in GB, like 20, or leave it empty for no limit.' };
    }
    limit = Math.round(v * GB);
  }
  const days = Number(form.retentionDays.trim());
  if (!Number.isInteger(days) || days < RETENTION_DAYS.min || days > RETENTION_DAYS.max) {
    return {
      ok: false,
      field: 'retentionDays',
      error: `Type a number of days from ${RETENTION_DAYS.min} to ${RETENTION_DAYS.max} (10 years), like 30.`,
    };
  }
  const minutes = Number(form.checkEveryMinutes.trim());
  if (!Number.isInteger(minutes) || minutes < 1 || minutes > 10_080) {
    return { ok: false, field: 'checkEveryMinutes', error: 'Type a number of minutes from 1 to 10080 (a week).' };
  }
  const listen = form.listen.trim();
  if (form.serve && !/^(?:\[[0-9a-fA-F:.]+\]|[a-zA-Z0-9.-]+):\d{1,5}$/.test(listen)) {
    return { ok: false, field: 'listen', error: 'Type an address and port, like 0.0.0.0:2583.' };
  }
  const port = Number(listen.split(':').pop());
  if (form.serve && (port < 1 || port > 65_535)) {
    return { ok: false, field: 'listen', error: 'The port must be between 1 and 65535.' };
  }
  const endpoint = form.endpoint.trim().replace(/\/+$/, '');
  if (endpoint && !/^https?:\/\/[^\s/]+(?:\/\S*)?$/.test(endpoint)) {
    return { ok: false, field: 'endpoint', error: 'Type a web address, like https://alice.example.com.' };
  }
  return {
    ok: true,
    value: {
      ...base,
      storageLimitBytes: limit,
      retentionDays: days,
      startAtLogin: form.startAtLogin,
      checkEveryMinutes: minutes,
      pauseOnBattery: form.pauseOnBattery,
      serve: form.serve,
      listen: listen || base.listen,
      endpoint: endpoint || null,
    },
  };
}

/**
 * Whether a folder path looks like a Windows one ("C:\\…", "\\\\server\\…").
 * @param {string} path
 * @returns {boolean}
 */
export function isWindowsPath(path) {
  return /^(?:[A-Za-z]:[\\/]|\\\\)/.test(path);
}

/**
 * An example folder to move the copies to, in the style of the current one.
 * @param {string} current
 * @returns {string}
 */
export function folderExample(current) {
  if (isWindowsPath(current)) return 'D:\\Backups\\P2PDS';
  const home = current.match(/^(\/(?:home|Users)\/[^/]+)\//);
  return `${home ? home[1] : '/home/alice'}/Backups/P2PDS`;
}

/**
 * A folder path without the separators at its end (the root stays as it is).
 * @param {string} path
 * @returns {string}
 */
function trimSeparators(path) {
  const t = path.replace(/[\\/]+$/, '');
  return t === '' || /^[A-Za-z]:$/.test(t) ? path : t;
}

/**
 * The "move to another folder" field: a full path (or one starting with ~, the home folder),
 * not the folder in use nor one inside it. The app checks the rest (an empty folder, room).
 * @param {Settings} current the settings shown
 * @param {string} input
 * @returns {Checked<string>}
 */
export function checkMoveTarget(current, input) {
  if (current.dataDirFixed) {
    return {
      ok: false,
      error: 'The folder was chosen when P2PDS was started (with --data-dir or P2PDS_DATA_DIR), so it can’t be changed here.',
    };
  }
  const example = folderExample(current.dataDir);
  const dir = input.trim();
  if (!dir) return { ok: false, error: `Type the full path of the new folder, like ${example}.` };
  const full = dir === '~' || /^~[\\/]/.test(dir) || dir.startsWith('/') || isWindowsPath(dir);
  if (!full) {
    return { ok: false, error: `Type the whole path of the folder, starting from the top, like ${example}.` };
  }
  const windows = isWindowsPath(current.dataDir);
  /** @param {string} p */
  const norm = (p) => (windows ? trimSeparators(p).replace(/\//g, '\\').toLowerCase() : trimSeparators(p));
  const [from, to] = [norm(current.dataDir), norm(dir)];
  const sep = windows ? '\\' : '/';
  if (from === to) return { ok: false, error: 'Your copies are already kept in that folder.' };
  if (to.startsWith(from.endsWith(sep) ? from : from + sep)) {
    return { ok: false, error: 'The new folder can’t be inside the folder the copies are in now. Pick a folder somewhere else.' };
  }
  return { ok: true, value: dir };
}

/**
 * @typedef {object} RestoreForm what the restore dialog's fields hold
 * @property {string} did
 * @property {string | null} rev a kept version, or null for the suggested one
 * @property {string} toPds
 * @property {string} handle
 * @property {string} password
 * @property {boolean} ownerPasswordDiffers the old server's password is another one
 * @property {string} oldPassword
 * @property {string} email
 * @property {string} inviteCode
 * @property {string} plcToken the confirmation code the old server emailed (after a first run)
 * @property {string} recoveryKey the owner's recovery key as written down (optional)
 */

/**
 * A recovery key as written down: 64 hex digits, spaces and dashes aside. Returns the digits
 * (lower case), or null when it can't be one.
 * @param {string} input
 * @returns {string | null}
 */
export function recoveryKeyDigits(input) {
  const t = input.replace(/[\s-]/g, '').toLowerCase();
  return /^[0-9a-f]{64}$/.test(t) ? t : null;
}

/**
 * A server's address as typed: "pds.example.net" gets https://; the address must be a web
 * address of a host (no path, no spaces). Returns null when it can't be one.
 * @param {string} input
 * @returns {string | null}
 */
export function serverAddress(input) {
  let t = input.trim().replace(/\/+$/, '');
  if (!t) return null;
  if (!/^[a-z][a-z0-9+.-]*:\/\//i.test(t)) t = `https://${t}`;
  let url;
  try {
    url = new URL(t);
  } catch {
    return null;
  }
  if (url.protocol !== 'https:' && url.protocol !== 'http:') return null;
  if (url.username || url.password || url.search || url.hash || (url.pathname !== '/' && url.pathname !== '')) return null;
  const host = url.hostname;
  const local = host === 'localhost' || /^\d+\.\d+\.\d+\.\d+$/.test(host) || host.startsWith('[');
  if (!local && !host.includes('.')) return null;
  if (url.protocol === 'http:' && !local) return null;
  return `${url.protocol}//${url.host}`;
}

/**
 * The restore dialog's fields, before anything is sent.
 * @param {RestoreForm} f
 * @returns {Checked<RestoreInput>}
 */
export function checkRestore(f) {
  if (!f.toPds.trim()) {
    return { ok: false, field: 'toPds', error: 'Type the address of the new server, like pds.example.net.' };
  }
  const toPds = serverAddress(f.toPds);
  if (!toPds) {
    return {
      ok: false,
      field: 'toPds',
      error: 'That is not a server address. Type it like pds.example.net or https://pds.example.net (secure addresses only).',
    };
  }
  const handle = normalizeHandle(f.handle);
  if (!handle) return { ok: false, field: 'handle', error: 'Type the handle the account will have on the new server.' };
  if (!isHandle(handle)) {
    return { ok: false, field: 'handle', error: 'A handle looks like alice.pds.example.net: words separated by dots.' };
  }
  if (!f.password) {
    return { ok: false, field: 'password', error: 'Type the password for the account on the new server.' };
  }
  if (f.ownerPasswordDiffers && !f.oldPassword) {
    return {
      ok: false,
      field: 'oldPassword',
      error: 'Type the main password of the account on its old server (not an app password), or untick the box.',
    };
  }
  const email = f.email.trim();
  if (email && !/^[^\s@]+@[^\s@]+\.[^\s@]+$/.test(email)) {
    return { ok: false, field: 'email', error: 'That email address does not look right.' };
  }
  const recoveryKey = f.recoveryKey.trim() ? recoveryKeyDigits(f.recoveryKey) : null;
  if (f.recoveryKey.trim() && !recoveryKey) {
    return {
      ok: false,
      field: 'recoveryKey',
      error: 'That is not a recovery key: it is 64 letters (a to f) and digits, in groups of four.',
    };
  }
  return {
    ok: true,
    value: {
      did: f.did,
      rev: f.rev,
      toPds,
      handle,
      password: f.password,
      oldPassword: f.ownerPasswordDiffers ? f.oldPassword : null,
      email: email || null,
      inviteCode: f.inviteCode.trim() || null,
      plcToken: f.plcToken.trim() || null,
      recoveryKey,
    },
  };
}

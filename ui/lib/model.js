// The view-model: what the screens show, decided from the documents the app returns.
// Pure (no DOM): node's tests import it.

import { ago, capitalize, formatCount, humanBytes, parseTime, plural, whenText, dayLabel, clock } from './format.js';

/** @typedef {import('../types').Overview} Overview */
/** @typedef {import('../types').TrayState} TrayState */
/** @typedef {import('../types').Friend} Friend */
/** @typedef {import('../types').FriendState} FriendState */
/** @typedef {import('../types').Progress} Progress */
/** @typedef {import('../types').CircleCard} CircleCard */
/** @typedef {import('../types').InvitationCard} InvitationCard */
/** @typedef {import('../types').TimelineEvent} TimelineEvent */
/** @typedef {import('../types').Storage} Storage */
/** @typedef {import('../types').Settings} Settings */
/** @typedef {import('../types').MoveProgress} MoveProgress */
/** @typedef {import('../types').MoveReport} MoveReport */
/** @typedef {import('../types').KeptVersion} KeptVersion */
/** @typedef {import('../types').RestoreStep} RestoreStep */
/** @typedef {import('../types').RestoreOutcome} RestoreOutcome */

/** @typedef {'ok' | 'busy' | 'warn' | 'danger' | 'muted'} Tone */

/**
 * The status pill beside the headline. Green only once every active circle's copies have
 * passed a check: until then "Not checked yet", as the headline and the circle's card say.
 * @param {TrayState} tray
 * @param {CircleCard[]} [circles]
 * @returns {{ label: string, tone: Tone }}
 */
export function trayInfo(tray, circles = []) {
  switch (tray) {
    case 'ok':
      if (circles.some((c) => c.state === 'active' && c.health === 'ok' && !c.checked)) {
        return { label: 'Not checked yet', tone: 'muted' };
      }
      return { label: 'All good', tone: 'ok' };
    case 'syncing':
      return { label: 'Backing up…', tone: 'busy' };
    case 'needs-attention':
      return { label: 'Needs attention', tone: 'warn' };
    case 'problem':
      return { label: 'Problem', tone: 'danger' };
    default:
      return { label: capitalize(String(tray)), tone: 'muted' };
  }
}

/**
 * The pause button: "Pause for 1 hour" or, while paused, "Resume" and until when.
 * @param {Overview} overview
 * @param {number} [now]
 * @returns {{ paused: boolean, label: string, note: string | null }}
 */
export function pauseControl(overview, now = Date.now()) {
  const until = overview.pausedUntil;
  if (until == null) return { paused: false, label: 'Pause for 1 hour', note: null };
  const t = parseTime(until);
  if (!Number.isNaN(t) && t <= now) return { paused: false, label: 'Pause for 1 hour', note: null };
  return {
    paused: true,
    label: 'Resume',
    note: Number.isNaN(t) ? 'Backups are paused' : `Paused until ${whenText(t, now)}`,
  };
}

/** Minutes that "Pause for 1 hour" pauses for. */
export const PAUSE_MINUTES = 60;

/**
 * @typedef {object} Banner
 * @property {string} key
 * @property {Tone} tone
 * @property {string} text
 */

/**
 * The banners under the header, most important first.
 * @param {Overview} overview
 * @returns {Banner[]}
 */
export function banners(overview) {
  /** @type {Banner[]} */
  const out = [];
  const { storage, notifications } = overview;
  if (storage.limitText) {
    out.push({ key: 'storage-full', tone: 'danger', text: storage.limitText });
  } else if (storage.limitBytes != null && storage.limitBytes > 0) {
    const used = storage.usedBytes / storage.limitBytes;
    if (used >= 1) {
      out.push({
        key: 'storage-full',
        tone: 'danger',
        text: `Storage is full: ${humanBytes(storage.usedBytes)} of ${humanBytes(storage.limitBytes)} used. Raise the limit in Settings so backups can go on.`,
      });
    } else if (used >= 0.9) {
      out.push({
        key: 'storage-almost-full',
        tone: 'warn',
        text: `Storage is almost full: ${humanBytes(storage.usedBytes)} of ${humanBytes(storage.limitBytes)} used.`,
      });
    }
  }
  if (!notifications.available) {
    const reason = (notifications.reason ?? '').trim().replace(/[.]+$/, '');
    out.push({
      key: 'notifications',
      tone: 'muted',
      text: reason
        ? `Notifications can't be shown on this computer: ${reason}.`
        : "Notifications can't be shown on this computer.",
    });
  }
  return out;
}

/** Circle states that are over: shown apart, under "Past circles". */
const PAST = new Set(['left', 'revoked', 'declined', 'expired', 'gone']);

/**
 * @param {string} state
 * @returns {boolean}
 */
export function isPastCircle(state) {
  return PAST.has(state);
}

/** @type {Record<string, number>} */
const HEALTH_RANK = { failed: 0, 'at-risk': 1, degraded: 2, recovering: 3, unknown: 4, ok: 5 };

/**
 * The circles screen, in order: invitations first (oldest sender name order is not known, so
 * as they come), then current circles (those needing attention first, then waiting ones, then
 * healthy), then past circles.
 * @param {Overview} overview
 * @returns {{ invitations: InvitationCard[], current: CircleCard[], past: CircleCard[] }}
 */
export function circleSections(overview) {
  const current = overview.circles.filter((c) => !isPastCircle(c.state));
  const rank = (/** @type {CircleCard} */ c) =>
    c.health != null && c.health in HEALTH_RANK ? HEALTH_RANK[c.health] : c.state === 'active' ? 4 : 3.5;
  const ordered = current
    .map((c, i) => ({ c, i }))
    .sort((a, b) => rank(a.c) - rank(b.c) || a.i - b.i)
    .map(({ c }) => c);
  return {
    invitations: [...overview.invitations],
    current: ordered,
    past: overview.circles.filter((c) => isPastCircle(c.state)),
  };
}

/**
 * A circle's state in words.
 * @param {string} state
 * @returns {{ label: string, tone: Tone }}
 */
export function circleStateInfo(state) {
  /** @type {Record<string, { label: string, tone: Tone }>} */
  const map = {
    waiting: { label: 'Waiting for answers', tone: 'busy' },
    active: { label: 'Active', tone: 'ok' },
    changing: { label: 'Change waiting for answers', tone: 'busy' },
    left: { label: 'You left', tone: 'muted' },
    revoked: { label: 'Ended', tone: 'muted' },
    declined: { label: 'Declined', tone: 'muted' },
    expired: { label: 'Expired', tone: 'muted' },
    gone: { label: 'Gone', tone: 'muted' },
  };
  return map[state] ?? { label: capitalize(state.replace(/-/g, ' ')), tone: 'muted' };
}

/**
 * A health state ("ok", "degraded", "recovering", "at-risk", "failed", "unknown") in words.
 * @param {string} state
 * @returns {{ label: string, tone: Tone }}
 */
export function healthInfo(state) {
  /** @type {Record<string, { label: string, tone: Tone }>} */
  const map = {
    ok: { label: 'Healthy', tone: 'ok' },
    degraded: { label: 'Needs a look', tone: 'warn' },
    recovering: { label: 'Recovering', tone: 'busy' },
    'at-risk': { label: 'At risk', tone: 'danger' },
    failed: { label: 'Not safe', tone: 'danger' },
    unknown: { label: 'Not checked yet', tone: 'muted' },
  };
  return map[state] ?? { label: capitalize(state.replace(/-/g, ' ')), tone: 'muted' };
}

/**
 * A circle page's heading: the engine's words and colour for it (they follow the worst
 * problem the page shows), else the state's.
 * @param {{ state: string, label?: string, tone?: string }} hl
 * @returns {{ label: string, tone: Tone }}
 */
export function healthHeading(hl) {
  /** @type {Tone[]} */
  const tones = ['ok', 'busy', 'warn', 'danger', 'muted'];
  const tone = tones.find((t) => t === hl.tone);
  if (hl.label && tone) return { label: hl.label, tone };
  return healthInfo(hl.state);
}

/**
 * The colour of a friend's status dot.
 * @param {FriendState} state
 * @returns {Tone}
 */
export function friendTone(state) {
  switch (state) {
    case 'ok':
      return 'ok';
    case 'syncing':
    case 'first-backup':
      return 'busy';
    case 'failing':
      return 'danger';
    default:
      return 'muted';
  }
}

/**
 * "1.2 GB · 1,234 posts · 56 images".
 * @param {Friend} friend
 * @returns {string}
 */
export function friendFacts(friend) {
  return [humanBytes(friend.sizeBytes), plural(friend.posts, 'post'), plural(friend.images, 'image')].join(' · ');
}

/** @type {Record<string, string>} */
const PHASES = {
  checking: 'Checking for new posts',
  downloading: 'Downloading',
  verifying: 'Verifying the copy',
  images: 'Saving images',
};

/**
 * A running backup's progress bar: a label, the numbers so far, and how full the bar is
 * (null while the total is not known: the bar then moves without a fill level).
 * @param {Progress} p
 * @returns {{ label: string, detail: string, fraction: number | null }}
 */
export function progressView(p) {
  const label = PHASES[p.phase] ?? capitalize(p.phase);
  const parts = [];
  if (p.records > 0) parts.push(plural(p.records, 'item'));
  if (p.bytes > 0) parts.push(humanBytes(p.bytes));
  if (p.imagesTotal > 0) parts.push(`${plural(p.imagesDone, 'image')} of ${p.imagesTotal.toLocaleString('en-US')}`);
  const fraction =
    p.imagesTotal > 0 && (p.phase === 'images' || p.imagesDone > 0)
      ? Math.min(1, Math.max(0, p.imagesDone / p.imagesTotal))
      : null;
  return { label, detail: parts.join(' · '), fraction };
}

/**
 * The friends with the live progress from engine events laid over the overview's.
 * @param {Friend[]} friends
 * @param {Map<string, Progress>} live
 * @returns {Friend[]}
 */
export function withLiveProgress(friends, live) {
  return friends.map((f) => {
    const p = live.get(f.did);
    return p ? { ...f, progress: p } : f;
  });
}

/**
 * The live progress still worth showing after a fresh overview: a friend whose backup
 * finished (no progress, not syncing) loses theirs; friends no longer listed too.
 * @param {Map<string, Progress>} live
 * @param {Friend[]} friends
 * @returns {Map<string, Progress>}
 */
export function pruneLiveProgress(live, friends) {
  const out = new Map();
  for (const f of friends) {
    const p = live.get(f.did);
    if (p && (f.progress != null || f.state === 'syncing' || f.state === 'first-backup')) out.set(f.did, p);
  }
  return out;
}

/**
 * Storage used, for the summary above the friends.
 * @param {Storage} storage
 * @returns {{ text: string, fraction: number | null }}
 */
export function storageSummary(storage) {
  if (storage.limitBytes != null && storage.limitBytes > 0) {
    return {
      text: `${humanBytes(storage.usedBytes)} of ${humanBytes(storage.limitBytes)} used`,
      fraction: Math.min(1, storage.usedBytes / storage.limitBytes),
    };
  }
  return { text: `${humanBytes(storage.usedBytes)} used`, fraction: null };
}

/**
 * The member chips of a circle card: you first, then the others as listed.
 * @param {CircleCard} circle
 * @returns {{ key: string, text: string, accepted: boolean, isYou: boolean, title: string }[]}
 */
export function memberChips(circle) {
  const sorted = [...circle.members].sort((a, b) => Number(b.isYou) - Number(a.isYou));
  return sorted.map((m) => ({
    key: m.did,
    text: m.isYou ? 'You' : m.name,
    accepted: m.accepted,
    isYou: m.isYou,
    title: m.accepted
      ? `${m.isYou ? 'You' : m.name} accepted`
      : m.isYou
        ? 'Waiting for your answer'
        : `Waiting for ${m.name} to accept`,
  }));
}

/**
 * The friends that can be picked for a new circle: accounts that are still there.
 * @param {Overview} overview
 * @returns {Friend[]}
 */
export function circleChoices(overview) {
  return overview.friends.filter((f) => f.state !== 'gone' && f.state !== 'deactivated');
}

/**
 * Whether a circle can be created now, and if not, why in words.
 * @param {Overview} overview
 * @returns {{ ok: boolean, reason: string | null }}
 */
export function canCreateCircle(overview) {
  if (!overview.me) {
    return { ok: false, reason: 'Sign in to create a circle: a circle is kept on your Bluesky account. You can sign in under Settings.' };
  }
  if (circleChoices(overview).length === 0) {
    return { ok: false, reason: 'Add a friend first: a circle is made of friends who back each other up.' };
  }
  return { ok: true, reason: null };
}

/**
 * What the "leave circle" dialog says and asks. It asks once whether to keep the copies of
 * the other members' accounts when this computer holds some (or may: an active circle).
 * @param {CircleCard} circle
 * @param {Friend[]} friends
 * @returns {{ title: string, body: string, askCopies: boolean, keepLabel: string, keepHint: string, deleteLabel: string, deleteHint: string, confirm: string }}
 */
export function leaveDialog(circle, friends) {
  const others = circle.members.filter((m) => !m.isYou);
  const held = friends.filter((f) => others.some((m) => m.did === f.did) && f.sizeBytes > 0);
  const bytes = held.reduce((sum, f) => sum + f.sizeBytes, 0);
  const askCopies = held.length > 0 || circle.state === 'active' || circle.state === 'changing';
  const whose = names((held.length > 0 ? held : others).map((f) => f.name));
  const body =
    others.length > 0
      ? `${names(others.map((m) => m.name))} will be told you left, and will stop keeping a copy of your account for this circle.`
      : 'The circle will stop asking for copies.';
  return {
    title: `Leave “${circle.name}”?`,
    body,
    askCopies,
    keepLabel: 'Keep my copies',
    keepHint: whose ? `The copies of ${whose} stay on this computer, safe if they ever need them.` : 'The copies stay on this computer.',
    deleteLabel: 'Delete my copies',
    deleteHint: bytes > 0 ? `Frees about ${humanBytes(bytes)} on this computer.` : 'Frees the space they use on this computer.',
    confirm: 'Leave circle',
  };
}

/**
 * What the "stop backing up" confirmation says.
 * @param {Friend} friend
 * @returns {{ title: string, body: string, confirm: string }}
 */
export function removeFriendDialog(friend) {
  const parts = [`P2PDS will stop backing up ${friend.name}'s account and free the space it uses on this computer${friend.sizeBytes > 0 ? ` (${humanBytes(friend.sizeBytes)})` : ''}.`];
  if (friend.circles.length > 0) {
    const c = friend.circles.map((n) => `“${n}”`);
    parts.push(
      `${friend.name} is in your circle${c.length > 1 ? 's' : ''} ${names(c)}, which still count${c.length > 1 ? '' : 's'} on this copy.`,
    );
  }
  return { title: `Stop backing up ${friend.name}?`, body: parts.join(' '), confirm: 'Stop backing up' };
}

/**
 * "Alice", "Alice and Bob", "Alice, Bob and Carol".
 * @param {string[]} list
 * @returns {string}
 */
export function names(list) {
  if (list.length <= 1) return list.join('');
  return `${list.slice(0, -1).join(', ')} and ${list[list.length - 1]}`;
}

/**
 * A circle's timeline, newest first, in days: [{ label: "Today", items }, …].
 * @param {TimelineEvent[]} events
 * @param {number} [now]
 * @returns {{ label: string, items: { key: string, kind: string, time: string, ago: string, text: string }[] }[]}
 */
export function groupTimeline(events, now = Date.now()) {
  const sorted = events
    .map((e, i) => ({ e, t: parseTime(e.at), i }))
    .sort((a, b) => (Number.isNaN(b.t) ? -1 : b.t) - (Number.isNaN(a.t) ? -1 : a.t) || a.i - b.i);
  /** @type {{ label: string, items: { key: string, kind: string, time: string, ago: string, text: string }[] }[]} */
  const groups = [];
  for (const { e, t, i } of sorted) {
    const label = Number.isNaN(t) ? 'Earlier' : dayLabel(t, now);
    let g = groups[groups.length - 1];
    if (!g || g.label !== label) {
      g = { label, items: [] };
      groups.push(g);
    }
    g.items.push({
      key: `${e.at}#${i}`,
      kind: e.kind,
      time: Number.isNaN(t) ? '' : clock(t),
      ago: Number.isNaN(t) ? '' : ago(t, now),
      text: capitalize(e.text),
    });
  }
  return groups;
}

/**
 * The account line in Settings.
 * @param {Overview} overview
 * @returns {{ signedIn: boolean, text: string }}
 */
export function accountInfo(overview) {
  if (!overview.me) {
    return { signedIn: false, text: 'Not signed in: P2PDS backs up your friends, but nobody keeps a copy of your own account.' };
  }
  const who = overview.me.handle ? `@${overview.me.handle}` : 'your Bluesky account';
  return { signedIn: true, text: `Signed in as ${who}.` };
}

/**
 * What the "Protect your account" part shows for a recovery-key status.
 * @param {import('../types').RecoveryKeyStatus} status
 * @returns {{ text: string, start: string | null, form: boolean, codeField: boolean, submit: string, key: string | null }}
 */
export function recoveryKeyView(status) {
  const base = { text: status.text, start: null, form: false, codeField: false, submit: 'Email me a code', key: null };
  switch (status.state) {
    case 'none':
      return { ...base, start: 'Set up a recovery key' };
    case 'held':
      return { ...base, start: 'Set it up again' };
    case 'code-sent':
      return { ...base, form: true, codeField: true, submit: 'Add the recovery key' };
    case 'registered':
      return status.code
        ? {
            ...base,
            text: 'Done: your account is protected. Write this recovery key down and keep it somewhere safe, away from this computer. A friend who backs you up can use it to bring your account back if this computer and your server are both gone.',
            key: status.code,
          }
        : base;
    default:
      return base;
  }
}

/**
 * The empty states, in words.
 */
export const EMPTY = {
  friends: {
    title: 'Nobody to back up yet',
    body: 'Add a friend by their handle and P2PDS keeps a verified copy of their posts and images on this computer, so they never lose them.',
  },
  circles: {
    title: 'No circles yet',
    body: 'A circle is a few friends who back each other up and check each other’s copies. Create one, or wait for an invitation.',
  },
};

/**
 * The sentence under "each account kept by at least N friends".
 * @param {number} n
 * @param {number} picked
 * @returns {string}
 */
export function copiesHint(n, picked) {
  if (picked === 0) return 'Pick the friends to invite first.';
  if (n <= 1) {
    return picked > 1
      ? 'Each account is on at least one other computer. With 2, an account stays safe even when one computer is off or lost.'
      : 'Each account is on one other computer.';
  }
  return `Each account is on at least ${n} other computers, so it stays safe even if ${n - 1 === 1 ? 'one of them is' : `${n - 1} of them are`} off or lost.`;
}

/**
 * The question before moving the copies.
 * @param {string} from
 * @param {string} to
 * @returns {{ title: string, body: string, confirm: string }}
 */
export function moveDialog(from, to) {
  return {
    title: 'Move your copies?',
    body:
      `P2PDS will copy everything from ${from} to ${to}, check the copy, and then restart to use the new folder. ` +
      'Backups pause while it copies, which can take a while for large backups. ' +
      'The old folder is kept until you delete it here in Settings.',
    confirm: 'Move and restart',
  };
}

/**
 * A move's progress, in words.
 * @param {MoveProgress} p
 * @returns {string}
 */
export function moveProgressText(p) {
  switch (p.phase) {
    case 'waiting':
      return 'Waiting for the current backup to finish…';
    case 'checking':
      return 'Checking the copy…';
    default:
      if (p.totalBytes <= 0) return 'Copying…';
      return `Copying… ${humanBytes(Math.min(p.doneBytes, p.totalBytes))} of ${humanBytes(p.totalBytes)}`;
  }
}

/**
 * What the page says once a move is done (the app restarts at once).
 * @param {MoveReport} r
 * @returns {string}
 */
export function movedText(r) {
  return `Moved ${humanBytes(r.bytes)} to ${r.to}. P2PDS is restarting…`;
}

/**
 * The storage location part of Settings: whether it can be moved, and the old copy on offer.
 * @param {Settings} s
 * @returns {{ canMove: boolean, fixedNote: string | null, oldCopy: string | null }}
 */
export function locationInfo(s) {
  return {
    canMove: !s.dataDirFixed,
    fixedNote: s.dataDirFixed
      ? 'This folder was chosen when P2PDS was started (with --data-dir or P2PDS_DATA_DIR), so it can’t be changed here.'
      : null,
    oldCopy: s.oldDataDir
      ? `An older copy is still in ${s.oldDataDir}. Your copies are now kept in the folder above, so you can delete the old one to free the space.`
      : null,
  };
}

/**
 * The question before deleting the copy a move left behind.
 * @param {string} dir
 * @returns {{ title: string, body: string, confirm: string }}
 */
export function deleteOldCopyDialog(dir) {
  return {
    title: 'Delete the old copy?',
    body: `P2PDS will delete its files in ${dir}. Your copies in the current folder are not touched.`,
    confirm: 'Delete the old copy',
  };
}

/**
 * The question before dismissing what happened to a friend's account.
 * @param {Friend} friend
 * @param {number} retentionDays
 * @returns {{ title: string, body: string, confirm: string }}
 */
export function dismissFlagsDialog(friend, retentionDays) {
  const days = plural(retentionDays, 'day', 'days');
  return {
    title: `Dismiss what happened to ${friend.name}'s account?`,
    body:
      `Do this only if ${friend.name} meant it (they deleted posts or moved their account themselves). ` +
      `The versions from before will then be kept only for ${days}, like any older version, and then removed. ` +
      `Your newest copy stays.`,
    confirm: 'Dismiss',
  };
}

/**
 * A kept version, for the list in the restore dialog: "Tue 3 Nov, 14:05 — 40 records".
 * @param {KeptVersion} v
 * @param {string} [locale]
 * @returns {string}
 */
export function versionLabel(v, locale) {
  const t = parseTime(v.time);
  const when = Number.isNaN(t)
    ? 'unknown time'
    : new Date(t).toLocaleString(locale, { weekday: 'short', day: 'numeric', month: 'short', year: 'numeric', hour: '2-digit', minute: '2-digit' });
  return v.records == null ? when : `${when} — ${plural(v.records, 'record', 'records')}`;
}

/**
 * A restore's progress, in words.
 * @param {RestoreStep} p
 * @returns {{ label: string, fraction: number | null }}
 */
export function restoreStepView(p) {
  switch (p.phase) {
    case 'preparing':
      return { label: 'Getting the copy ready…', fraction: null };
    case 'account':
      return { label: 'Setting up the account on the new server…', fraction: null };
    case 'records':
      return { label: `Sending posts and other records… ${humanBytes(p.bytes)} sent`, fraction: null };
    case 'images': {
      const total = Math.max(p.imagesTotal, 0);
      return {
        label: `Sending images… ${formatCount(Math.min(p.imagesDone, total))} of ${formatCount(total)}`,
        fraction: total > 0 ? Math.min(1, p.imagesDone / total) : null,
      };
    }
    default:
      return { label: 'Working…', fraction: null };
  }
}

/**
 * What the dialog shows once a restore is done.
 * @param {RestoreOutcome} r
 * @returns {{ title: string, restored: string, missing: string[], steps: string[] }}
 */
export function restoreResultView(r) {
  const images = r.imagesTotal > 0 ? ` and ${formatCount(r.images)} of ${plural(r.imagesTotal, 'image', 'images')}` : '';
  return {
    title: r.complete ? `${r.name}'s account is back` : `${r.name}'s account is back, with gaps`,
    restored: `${plural(r.records, 'record', 'records')}${images} ${r.records === 1 && !images ? 'was' : 'were'} written to the new server.`,
    missing: r.notRestored.map((n) => `${capitalize(n.what)}: ${n.reason}`),
    steps: r.nextSteps,
  };
}

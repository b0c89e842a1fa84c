import assert from 'node:assert/strict';
import { test } from 'node:test';
import {
  accountInfo,
  recoveryKeyView,
  banners,
  canCreateCircle,
  circleChoices,
  circleSections,
  circleStateInfo,
  copiesHint,
  deleteOldCopyDialog,
  dismissFlagsDialog,
  friendFacts,
  friendTone,
  groupTimeline,
  healthHeading,
  healthInfo,
  isPastCircle,
  leaveDialog,
  locationInfo,
  memberChips,
  moveDialog,
  movedText,
  moveProgressText,
  names,
  pauseControl,
  progressView,
  pruneLiveProgress,
  removeFriendDialog,
  restoreResultView,
  restoreStepView,
  storageSummary,
  trayInfo,
  versionLabel,
  withLiveProgress,
} from '../../ui/lib/model.js';
import { circle, friend, invitation, overview, settings } from './fixtures.mjs';

const NOW = Date.parse('2026-03-10T12:00:00Z');

test('tray label: words for each state', () => {
  assert.deepEqual(trayInfo('ok'), { label: 'All good', tone: 'ok' });
  assert.deepEqual(trayInfo('syncing'), { label: 'Backing up…', tone: 'busy' });
  assert.deepEqual(trayInfo('needs-attention'), { label: 'Needs attention', tone: 'warn' });
  assert.deepEqual(trayInfo('problem'), { label: 'Problem', tone: 'danger' });
});

test('tray label: "Not checked yet" until every active circle has passed a check', () => {
  const unchecked = circle({ state: 'active', health: 'ok', checked: false });
  const checked = circle({ state: 'active', health: 'ok', checked: true });
  const invited = circle({ state: 'invited', health: null, checked: false });
  assert.deepEqual(trayInfo('ok', [checked, unchecked]), { label: 'Not checked yet', tone: 'muted' });
  assert.deepEqual(trayInfo('ok', [checked, invited]), { label: 'All good', tone: 'ok' });
  // A worse state keeps its own words.
  assert.deepEqual(trayInfo('problem', [unchecked]), { label: 'Problem', tone: 'danger' });
});

test('pause button: pause for an hour, or resume while paused', () => {
  assert.deepEqual(pauseControl(overview(), NOW), { paused: false, label: 'Pause for 1 hour', note: null });
  const paused = pauseControl(overview({ pausedUntil: new Date(NOW + 45 * 60_000).toISOString() }), NOW);
  assert.equal(paused.paused, true);
  assert.equal(paused.label, 'Resume');
  assert.match(paused.note ?? '', /^Paused until \d/);
  const over = pauseControl(overview({ pausedUntil: new Date(NOW - 1000).toISOString() }), NOW);
  assert.equal(over.paused, false, 'a pause that ended is over');
  assert.deepEqual(pauseControl(overview({ pausedUntil: 'soon' }), NOW), { paused: true, label: 'Resume', note: 'Backups are paused' });
});

test('banners: notifications unavailable, storage filling up', () => {
  assert.deepEqual(banners(overview()), []);
  const notif = banners(overview({ notifications: { available: false, reason: 'no notification service is running.' } }));
  assert.equal(notif.length, 1);
  assert.equal(notif[0].key, 'notifications');
  assert.equal(notif[0].text, "Notifications can't be shown on this computer: no notification service is running.");
  const noReason = banners(overview({ notifications: { available: false, reason: null } }));
  assert.equal(noReason[0].text, "Notifications can't be shown on this computer.");

  const almost = banners(overview({ storage: { usedBytes: 9.5e9, limitBytes: 10e9, perFriend: [] } }));
  assert.deepEqual(almost.map((b) => [b.key, b.tone]), [['storage-almost-full', 'warn']]);
  const full = banners(
    overview({
      storage: { usedBytes: 10e9, limitBytes: 10e9, perFriend: [] },
      notifications: { available: false, reason: 'x' },
    }),
  );
  assert.deepEqual(full.map((b) => b.key), ['storage-full', 'notifications'], 'the most important first');
  assert.match(full[0].text, /10 GB of 10 GB/);
  assert.deepEqual(banners(overview({ storage: { usedBytes: 5e9, limitBytes: 10e9, perFriend: [] } })), []);
});

test('circles screen: invitations first, troubled circles before healthy ones, past ones apart', () => {
  const o = overview({
    invitations: [invitation({ uri: 'at://i/1' }), invitation({ uri: 'at://i/2' })],
    circles: [
      circle({ uri: 'at://c/ok', health: 'ok' }),
      circle({ uri: 'at://c/left', state: 'left', health: null }),
      circle({ uri: 'at://c/waiting', state: 'waiting', health: null }),
      circle({ uri: 'at://c/risk', health: 'at-risk' }),
      circle({ uri: 'at://c/declined', state: 'declined', health: null }),
      circle({ uri: 'at://c/ok2', health: 'ok' }),
    ],
  });
  const s = circleSections(o);
  assert.deepEqual(s.invitations.map((i) => i.uri), ['at://i/1', 'at://i/2']);
  assert.deepEqual(s.current.map((c) => c.uri), ['at://c/risk', 'at://c/waiting', 'at://c/ok', 'at://c/ok2']);
  assert.deepEqual(s.past.map((c) => c.uri), ['at://c/left', 'at://c/declined']);
  for (const st of ['left', 'revoked', 'declined', 'expired', 'gone']) assert.ok(isPastCircle(st));
  for (const st of ['waiting', 'active', 'changing']) assert.ok(!isPastCircle(st));
});

test('state and health words', () => {
  assert.deepEqual(circleStateInfo('waiting'), { label: 'Waiting for answers', tone: 'busy' });
  assert.deepEqual(circleStateInfo('active'), { label: 'Active', tone: 'ok' });
  assert.deepEqual(circleStateInfo('something-new'), { label: 'Something new', tone: 'muted' });
  assert.deepEqual(healthInfo('ok'), { label: 'Healthy', tone: 'ok' });
  assert.equal(healthInfo('at-risk').tone, 'danger');
  assert.equal(healthInfo('failed').tone, 'danger');
  assert.equal(healthInfo('degraded').tone, 'warn');
  assert.equal(healthInfo('unknown').label, 'Not checked yet');
  assert.equal(healthInfo('odd-state').label, 'Odd state');
  assert.equal(friendTone('failing'), 'danger');
  assert.equal(friendTone('first-backup'), 'busy');
  assert.equal(friendTone('gone'), 'muted');
});

test('friend facts and progress in words', () => {
  assert.equal(friendFacts(friend()), '120 MB · 1,234 posts · 56 images');
  assert.equal(friendFacts(friend({ sizeBytes: 0, posts: 1, images: 1 })), '0 bytes · 1 post · 1 image');

  const dl = progressView({ phase: 'downloading', records: 812, bytes: 3_100_000, imagesDone: 0, imagesTotal: 0 });
  assert.deepEqual(dl, { label: 'Downloading', detail: '812 items · 3.1 MB', fraction: null });
  const img = progressView({ phase: 'images', records: 5120, bytes: 48e6, imagesDone: 132, imagesTotal: 410 });
  assert.equal(img.label, 'Saving images');
  assert.equal(img.detail, '5,120 items · 48 MB · 132 images of 410');
  assert.ok(img.fraction !== null && Math.abs(img.fraction - 132 / 410) < 1e-9);
  assert.equal(progressView({ phase: 'checking', records: 0, bytes: 0, imagesDone: 0, imagesTotal: 0 }).detail, '');
  assert.equal(progressView({ phase: 'repairing', records: 0, bytes: 0, imagesDone: 0, imagesTotal: 0 }).label, 'Repairing');
  const over = progressView({ phase: 'images', records: 0, bytes: 0, imagesDone: 12, imagesTotal: 10 });
  assert.equal(over.fraction, 1);
});

test('live progress: laid over the overview, dropped when the backup is over', () => {
  const p = { phase: 'downloading', records: 1, bytes: 1, imagesDone: 0, imagesTotal: 0 };
  const friends = [friend({ did: 'did:plc:a', state: 'syncing' }), friend({ did: 'did:plc:b' })];
  const live = new Map([['did:plc:a', p], ['did:plc:b', p], ['did:plc:gone', p]]);
  const merged = withLiveProgress(friends, live);
  assert.equal(merged[0].progress, p);
  assert.equal(friends[0].progress, null, 'the overview is not changed');
  const kept = pruneLiveProgress(live, friends);
  assert.deepEqual([...kept.keys()], ['did:plc:a']);
  const withOverviewProgress = pruneLiveProgress(live, [friend({ did: 'did:plc:b', progress: p })]);
  assert.deepEqual([...withOverviewProgress.keys()], ['did:plc:b']);
});

test('storage summary', () => {
  assert.deepEqual(storageSummary({ usedBytes: 349e6, limitBytes: 20e9, perFriend: [] }), {
    text: '349 MB of 20 GB used',
    fraction: 349e6 / 20e9,
  });
  assert.deepEqual(storageSummary({ usedBytes: 0, limitBytes: null, perFriend: [] }), { text: '0 bytes used', fraction: null });
  assert.equal(storageSummary({ usedBytes: 30e9, limitBytes: 20e9, perFriend: [] }).fraction, 1);
});

test('member chips: you first, accepted or waiting', () => {
  const chips = memberChips(circle());
  assert.deepEqual(chips.map((c) => c.text), ['You', 'bob.test', 'carol.test']);
  assert.deepEqual(chips.map((c) => c.accepted), [true, true, false]);
  assert.equal(chips[2].title, 'Waiting for carol.test to accept');
});

test('who can be picked for a circle, and whether one can be made', () => {
  const o = overview({
    friends: [friend({ did: 'did:plc:a' }), friend({ did: 'did:plc:b', state: 'gone' }), friend({ did: 'did:plc:c', state: 'failing' })],
  });
  assert.deepEqual(circleChoices(o).map((f) => f.did), ['did:plc:a', 'did:plc:c']);
  assert.deepEqual(canCreateCircle(o), { ok: true, reason: null });
  const signedOut = canCreateCircle(overview({ me: null }));
  assert.ok(!signedOut.ok && /Sign in/.test(signedOut.reason ?? ''));
  const lonely = canCreateCircle(overview({ friends: [] }));
  assert.ok(!lonely.ok && /Add a friend/.test(lonely.reason ?? ''));
  assert.match(copiesHint(2, 3), /at least 2 other computers.*one of them is off/);
  assert.match(copiesHint(3, 3), /2 of them are/);
  assert.match(copiesHint(1, 1), /one other computer/);
  assert.match(copiesHint(1, 0), /Pick/);
});

test('leave dialog: asks once about the copies this computer holds', () => {
  const friends = [
    friend({ did: 'did:plc:bob', name: 'bob.test', sizeBytes: 100e6 }),
    friend({ did: 'did:plc:carol', name: 'carol.test', sizeBytes: 20e6 }),
    friend({ did: 'did:plc:zed', name: 'zed.test', sizeBytes: 999e6 }),
  ];
  const d = leaveDialog(circle(), friends);
  assert.equal(d.title, 'Leave “Family”?');
  assert.equal(d.askCopies, true);
  assert.match(d.body, /^bob\.test and carol\.test will be told you left/);
  assert.match(d.keepHint, /bob\.test and carol\.test stay on this computer/);
  assert.equal(d.deleteHint, 'Frees about 120 MB on this computer.', 'only the members’ copies count');
  assert.equal(d.confirm, 'Leave circle');

  // Nothing held and the circle never started: nothing to ask.
  const waiting = leaveDialog(circle({ state: 'waiting' }), []);
  assert.equal(waiting.askCopies, false);
  // An active circle may hold copies even if sizes are not known yet: ask.
  const active = leaveDialog(circle(), []);
  assert.equal(active.askCopies, true);
  assert.equal(active.deleteHint, 'Frees the space they use on this computer.');
});

test('stop backing up: says what happens, and which circles count on the copy', () => {
  const plain = removeFriendDialog(friend());
  assert.equal(plain.title, 'Stop backing up bob.test?');
  assert.match(plain.body, /\(120 MB\)\.$/);
  const inCircles = removeFriendDialog(friend({ circles: ['Family', 'Book club'] }));
  assert.match(inCircles.body, /in your circles “Family” and “Book club”, which still count on this copy\./);
  const inOne = removeFriendDialog(friend({ circles: ['Family'], sizeBytes: 0 }));
  assert.match(inOne.body, /computer\. bob\.test is in your circle “Family”, which still counts on this copy\./);
});

test('names in a sentence', () => {
  assert.equal(names([]), '');
  assert.equal(names(['a']), 'a');
  assert.equal(names(['a', 'b']), 'a and b');
  assert.equal(names(['a', 'b', 'c']), 'a, b and c');
});

test('timeline: newest first, grouped by day', () => {
  const now = new Date(2026, 2, 10, 15, 0).getTime();
  const t = (/** @type {number} */ d, /** @type {number} */ h) => new Date(2026, 2, d, h, 0).toISOString();
  const groups = groupTimeline(
    [
      { at: t(9, 10), kind: 'check', text: 'all copies checked' },
      { at: t(10, 14), kind: 'sync', text: 'backed up bob.test' },
      { at: t(10, 9), kind: 'alert', text: 'carol.test stopped answering' },
      { at: t(3, 9), kind: 'circle', text: 'dave.test joined' },
    ],
    now,
  );
  assert.deepEqual(groups.map((g) => g.label).slice(0, 2), ['Today', 'Yesterday']);
  assert.equal(groups.length, 3);
  assert.deepEqual(groups[0].items.map((i) => i.text), ['Backed up bob.test', 'carol.test stopped answering']);
  assert.equal(groups[0].items[0].ago, 'an hour ago');
  assert.deepEqual(groups[2].items.map((i) => i.kind), ['circle']);
  assert.deepEqual(groupTimeline([], now), []);
});

test('account line', () => {
  assert.deepEqual(accountInfo(overview()), { signedIn: true, text: 'Signed in as @alice.test.' });
  assert.equal(accountInfo(overview({ me: { did: 'did:plc:x', handle: null } })).text, 'Signed in as your Bluesky account.');
  assert.equal(accountInfo(overview({ me: null })).signedIn, false);
});

test('moving the copies: the question, the progress and the result in words', () => {
  const d = moveDialog('/home/alice/.local/share/p2pds', '/mnt/usb/P2PDS');
  assert.match(d.body, /\/mnt\/usb\/P2PDS/);
  assert.match(d.body, /restart/);
  assert.match(d.body, /old folder is kept/);
  assert.equal(d.confirm, 'Move and restart');
  assert.equal(moveProgressText({ phase: 'waiting', doneBytes: 0, totalBytes: 0 }), 'Waiting for the current backup to finish…');
  assert.equal(moveProgressText({ phase: 'copying', doneBytes: 0, totalBytes: 0 }), 'Copying…');
  assert.equal(moveProgressText({ phase: 'copying', doneBytes: 600_000_000, totalBytes: 1_200_000_000 }), 'Copying… 600 MB of 1.2 GB');
  assert.equal(moveProgressText({ phase: 'copying', doneBytes: 9e9, totalBytes: 1e9 }), 'Copying… 1 GB of 1 GB');
  assert.equal(moveProgressText({ phase: 'checking', doneBytes: 1, totalBytes: 1 }), 'Checking the copy…');
  assert.equal(movedText({ from: '/a', to: '/b', bytes: 1_200_000_000, files: 3 }), 'Moved 1.2 GB to /b. P2PDS is restarting…');
});

test('where copies are kept: fixed by the command line, and the old copy on offer', () => {
  assert.deepEqual(locationInfo(settings()), { canMove: true, fixedNote: null, oldCopy: null });
  const fixed = locationInfo(settings({ dataDirFixed: true }));
  assert.ok(!fixed.canMove && /--data-dir or P2PDS_DATA_DIR/.test(fixed.fixedNote ?? ''));
  const old = locationInfo(settings({ oldDataDir: '/home/alice/.local/share/p2pds' }));
  assert.ok(old.canMove && old.oldCopy?.includes('/home/alice/.local/share/p2pds') && /delete/.test(old.oldCopy));
  const q = deleteOldCopyDialog('/old');
  assert.match(q.body, /\/old/);
  assert.match(q.body, /not touched/);
});

test('flags: dismissing says how long the versions from before stay', () => {
  const d = dismissFlagsDialog(friend({ name: 'alice.test' }), 30);
  assert.equal(d.confirm, 'Dismiss');
  assert.match(d.body, /kept only for 30 days/);
  assert.match(d.body, /meant it/);
  assert.doesNotMatch(d.body + d.title, /did:/);
  assert.match(dismissFlagsDialog(friend(), 1).body, /only for 1 day,/);
});

test('storage: the engine’s words about the limit make the banner', () => {
  const text = 'Your storage limit of 1.0 GB is reached: some backups are waiting for room.';
  const o = overview({ storage: { usedBytes: 5, limitBytes: 1_000_000_000, perFriend: [], retentionDays: 30, limitText: text } });
  const b = banners(o);
  assert.equal(b[0].key, 'storage-full');
  assert.equal(b[0].text, text);
  assert.equal(b.filter((x) => x.key.startsWith('storage')).length, 1);
});

test('restore: kept versions read as a date and a count', () => {
  const label = versionLabel({ rev: '3l', time: '2026-11-03T14:05:00Z', records: 40 }, 'en-GB');
  assert.match(label, /3 Nov 2026/);
  assert.match(label, /40 records$/);
  assert.doesNotMatch(versionLabel({ rev: '3l', time: '2026-11-03T14:05:00Z', records: null }, 'en-GB'), /records/);
  assert.equal(versionLabel({ rev: 'x', time: '', records: 1 }), 'unknown time — 1 record');
});

test('restore: progress in words, images as n of total', () => {
  const step = (over) => ({ phase: 'preparing', bytes: 0, imagesDone: 0, imagesTotal: 0, ...over });
  assert.deepEqual(restoreStepView(step({})), { label: 'Getting the copy ready…', fraction: null });
  assert.match(restoreStepView(step({ phase: 'account' })).label, /new server/);
  assert.equal(restoreStepView(step({ phase: 'records', bytes: 2_500_000 })).label, 'Sending posts and other records… 2.5 MB sent');
  const img = restoreStepView(step({ phase: 'images', imagesDone: 3, imagesTotal: 12 }));
  assert.equal(img.label, 'Sending images… 3 of 12');
  assert.equal(img.fraction, 0.25);
  assert.equal(restoreStepView(step({ phase: 'images' })).fraction, null);
});

test('restore: the result says what came back, what did not and what is left', () => {
  const outcome = {
    did: 'did:plc:bob',
    name: 'bob.test',
    time: '2026-11-03T14:05:00Z',
    why: 'It is the last version from before this happened.',
    toPds: 'https://pds.example.net',
    records: 40,
    images: 11,
    imagesTotal: 12,
    notRestored: [{ what: 'image bafy…', reason: 'the new server refused it: too large' }],
    identityMoved: false,
    nextSteps: ['Ask bob to sign in at the new server.', 'Point the identity at the new server.'],
    complete: false,
  };
  const v = restoreResultView(outcome);
  assert.equal(v.title, "bob.test's account is back, with gaps");
  assert.equal(v.restored, '40 records and 11 of 12 images were written to the new server.');
  assert.deepEqual(v.missing, ['Image bafy…: the new server refused it: too large']);
  assert.equal(v.steps.length, 2);
  const whole = restoreResultView({ ...outcome, complete: true, notRestored: [], imagesTotal: 0, images: 0, records: 1 });
  assert.equal(whole.title, "bob.test's account is back");
  assert.equal(whole.restored, '1 record was written to the new server.');
});

test('the recovery key: set up in two steps, the key shown once to write down', () => {
  const st = (state, code = null) => ({ state, text: `text for ${state}`, code });
  const none = recoveryKeyView(st('none'));
  assert.equal(none.start, 'Set up a recovery key');
  assert.equal(none.form, false);
  assert.equal(none.text, 'text for none');
  const sent = recoveryKeyView(st('code-sent'));
  assert.equal(sent.start, null);
  assert.ok(sent.form && sent.codeField);
  assert.equal(sent.submit, 'Add the recovery key');
  const done = recoveryKeyView(st('registered', 'abcd-ef01'));
  assert.equal(done.key, 'abcd-ef01');
  assert.match(done.text, /Write this recovery key down/);
  const later = recoveryKeyView(st('registered'));
  assert.equal(later.key, null);
  assert.equal(later.start, null);
  assert.equal(later.text, 'text for registered');
  assert.equal(recoveryKeyView(st('held')).start, 'Set it up again');
  for (const s of ['unknown', 'unavailable']) {
    const v = recoveryKeyView(st(s));
    assert.equal(v.start, null, s);
    assert.equal(v.form, false, s);
  }
});

test("circle page heading: the engine's words and colour, else the state's", () => {
  assert.deepEqual(healthHeading({ state: 'ok', label: 'Not checked yet', tone: 'busy' }), { label: 'Not checked yet', tone: 'busy' });
  assert.deepEqual(healthHeading({ state: 'recovering', label: 'Getting ready', tone: 'busy' }), { label: 'Getting ready', tone: 'busy' });
  assert.deepEqual(healthHeading({ state: 'ok', label: 'Healthy', tone: 'ok' }), { label: 'Healthy', tone: 'ok' });
  // An older engine, or a colour the window does not know: the state decides.
  assert.deepEqual(healthHeading({ state: 'ok' }), healthInfo('ok'));
  assert.deepEqual(healthHeading({ state: 'at-risk', label: 'At risk', tone: 'purple' }), healthInfo('at-risk'));
});

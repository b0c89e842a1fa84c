import assert from 'node:assert/strict';
import { test } from 'node:test';
import {
  checkCircle,
  checkFriend,
  checkMoveTarget,
  checkRestore,
  checkSettings,
  checkSignIn,
  GB,
  isDid,
  isHandle,
  looksLikeAppPassword,
  minCopiesBounds,
  folderExample,
  isWindowsPath,
  normalizeHandle,
  RETENTION_DAYS,
  recoveryKeyDigits,
  serverAddress,
  settingsToForm,
} from '../../ui/lib/validate.js';
import { settings } from './fixtures.mjs';

test('handle syntax', () => {
  for (const ok of ['alice.bsky.social', 'a.co', 'xn--ls8h.test', 'john-doe.example.com', 'A.Bsky.Social']) {
    assert.ok(isHandle(ok), ok);
  }
  for (const bad of ['alice', '', 'alice.', '.alice.com', 'al ice.com', '-alice.com', 'alice-.com', 'alice.123', 'a_b.com', `${'a'.repeat(64)}.com`, `${'a.'.repeat(127)}com`]) {
    assert.ok(!isHandle(bad), bad);
  }
});

test('DIDs pass where handles do', () => {
  assert.ok(isDid('did:plc:z72i7hdynmk6r22z27h6tvur'));
  assert.ok(isDid('did:web:example.com'));
  assert.ok(!isDid('did:plc:'));
  assert.ok(!isDid('did:PLC:abc'));
  assert.ok(!isDid('plc:abc'));
});

test('what people paste is tidied', () => {
  assert.equal(normalizeHandle('  @Alice.Bsky.Social '), 'alice.bsky.social');
  assert.equal(normalizeHandle('https://bsky.app/profile/carol.example.com'), 'carol.example.com');
  assert.equal(normalizeHandle('bsky.app/profile/carol.example.com/post/3k'), 'carol.example.com');
  assert.equal(normalizeHandle('https://bsky.app/profile/did:plc:AbC'), 'did:plc:AbC');
});

test('add a friend: accepts handles and DIDs, explains the rest', () => {
  assert.deepEqual(checkFriend('@Bob.bsky.social'), { ok: true, value: 'bob.bsky.social' });
  assert.deepEqual(checkFriend('did:plc:abc123'), { ok: true, value: 'did:plc:abc123' });
  const empty = checkFriend('   ');
  assert.ok(!empty.ok && /handle/.test(empty.error));
  const noDot = checkFriend('bob');
  assert.ok(!noDot.ok && noDot.error.includes('bob.bsky.social'), 'suggests the bsky.social handle');
  const bad = checkFriend('bob smith');
  assert.ok(!bad.ok && /doesn’t look like a handle/.test(bad.error));
});

test('sign in: handle first, then the password', () => {
  const r = checkSignIn(' @Alice.bsky.social ', ' abcd-efgh-ijkl-mnop ');
  assert.deepEqual(r, { ok: true, value: { handle: 'alice.bsky.social', password: 'abcd-efgh-ijkl-mnop' } });
  const noHandle = checkSignIn('', 'x');
  assert.ok(!noHandle.ok && noHandle.field === 'handle');
  const badHandle = checkSignIn('alice', 'x');
  assert.ok(!badHandle.ok && badHandle.field === 'handle' && badHandle.error.includes('alice.bsky.social'));
  const noPassword = checkSignIn('alice.bsky.social', '  ');
  assert.ok(!noPassword.ok && noPassword.field === 'password');
  assert.ok(looksLikeAppPassword('abcd-efgh-ijkl-mnop'));
  assert.ok(!looksLikeAppPassword('hunter2'));
});

test('min copies: 1 to the number of picked friends, default 2 where possible', () => {
  assert.deepEqual(minCopiesBounds(0), { min: 1, max: 1, value: 1 });
  assert.deepEqual(minCopiesBounds(1), { min: 1, max: 1, value: 1 });
  assert.deepEqual(minCopiesBounds(2), { min: 1, max: 2, value: 2 });
  assert.deepEqual(minCopiesBounds(5), { min: 1, max: 5, value: 2 });
});

test('create a circle: name, friends, and copies within bounds', () => {
  assert.deepEqual(checkCircle('  Book   club ', ['did:plc:a', 'did:plc:b', 'did:plc:a'], 2), {
    ok: true,
    value: { name: 'Book club', members: ['did:plc:a', 'did:plc:b'], minCopies: 2 },
  });
  const noName = checkCircle(' ', ['did:plc:a'], 1);
  assert.ok(!noName.ok && noName.field === 'name');
  const long = checkCircle('x'.repeat(65), ['did:plc:a'], 1);
  assert.ok(!long.ok && long.field === 'name');
  const nobody = checkCircle('Family', [], 1);
  assert.ok(!nobody.ok && nobody.field === 'members');
  for (const n of [0, 3, 1.5, Number.NaN]) {
    const r = checkCircle('Family', ['did:plc:a', 'did:plc:b'], n);
    assert.ok(!r.ok && r.field === 'minCopies', String(n));
    assert.ok(!r.ok && r.error.includes('from 1 to 2'));
  }
  const one = checkCircle('Family', ['did:plc:a'], 2);
  assert.ok(!one.ok && /one friend/.test(one.error));
});

test('settings: the form round-trips and checks what is typed', () => {
  const base = settings({ storageLimitBytes: 20 * GB, serve: true, endpoint: 'https://me.example' });
  const form = settingsToForm(base);
  assert.equal(form.limitGb, '20');
  assert.equal(form.endpoint, 'https://me.example');
  assert.deepEqual(checkSettings(base, form), { ok: true, value: base });

  const noLimit = checkSettings(base, { ...form, limitGb: '  ', endpoint: '' });
  assert.ok(noLimit.ok && noLimit.value.storageLimitBytes === null && noLimit.value.endpoint === null);
  const comma = checkSettings(base, { ...form, limitGb: '2,5' });
  assert.ok(comma.ok && comma.value.storageLimitBytes === 2.5 * GB);
  assert.equal(settingsToForm(settings({ storageLimitBytes: 1_234_567_890 })).limitGb, '1.23');

  const cases = /** @type {const} */ ([
    ['limitGb', '-1'],
    ['limitGb', 'lots'],
    ['retentionDays', '0'],
    ['retentionDays', '3651'],
    ['retentionDays', '7.5'],
    ['retentionDays', ''],
    ['retentionDays', 'a month'],
    ['checkEveryMinutes', '0'],
    ['checkEveryMinutes', '2.5'],
    ['checkEveryMinutes', '20000'],
    ['listen', 'localhost'],
    ['listen', '0.0.0.0:99999'],
    ['endpoint', 'me.example'],
  ]);
  for (const [field, value] of cases) {
    const r = checkSettings(base, { ...form, [field]: value });
    assert.ok(!r.ok && r.field === field, `${field}=${value}`);
  }
  // The listen address only matters while serving.
  const off = checkSettings(base, { ...form, serve: false, listen: '' });
  assert.ok(off.ok && off.value.listen === base.listen && off.value.serve === false);
  // What the form does not show is kept.
  const kept = checkSettings(base, form);
  assert.ok(kept.ok && kept.value.dataDir === '/data/p2pds');
  assert.ok(checkSettings(base, { ...form, listen: '[::1]:2583' }).ok);
  assert.equal(/** @type {any} */ (checkSettings(base, { ...form, endpoint: 'https://me.example/' })).value.endpoint, 'https://me.example');
});

test('settings: days of older versions, 1 to 3650, as typed', () => {
  const base = settings({ retentionDays: 30 });
  const form = settingsToForm(base);
  assert.equal(form.retentionDays, '30');
  const r = checkSettings(base, { ...form, retentionDays: ' 90 ' });
  assert.ok(r.ok && r.value.retentionDays === 90);
  for (const days of [String(RETENTION_DAYS.min), String(RETENTION_DAYS.max)]) {
    assert.ok(checkSettings(base, { ...form, retentionDays: days }).ok, days);
  }
  const bad = checkSettings(base, { ...form, retentionDays: '0' });
  assert.ok(!bad.ok && bad.field === 'retentionDays' && bad.error.includes('from 1 to 3650'));
});

test('moving the copies: a full path, not the folder in use nor one inside it', () => {
  const s = settings({ dataDir: '/home/alice/.local/share/p2pds' });
  assert.deepEqual(checkMoveTarget(s, '  /mnt/usb/P2PDS '), { ok: true, value: '/mnt/usb/P2PDS' });
  assert.ok(checkMoveTarget(s, '~/Backups/P2PDS').ok, 'the home folder as ~');
  const empty = checkMoveTarget(s, ' ');
  assert.ok(!empty.ok && empty.error.includes('/home/alice/Backups/P2PDS'), 'an example in the person’s own home');
  const relative = checkMoveTarget(s, 'Backups/P2PDS');
  assert.ok(!relative.ok && /whole path/.test(relative.error));
  const same = checkMoveTarget(s, '/home/alice/.local/share/p2pds/');
  assert.ok(!same.ok && /already kept/.test(same.error));
  const inside = checkMoveTarget(s, '/home/alice/.local/share/p2pds/more');
  assert.ok(!inside.ok && /inside/.test(inside.error));
  assert.ok(checkMoveTarget(s, '/home/alice/.local/share/p2pds-2').ok, 'a sibling with a longer name is not inside');
  const fixed = checkMoveTarget(settings({ dataDirFixed: true }), '/mnt/usb');
  assert.ok(!fixed.ok && /P2PDS_DATA_DIR/.test(fixed.error));

  // Windows: drive letters, either slash, any case.
  const w = settings({ dataDir: 'C:\\Users\\Alice\\AppData\\Roaming\\p2pds\\data' });
  assert.ok(isWindowsPath(w.dataDir) && !isWindowsPath('/home/alice'));
  assert.equal(folderExample(w.dataDir), 'D:\\Backups\\P2PDS');
  assert.ok(checkMoveTarget(w, 'D:\\P2PDS').ok);
  assert.ok(!checkMoveTarget(w, 'c:/users/alice/appdata/roaming/p2pds/data/x').ok);
  assert.ok(!checkMoveTarget(w, 'C:\\Users\\Alice\\AppData\\Roaming\\p2pds\\data\\').ok);
  assert.equal(folderExample('/Users/bob/Library/Application Support/org.p2pds.p2pds'), '/Users/bob/Backups/P2PDS');
});

test('restore: server addresses are web addresses of a host', () => {
  assert.equal(serverAddress('pds.example.net'), 'https://pds.example.net');
  assert.equal(serverAddress(' https://PDS.example.net/ '), 'https://pds.example.net');
  assert.equal(serverAddress('http://localhost:2583'), 'http://localhost:2583');
  for (const bad of ['', 'pds', 'ftp://pds.example.net', 'http://pds.example.net', 'https://pds.example.net/xrpc', 'https://u:p@pds.example.net', 'pds example.net', 'https://pds.example.net?x=1']) {
    assert.equal(serverAddress(bad), null, bad);
  }
});

test('restore: required fields, the URL, and the owner password only when asked', () => {
  const form = (over = {}) => ({
    did: 'did:plc:bob',
    rev: null,
    toPds: 'pds.example.net',
    handle: '@Bob.PDS.example.net',
    password: 'new-secret',
    ownerPasswordDiffers: false,
    oldPassword: 'ignored',
    email: '',
    inviteCode: ' ',
    plcToken: '',
    recoveryKey: ' ',
    ...over,
  });
  const ok = checkRestore(form());
  assert.ok(ok.ok);
  assert.deepEqual(ok.value, {
    did: 'did:plc:bob',
    rev: null,
    toPds: 'https://pds.example.net',
    handle: 'bob.pds.example.net',
    password: 'new-secret',
    oldPassword: null,
    email: null,
    inviteCode: null,
    plcToken: null,
    recoveryKey: null,
  });
  const field = (over) => {
    const c = checkRestore(form(over));
    assert.ok(!c.ok, JSON.stringify(over));
    return c.field;
  };
  assert.equal(field({ toPds: ' ' }), 'toPds');
  assert.equal(field({ toPds: 'not a server' }), 'toPds');
  assert.equal(field({ handle: '' }), 'handle');
  assert.equal(field({ handle: 'bob' }), 'handle');
  assert.equal(field({ password: '' }), 'password');
  assert.equal(field({ ownerPasswordDiffers: true, oldPassword: '' }), 'oldPassword');
  assert.equal(field({ email: 'bob@' }), 'email');
  const both = checkRestore(form({ ownerPasswordDiffers: true, oldPassword: 'main-pw', rev: '3l', email: ' b@x.io ', inviteCode: 'inv-1', plcToken: ' ABC-123 ' }));
  assert.ok(both.ok);
  assert.equal(both.value.oldPassword, 'main-pw');
  assert.equal(both.value.rev, '3l');
  assert.equal(both.value.email, 'b@x.io');
  assert.equal(both.value.inviteCode, 'inv-1');
  assert.equal(both.value.plcToken, 'ABC-123');
  // The recovery key as written down: groups of four, any case, spaces or dashes.
  const digits = '0123456789abcdef'.repeat(4);
  const grouped = digits.toUpperCase().match(/.{4}/g).join('-');
  const withKey = checkRestore(form({ recoveryKey: ` ${grouped} ` }));
  assert.ok(withKey.ok);
  assert.equal(withKey.value.recoveryKey, digits);
  assert.equal(recoveryKeyDigits(grouped.replaceAll('-', ' ')), digits);
  assert.equal(field({ recoveryKey: grouped.slice(0, -1) }), 'recoveryKey');
  assert.equal(field({ recoveryKey: `${digits.slice(0, -1)}g` }), 'recoveryKey');
});

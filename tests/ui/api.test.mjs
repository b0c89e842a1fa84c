import assert from 'node:assert/strict';
import { afterEach, test } from 'node:test';
import { api, coalesce, errorText, onEngineEvent, tauri } from '../../ui/lib/api.js';

/** @type {{ cmd: string, args: unknown }[]} */
let calls = [];
const g = /** @type {any} */ (globalThis);

function fakeTauri() {
  calls = [];
  /** @type {((e: { payload: unknown }) => void)[]} */
  const handlers = [];
  g.__TAURI__ = {
    core: {
      invoke: async (/** @type {string} */ cmd, /** @type {unknown} */ args) => {
        calls.push({ cmd, args });
        if (cmd === 'add_friend') throw 'No account called nobody.test.';
        return cmd;
      },
    },
    event: {
      listen: async (/** @type {string} */ name, /** @type {(e: { payload: unknown }) => void} */ h) => {
        assert.equal(name, 'engine');
        handlers.push(h);
        return () => {};
      },
    },
  };
  return handlers;
}

afterEach(() => {
  delete g.__TAURI__;
});

test('outside the app, commands fail with a sentence', async () => {
  assert.equal(tauri(), null);
  await assert.rejects(api.overview(), /only works inside the P2PDS app/);
});

test('commands and their arguments, camelCase as Tauri expects', async () => {
  fakeTauri();
  const settings = { dataDir: '/d', dataDirFixed: false, oldDataDir: null, storageLimitBytes: null, retentionDays: 30, startAtLogin: false, checkEveryMinutes: 30, pauseOnBattery: false, serve: false, listen: '127.0.0.1:1', endpoint: null };
  await api.overview();
  await api.signIn('alice.test', 'abcd-efgh-ijkl-mnop');
  await api.skipSignIn();
  await api.signOut();
  await api.removeFriend('did:plc:bob');
  await api.syncNow();
  await api.pause(60);
  await api.resume();
  await api.createCircle('Family', ['did:plc:bob'], 1);
  await api.acceptInvitation('at://i');
  await api.declineInvitation('at://i');
  await api.leaveCircle('at://c', false);
  await api.circleHealth('at://c');
  await api.getSettings();
  await api.saveSettings(settings);
  await api.moveStorage('/mnt/disk/p2pds');
  await api.deleteOldCopy();
  await api.openHelp('app-passwords');
  await api.recoveryKeyStatus();
  await api.addRecoveryKey('main-pw', null);
  await api.addRecoveryKey('main-pw', 'ABCDE-12345');
  assert.deepEqual(calls, [
    { cmd: 'overview', args: undefined },
    { cmd: 'sign_in', args: { handle: 'alice.test', password: 'abcd-efgh-ijkl-mnop' } },
    { cmd: 'skip_sign_in', args: undefined },
    { cmd: 'sign_out', args: undefined },
    { cmd: 'remove_friend', args: { did: 'did:plc:bob' } },
    { cmd: 'sync_now', args: undefined },
    { cmd: 'pause', args: { minutes: 60 } },
    { cmd: 'resume', args: undefined },
    { cmd: 'create_circle', args: { name: 'Family', members: ['did:plc:bob'], minCopies: 1 } },
    { cmd: 'accept_invitation', args: { uri: 'at://i' } },
    { cmd: 'decline_invitation', args: { uri: 'at://i' } },
    { cmd: 'leave_circle', args: { uri: 'at://c', keepCopies: false } },
    { cmd: 'circle_health', args: { uri: 'at://c' } },
    { cmd: 'get_settings', args: undefined },
    { cmd: 'save_settings', args: { settings } },
    { cmd: 'move_storage', args: { dir: '/mnt/disk/p2pds' } },
    { cmd: 'delete_old_copy', args: undefined },
    { cmd: 'open_help', args: { topic: 'app-passwords' } },
    { cmd: 'recovery_key_status', args: undefined },
    { cmd: 'add_recovery_key', args: { password: 'main-pw', code: null } },
    { cmd: 'add_recovery_key', args: { password: 'main-pw', code: 'ABCDE-12345' } },
  ]);
  await assert.rejects(api.addFriend('nobody.test'), (e) => errorText(e) === 'No account called nobody.test.');
  assert.deepEqual(calls.at(-1), { cmd: 'add_friend', args: { who: 'nobody.test' } });
});

test('engine events reach the handler', async () => {
  const handlers = fakeTauri();
  /** @type {unknown[]} */
  const seen = [];
  await onEngineEvent((e) => seen.push(e));
  handlers.forEach((h) => h({ payload: { type: 'changed' } }));
  assert.deepEqual(seen, [{ type: 'changed' }]);
});

test('error text: a sentence whatever was thrown', () => {
  assert.equal(errorText('  Bluesky said no. '), 'Bluesky said no.');
  assert.equal(errorText(new Error('boom')), 'boom');
  assert.equal(errorText({ message: 'from an object' }), 'from an object');
  // What the engine sends: an ErrorAnswer (ui/types.d.ts).
  /** @type {import('../../ui/types').ErrorAnswer} */
  const answer = { code: 'moving', message: 'P2PDS is moving your copies to a new folder.' };
  assert.equal(errorText(answer), 'P2PDS is moving your copies to a new folder.');
  assert.equal(errorText(''), 'Something went wrong. Please try again.');
  assert.equal(errorText(null), 'Something went wrong. Please try again.');
  assert.equal(errorText(42), 'Something went wrong. Please try again.');
});

test('coalesce: one run at a time, and one more for calls made meanwhile', async () => {
  let runs = 0;
  /** @type {(() => void)[]} */
  const release = [];
  const run = coalesce(async () => {
    runs += 1;
    await new Promise((r) => release.push(() => r(undefined)));
  });
  const a = run();
  const b = run();
  const c = run();
  assert.equal(runs, 1);
  release.shift()?.();
  await new Promise((r) => setTimeout(r, 0));
  assert.equal(runs, 2, 'the calls made during the first run make one more run');
  release.shift()?.();
  await Promise.all([a, b, c]);
  assert.equal(runs, 2);
  const d = run();
  assert.equal(runs, 3);
  release.shift()?.();
  await d;
});

// Sample documents, shaped like the Rust side's (ui/types.d.ts).

/** @returns {import('../../ui/types').Friend} */
export function friend(over = {}) {
  return {
    did: 'did:plc:bob',
    handle: 'bob.test',
    name: 'bob.test',
    state: 'ok',
    statusText: 'backed up 3 minutes ago',
    lastBackupAt: '2026-01-01T00:00:00Z',
    sizeBytes: 120_000_000,
    posts: 1234,
    images: 56,
    progress: null,
    problem: null,
    circles: [],
    flags: [],
    canRestore: true,
    followed: 'live',
    followText: 'every change is copied as it happens',
    ...over,
  };
}

/** @returns {import('../../ui/types').CircleCard} */
export function circle(over = {}) {
  return {
    uri: 'at://did:plc:alice/org.p2pds.circle/1',
    name: 'Family',
    state: 'active',
    authorName: 'alice.test',
    youWroteIt: true,
    members: [
      { did: 'did:plc:bob', name: 'bob.test', accepted: true, isYou: false },
      { did: 'did:plc:alice', name: 'alice.test', accepted: true, isYou: true },
      { did: 'did:plc:carol', name: 'carol.test', accepted: false, isYou: false },
    ],
    minCopies: 2,
    health: 'ok',
    sentence: 'Everyone is safe',
    checked: true,
    ...over,
  };
}

/** @returns {import('../../ui/types').InvitationCard} */
export function invitation(over = {}) {
  return {
    uri: 'at://did:plc:dave/org.p2pds.circle/9',
    fromName: 'dave.test',
    circleName: 'Neighbours',
    text: "dave.test asks you to keep copies of dave.test's account, about 12 MB, checked every 30 minutes",
    memberNames: ['dave.test', 'alice.test'],
    estimatedBytes: 12_000_000,
    checkEvery: '30 minutes',
    ...over,
  };
}

/** @returns {import('../../ui/types').Overview} */
export function overview(over = {}) {
  return {
    me: { did: 'did:plc:alice', handle: 'alice.test' },
    welcomed: true,
    friends: [friend()],
    circles: [],
    invitations: [],
    tray: 'ok',
    trayReason: null,
    headline: 'All 1 accounts are safe',
    pausedUntil: null,
    notifications: { available: true, reason: null },
    storage: { usedBytes: 120_000_000, limitBytes: null, perFriend: [], retentionDays: 30, limitText: null },
    ...over,
  };
}

/** @returns {import('../../ui/types').Settings} */
export function settings(over = {}) {
  return {
    dataDir: '/data/p2pds',
    dataDirFixed: false,
    oldDataDir: null,
    storageLimitBytes: null,
    retentionDays: 30,
    startAtLogin: false,
    checkEveryMinutes: 30,
    pauseOnBattery: true,
    serve: false,
    listen: '127.0.0.1:2583',
    endpoint: null,
    ...over,
  };
}

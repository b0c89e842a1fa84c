// Invitation links in the window (ui/lib/invite.js): reading a pasted link, the words around
// it, copying, and taking the engine's QR code into the page; the commands (ui/lib/api.js); the
// ids the end-to-end test uses.
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { afterEach, test } from 'node:test';
import { api } from '../../ui/lib/api.js';
import { cleanLink, copyText, importSvg, linkCircleUri, linkErrorText, openedText, waitingHint } from '../../ui/lib/invite.js';
import { circle, invitation, overview } from './fixtures.mjs';

const URI = 'at://did:plc:abcdefghijklmnopqrstuvwx/org.p2pds.policy/3lbxyz2kq4s2a';
const CID = 'bafyreie5737gdxlw5i64vzichcalba3z2v5n6icifvx5xytvske7mr3hpm';
/** As the engine writes it: every character but the unreserved ones percent-encoded. */
const LINK = `p2pds://invite?uri=${encodeURIComponent(URI).replace(/\./g, '%2E')}&cid=${CID}`;

test('a pasted link loses what chat and mail put around it', () => {
  for (const [pasted, want] of [
    [LINK, LINK],
    [`  ${LINK}\n`, LINK],
    [`<${LINK}>`, LINK],
    [`\t< ${LINK} >  `, LINK],
    ['', ''],
    ['   ', ''],
    // Only a pair of brackets around it is taken off; the rest is the engine's to judge.
    [`<${LINK}`, `<${LINK}`],
    [`${LINK} thanks`, `${LINK} thanks`],
  ]) {
    assert.equal(cleanLink(pasted), want, JSON.stringify(pasted));
  }
});

test('the circle a link names, to find its invitation once open', () => {
  assert.equal(linkCircleUri(LINK), URI);
  assert.equal(linkCircleUri(`<${LINK}>`), URI);
  assert.equal(linkCircleUri(`P2PDS://INVITE?cid=${CID}&uri=${encodeURIComponent(URI)}`), URI);
  assert.equal(linkCircleUri(`p2pds://invite/?uri=${encodeURIComponent(URI)}`), URI);
  for (const bad of [
    '',
    'hello',
    `https://example.com/invite?uri=${encodeURIComponent(URI)}`,
    `p2pds://join?uri=${encodeURIComponent(URI)}`,
    `p2pds://invite?cid=${CID}`,
    'p2pds://invite?uri=%E0%A4%A',
    'p2pds://invite?uri=https%3A%2F%2Fexample.com',
  ]) {
    assert.equal(linkCircleUri(bad), null, bad);
  }
});

test('a refused link, in a sentence beside the field', () => {
  const damaged = {
    code: 'link-damaged',
    message: 'this invitation link is damaged (something was added to it): copy the whole link again, or ask the person who invited you for a new one',
  };
  assert.equal(
    linkErrorText(damaged, 'circles'),
    'This invitation link is damaged (something was added to it): copy the whole link again, or ask the person who invited you for a new one.',
  );
  // A sentence that already ends keeps its end; a handle at its start stays lower case.
  assert.equal(linkErrorText({ code: 'link-revoked', message: 'alice.test ended the circle “Kitchen”: nothing to accept.' }, 'circles'), 'alice.test ended the circle “Kitchen”: nothing to accept.');
  assert.equal(linkErrorText('the network is down', 'circles'), 'The network is down.');
  assert.equal(linkErrorText(new Error('boom'), 'circles'), 'Boom.');
  assert.equal(linkErrorText(null, 'circles'), 'This link could not be opened. Please try again.');
  assert.equal(linkErrorText({ code: 'other', message: '  ' }, 'circles'), 'This link could not be opened. Please try again.');
  // Not signed in: the engine's words are for the command line; the window says where to go.
  const out = { code: 'not-signed-in', message: 'not signed in: run `p2pds login HANDLE` first' };
  assert.match(linkErrorText(out, 'welcome'), /^Sign in first, then open the link again/);
  assert.match(linkErrorText(out, 'circles'), /^Sign in first \(in Settings\), then open the link again/);
  assert.doesNotMatch(linkErrorText(out, 'welcome'), /p2pds login/);
});

test('once open: the invitation waits, or the circle was already answered', () => {
  const inv = invitation({ uri: URI, circleName: 'Kitchen table', fromName: 'alice.test' });
  const waiting = openedText(overview({ invitations: [invitation(), inv] }), URI);
  assert.equal(waiting.found, 'invitation');
  assert.match(waiting.text, /“Kitchen table” from alice\.test is open/);
  const answered = openedText(overview({ circles: [circle({ uri: URI, name: 'Kitchen table' })] }), URI);
  assert.equal(answered.found, 'circle');
  assert.match(answered.text, /already answered.*“Kitchen table”/);
  for (const uri of [URI, null]) {
    const none = openedText(overview(), uri);
    assert.equal(none.found, null);
    assert.match(none.text, /open/);
  }
});

test('a circle with members who have not answered suggests the link', () => {
  assert.equal(
    waitingHint(circle()),
    'carol.test has not answered yet. If the invitation has not reached them, send them the invitation link.',
  );
  const three = circle({
    members: [
      { did: 'did:plc:alice', name: 'alice.test', accepted: false, isYou: true },
      { did: 'did:plc:bob', name: 'bob.test', accepted: false, isYou: false },
      { did: 'did:plc:carol', name: 'carol.test', accepted: false, isYou: false },
      { did: 'did:plc:dave', name: 'dave.test', accepted: false, isYou: false },
    ],
  });
  assert.match(waitingHint(three) ?? '', /^bob\.test, carol\.test and dave\.test have not answered yet\./);
  const all = circle({ members: circle().members.map((m) => ({ ...m, accepted: true })) });
  assert.equal(waitingHint(all), null);
  // Only you waiting (your own answer): nobody to send a link to.
  assert.equal(waitingHint(circle({ members: [{ did: 'did:plc:alice', name: 'alice.test', accepted: false, isYou: true }] })), null);
});

test('copying: true only when the clipboard took it', async () => {
  /** @type {string[]} */
  const got = [];
  assert.equal(await copyText(LINK, { writeText: async (t) => void got.push(t) }), true);
  assert.deepEqual(got, [LINK]);
  assert.equal(await copyText(LINK, { writeText: async () => Promise.reject(new Error('NotAllowedError')) }), false);
  assert.equal(await copyText(LINK, {}), false);
  assert.equal(await copyText(LINK, undefined), false);
  assert.equal(await copyText(LINK, null), false);
});

const SVG_NS = 'http://www.w3.org/2000/svg';

/** A stand-in for a parsed element: what `importSvg` uses of the DOM. */
class El {
  /** @param {string} localName @param {Record<string, string>} [attrs] @param {El[]} [children] @param {string | null} [ns] */
  constructor(localName, attrs = {}, children = [], ns = SVG_NS) {
    this.localName = localName;
    this.namespaceURI = ns;
    /** @type {{ name: string, value: string }[]} */
    this.attributes = Object.entries(attrs).map(([name, value]) => ({ name, value }));
    /** @type {El[]} */
    this.children = children;
    /** @type {El | null} */
    this.parent = null;
    for (const c of children) c.parent = this;
  }
  /** @param {string} name */
  removeAttribute(name) {
    this.attributes = this.attributes.filter((a) => a.name !== name);
  }
  remove() {
    if (this.parent) this.parent.children = this.parent.children.filter((c) => c !== this);
  }
  /** @returns {string} */
  toString() {
    const attrs = this.attributes.map((a) => ` ${a.name}="${a.value}"`).join('');
    return `<${this.localName}${attrs}>${this.children.join('')}</${this.localName}>`;
  }
}

/** @param {El | null} root */
const parser = (root) => (/** @type {string} */ markup) => {
  assert.equal(typeof markup, 'string');
  return { documentElement: root };
};

test('the QR code: an SVG root taken in as it is, through the given parser', () => {
  const qr = new El('svg', { viewBox: '0 0 41 41', 'shape-rendering': 'crispEdges', role: 'img', 'aria-label': 'Invitation link as a QR code' }, [
    new El('rect', { width: '41', height: '41', fill: '#ffffff' }),
    new El('path', { fill: '#000000', d: 'M4 4h7v1h-7z' }),
  ]);
  const before = String(qr);
  /** @type {unknown[]} */
  const adopted = [];
  const out = importSvg('<svg …/>', parser(qr), (n) => {
    adopted.push(n);
    return 'imported';
  });
  assert.equal(out, 'imported');
  assert.deepEqual(adopted, [qr]);
  assert.equal(String(qr), before, 'nothing of a plain QR code is removed');
});

test('the QR code: anything that could run, load or style is left out', () => {
  const qr = new El('svg', { viewBox: '0 0 9 9', onload: 'alert(1)', style: 'fill:red' }, [
    new El('script', {}, []),
    new El('style', {}, []),
    new El('foreignObject', {}, [new El('div', {}, [], 'http://www.w3.org/1999/xhtml')]),
    new El('image', { href: 'https://example.com/x.png' }),
    new El('a', { href: 'javascript:alert(1)' }, [new El('path', { d: 'M0 0' })]),
    new El('g', { onclick: 'x()', fill: '#000' }, [
      new El('path', { d: 'M1 1h1v1h-1z', 'xlink:href': 'https://example.com/', STYLE: 'x' }),
      new El('set', { attributeName: 'href' }),
      new El('p', {}, [], 'http://www.w3.org/1999/xhtml'),
    ]),
    new El('rect', { width: '9', height: '9', fill: '#fff' }),
  ]);
  importSvg('<svg/>', parser(qr), (n) => n);
  assert.equal(String(qr), '<svg viewBox="0 0 9 9"><g fill="#000"><path d="M1 1h1v1h-1z"></path></g><rect width="9" height="9" fill="#fff"></rect></svg>');
});

test('the QR code: a document that is not an SVG, or did not parse, is refused', () => {
  const refused = /could not be drawn/;
  assert.throws(() => importSvg('', parser(null), (n) => n), refused);
  assert.throws(() => importSvg('<html/>', parser(new El('html', {}, [], 'http://www.w3.org/1999/xhtml')), (n) => n), refused);
  assert.throws(() => importSvg('<svg/>', parser(new El('svg', {}, [], null)), (n) => n), refused);
  // WebKit and Gecko put a <parsererror> into the document when the XML is broken.
  const broken = new El('svg', {}, [new El('parsererror', {}, [], 'http://www.w3.org/1999/xhtml')]);
  assert.throws(() => importSvg('<svg><path', parser(broken), (n) => n), refused);
  const deep = new El('svg', {}, [new El('g', {}, [new El('parsererror', {}, [], SVG_NS)])]);
  assert.throws(() => importSvg('<svg><g>', parser(deep), (n) => n), refused);
});

const g = /** @type {any} */ (globalThis);
afterEach(() => {
  delete g.__TAURI__;
});

test('the link commands and their arguments', async () => {
  /** @type {{ cmd: string, args: unknown }[]} */
  const calls = [];
  g.__TAURI__ = {
    core: {
      invoke: async (/** @type {string} */ cmd, /** @type {unknown} */ args) => {
        calls.push({ cmd, args });
        if (cmd === 'open_invitation_link') throw { code: 'link-damaged', message: 'this invitation link is damaged' };
        return cmd === 'invitation_link' ? LINK : '<svg/>';
      },
    },
    event: { listen: async () => () => {} },
  };
  assert.equal(await api.invitationLink(URI), LINK);
  assert.equal(await api.invitationQr(LINK), '<svg/>');
  await assert.rejects(api.openInvitationLink(LINK), (e) => /** @type {any} */ (e).code === 'link-damaged');
  assert.deepEqual(calls, [
    { cmd: 'invitation_link', args: { uri: URI } },
    { cmd: 'invitation_qr', args: { link: LINK } },
    { cmd: 'open_invitation_link', args: { link: LINK } },
  ]);
});

test('the page has the ids the end-to-end test uses for links', () => {
  const html = readFileSync(new URL('../../ui/index.html', import.meta.url), 'utf8');
  for (const id of [
    'welcome-link-box', 'welcome-link-summary', 'welcome-link-input', 'welcome-link-open', 'welcome-link-error',
    'invite-link-box', 'invite-link-summary', 'invite-link-input', 'invite-link-open', 'invite-link-error', 'invite-link-note',
    'qr-dialog', 'qr-code', 'qr-link', 'qr-close',
  ]) {
    assert.match(html, new RegExp(`id="${id}"`), id);
  }
  const views = ['invite.js', 'circles.js']
    .map((f) => readFileSync(new URL(`../../ui/lib/views/${f}`, import.meta.url), 'utf8'))
    .join('\n');
  for (const cls of ['share-link', 'share-qr', 'share-link-field', 'link-opened']) assert.ok(views.includes(cls), cls);
});

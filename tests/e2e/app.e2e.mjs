// The real app window, driven as a person would: Alice signs in with Bluesky (OAuth, on the
// reference PDS's own page), adds Bob as a friend and watches the first backup finish, creates
// a circle with him; Bob, on a second app instance, signs in with an app password, sees the
// invitation and accepts; both see the circle healthy.
// Run by run.sh (two tauri-driver servers on 4444 and 4446, a display, a secret service).

import { test } from 'node:test'
import assert from 'node:assert/strict'
import { execFileSync, spawn } from 'node:child_process'
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join, resolve } from 'node:path'
import { createRequire } from 'node:module'
import { createInterface } from 'node:readline'
import { Builder, By } from 'selenium-webdriver'
import { approveInBrowser } from './oauth-pages.mjs'

const root = resolve(import.meta.dirname, '../..')
const shots = process.env.P2PDS_SCREENSHOTS
  ? resolve(root, process.env.P2PDS_SCREENSHOTS)
  : mkdtempSync(join(tmpdir(), 'p2pds-shots-'))
const WAIT = 60_000

/** The reference PDS and PLC on loopback (tests/pds/start.mjs), until the test ends. */
async function startPds() {
  const child = spawn(process.env.P2PDS_NODE || 'node', [join(root, 'tests/pds/start.mjs')], {
    stdio: ['pipe', 'pipe', 'inherit'],
  })
  const lines = createInterface({ input: child.stdout })
  const ready = await new Promise((ok, fail) => {
    child.on('exit', (code) => fail(new Error(`start.mjs exited with ${code}`)))
    lines.once('line', (l) => ok(JSON.parse(l)))
  })
  return { ...ready, stop: () => child.kill('SIGTERM') }
}

async function xrpc(base, method, body, token) {
  const res = await fetch(`${base}/xrpc/${method}`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...(token ? { authorization: `Bearer ${token}` } : {}) },
    body: JSON.stringify(body),
  })
  const json = await res.json()
  if (!res.ok) throw new Error(`${method}: ${JSON.stringify(json)}`)
  return json
}

async function account(pds, name) {
  const suffix = Math.random().toString(36).slice(2, 7)
  const handle = `${name}-${suffix}.test`
  const password = `pw-${name}-${suffix}`
  const s = await xrpc(pds, 'com.atproto.server.createAccount', {
    handle,
    email: `${name}-${suffix}@example.com`,
    password,
  })
  // What a person types into P2PDS: an app password (the main password stays for the
  // recovery key, which needs it).
  const app = await xrpc(
    pds,
    'com.atproto.server.createAppPassword',
    { name: 'p2pds' },
    s.accessJwt,
  )
  const create = (collection, record) =>
    xrpc(pds, 'com.atproto.repo.createRecord', { repo: s.did, collection, record }, s.accessJwt)
  return { did: s.did, handle, password, appPassword: app.password, create }
}

/** One app instance with its own data directory, through the tauri-driver on `port`. */
async function app(port, dataDir, bed) {
  return new Builder()
    .usingServer(`http://127.0.0.1:${port}/`)
    .withCapabilities({
      browserName: 'wry',
      'tauri:options': {
        application: process.env.APP_BIN,
        args: ['--data-dir', dataDir, '--plc-url', bed.plc, '--resolver-url', bed.pds],
      },
    })
    .build()
}

/** `gdbus call` on the session bus. */
function gdbus(...args) {
  return execFileSync('gdbus', ['call', '--session', ...args], { encoding: 'utf8', timeout: 10_000 })
}

/**
 * The tray icon of the app on `dataDir`, as the desktop's tray reads it over D-Bus (its
 * StatusNotifierItem and menu): the menu's first line and the icon's middle pixel (RGB).
 */
function trayOf(dataDir) {
  const pids = execFileSync('pgrep', ['-f', `p2pds-desktop --data-dir ${dataDir}`], { encoding: 'utf8' })
    .split('\n')
    .filter(Boolean)
  const names = [...gdbus('--dest', 'org.freedesktop.DBus', '--object-path', '/org/freedesktop/DBus', '--method',
    'org.freedesktop.DBus.ListNames').matchAll(/'(:[0-9.]+)'/g)].map((m) => m[1])
  for (const name of names) {
    let pid
    try {
      pid = gdbus('--dest', 'org.freedesktop.DBus', '--object-path', '/org/freedesktop/DBus', '--method',
        'org.freedesktop.DBus.GetConnectionUnixProcessID', name).match(/uint32 (\d+)/)?.[1]
    } catch {
      continue
    }
    if (!pids.includes(pid)) continue
    let layout, pixmap
    try {
      // `--`: the arguments start with a negative number, not an option.
      layout = gdbus('--dest', name, '--object-path', '/MenuBar', '--method', 'com.canonical.dbusmenu.GetLayout', '--', '0', '-1', '[]')
      pixmap = gdbus('--dest', name, '--object-path', '/StatusNotifierItem', '--method', 'org.freedesktop.DBus.Properties.Get',
        'org.kde.StatusNotifierItem', 'IconPixmap')
    } catch {
      continue
    }
    const labels = [...layout.matchAll(/'label': <'((?:[^'\\]|\\.)*)'>/g)].map((m) => m[1])
    const m = pixmap.match(/\((\d+), (\d+), \[([^\]]*)\]\)/)
    assert.ok(m, pixmap.slice(0, 200))
    const [w, hgt] = [Number(m[1]), Number(m[2])]
    const bytes = [...m[3].matchAll(/0x[0-9a-f]{2}/gi)].map((b) => Number(b[0]))
    const at = ((hgt >> 1) * w + (w >> 1)) * 4 // ARGB
    return { first: labels[0] ?? '', rgb: bytes.slice(at + 1, at + 4) }
  }
  throw new Error(`no tray icon on the bus for ${dataDir}`)
}

/**
 * Where the desktop's tray (xfce4-panel, started by run.sh when installed) shows an icon of
 * `rgb`: its middle, in screen coordinates, or null while it does not show one. Read from a
 * picture of the panel's strip at the top of the screen.
 */
function trayIconAt(rgb) {
  const strip = execFileSync('import', ['-window', 'root', '-crop', '1280x40+0+0', '+repage', '-depth', '8', 'txt:-'], {
    encoding: 'utf8',
    maxBuffer: 64 << 20,
    timeout: 10_000,
  })
  const xs = []
  const ys = []
  for (const m of strip.matchAll(/^(\d+),(\d+): \((\d+),(\d+),(\d+)/gm)) {
    const px = [Number(m[3]), Number(m[4]), Number(m[5])]
    if (px.every((v, i) => Math.abs(v - rgb[i]) <= 6)) {
      xs.push(Number(m[1]))
      ys.push(Number(m[2]))
    }
  }
  // A handful of pixels is not an icon.
  if (xs.length < 20) return null
  const mid = (a) => a.sort((p, q) => p - q)[a.length >> 1]
  return { x: mid(xs), y: mid(ys) }
}

/**
 * With a desktop tray on screen (`P2PDS_TRAY_HOST`): the amber icon is shown there, and its
 * menu, opened as a person opens it (a right click), is pictured into the screenshots.
 */
async function pictureTrayMenu(d, name) {
  if (!process.env.P2PDS_TRAY_HOST) return
  // No window manager here: the windows opened last lie over the panel; bring it up.
  for (const id of execFileSync('xdotool', ['search', '--class', 'xfce4-panel'], { encoding: 'utf8', timeout: 10_000 }).split('\n')) {
    if (id) execFileSync('xdotool', ['windowraise', id], { timeout: 10_000 })
  }
  let at = null
  for (let i = 0; i < 50 && !at; i++) {
    at = trayIconAt([0xe0, 0x8a, 0x1e])
    if (!at) await d.sleep(200)
  }
  if (!at) execFileSync('import', ['-window', 'root', join(shots, 'tray-not-found.png')], { timeout: 10_000 })
  assert.ok(at, "the desktop's tray shows the amber icon")
  execFileSync('xdotool', ['mousemove', String(at.x), String(at.y), 'click', '3'], { timeout: 10_000 })
  await d.sleep(1000)
  mkdirSync(shots, { recursive: true })
  const left = Math.max(0, at.x - 560)
  execFileSync('import', ['-window', 'root', '-crop', `640x220+${left}+0`, '+repage', join(shots, `${name}.png`)], {
    timeout: 10_000,
  })
  execFileSync('xdotool', ['key', 'Escape'], { timeout: 10_000 })
}

/**
 * An account whose server never answers: a did:plc made on the test bed's directory, its
 * server a closed port on this machine (the reference PDS can't be made to stop answering for
 * one account only).
 */
async function accountOnADeadServer(plcUrl) {
  const require = createRequire(join(root, 'tests/pds/package.json'))
  const { Client } = require('@did-plc/lib')
  const { Secp256k1Keypair } = require('@atproto/crypto')
  const key = await Secp256k1Keypair.create()
  return new Client(plcUrl).createDid({
    signingKey: key.did(),
    handle: `gone-${Math.random().toString(36).slice(2, 7)}.test`,
    pds: 'http://127.0.0.1:9',
    rotationKeys: [key.did()],
    signer: key,
  })
}

/** Moves the day `did` was added to this node's copies `days` into the past (in its store). */
function addedDaysAgo(dataDir, did, days) {
  const at = new Date(Date.now() - days * 86_400_000).toISOString()
  execFileSync('python3', ['-c', `
import sqlite3, sys
db = sqlite3.connect(sys.argv[1], timeout=30)
db.execute("UPDATE repos SET added_at = ? WHERE did = ?", (sys.argv[2], sys.argv[3]))
db.commit()
`, join(dataDir, 'p2pds.sqlite'), at, did])
}

/** The engine's overview, as the page gets it. */
const overviewOf = (d) =>
  d.executeAsyncScript((done) => {
    window.__TAURI__.core.invoke('overview').then(done, (e) => done({ error: String(e) }))
  })

/** The element once it is shown and enabled (the page renders after its data arrives). */
async function el(d, css) {
  const deadline = Date.now() + WAIT
  let last
  while (Date.now() < deadline) {
    try {
      const e = await d.findElement(By.css(css))
      if ((await e.isDisplayed()) && (await e.isEnabled())) return e
    } catch (err) {
      last = err
    }
    await d.sleep(200)
  }
  throw new Error(`${css} never became usable${last ? `: ${last.message}` : ''}`)
}

/** Finds `css` and does `f` to it, again if the page re-rendered it in between. */
async function act(d, css, f) {
  const deadline = Date.now() + WAIT
  for (;;) {
    try {
      return await f(await el(d, css))
    } catch (err) {
      const retry = ['StaleElementReferenceError', 'ElementNotInteractableError', 'ElementClickInterceptedError']
      if (!retry.includes(err.name) || Date.now() > deadline) throw err
      await d.sleep(300)
    }
  }
}
const click = (d, css) => act(d, css, (e) => e.click())
const type = (d, css, text) => act(d, css, (e) => e.sendKeys(text))

/** Waits until `css`'s text satisfies `ok`, clicking "Sync now" now and then. */
async function waitText(d, css, ok, what) {
  const deadline = Date.now() + WAIT * 2
  let last = ''
  let tick = 0
  while (Date.now() < deadline) {
    // textContent: some values sit in visually hidden elements (the raw state beside the
    // words people see), which WebDriver's getText leaves out.
    const text = await d
      .executeScript((sel) => document.querySelector(sel)?.textContent ?? null, css)
      .catch(() => null)
    if (text !== null) {
      last = text.trim()
      if (ok(last)) return last
    }
    if (++tick % 10 === 0) {
      const sync = await d.findElements(By.css('#sync-now'))
      if (sync.length) await sync[0].click().catch(() => {})
    }
    await d.sleep(500)
  }
  throw new Error(`${what}: ${css} says ${JSON.stringify(last)}`)
}

/** Waits until the field `css` holds a value that satisfies `ok` (read-only fields included). */
async function waitValue(d, css, ok, what) {
  const deadline = Date.now() + WAIT
  let last = ''
  while (Date.now() < deadline) {
    const value = await d.executeScript((sel) => document.querySelector(sel)?.value ?? null, css).catch(() => null)
    if (value !== null) {
      last = value.trim()
      if (ok(last)) return last
    }
    await d.sleep(300)
  }
  throw new Error(`${what}: ${css} holds ${JSON.stringify(last)}`)
}

/** Replaces a text field's content. */
const retype = (d, css, text) =>
  act(d, css, async (e) => {
    await e.clear()
    await e.sendKeys(text)
  })

async function shot(d, name) {
  await d.sleep(600) // let the last change paint
  mkdirSync(shots, { recursive: true })
  writeFileSync(join(shots, `${name}.png`), await d.takeScreenshot(), 'base64')
}

/** Signs in with an app password ("Use an app password instead"). */
async function signIn(d, who) {
  await el(d, '#welcome')
  await type(d, '#signin-handle', who.handle)
  await click(d, '#signin-mode')
  await type(d, '#signin-password', who.appPassword)
  await click(d, '#signin-submit')
  await waitText(d, '#headline', (t) => t.length > 0, 'the main window')
}

/**
 * Signs in with Bluesky: the window shows the server's page address while it waits (no
 * browser opens under the tests: P2PDS_NO_BROWSER); the page is answered as a browser would,
 * with the main password on the server's own page, and the window goes on by itself.
 */
async function signInWithBluesky(d, who) {
  await el(d, '#welcome')
  await type(d, '#signin-handle', who.handle)
  await click(d, '#signin-browser')
  const url = await waitText(d, '#signin-url', (t) => t.startsWith('http'), 'the sign-in address')
  await el(d, '#signin-cancel')
  await shot(d, 'signin-waiting')
  const answered = await approveInBrowser(url, who.handle, who.password)
  assert.match(answered, /You are signed in/)
  await waitText(d, '#headline', (t) => t.length > 0, 'the main window')
}

test('two people, two app windows: backup, circle, invitation, healthy', async (t) => {
  const bed = await startPds()
  const dirs = [mkdtempSync(join(tmpdir(), 'p2pds-a-')), mkdtempSync(join(tmpdir(), 'p2pds-b-'))]
  const drivers = []
  t.after(async () => {
    for (const d of drivers) await d.quit().catch(() => {})
    bed.stop()
    for (const dir of dirs) rmSync(dir, { recursive: true, force: true })
  })
  const alice = await account(bed.pds, 'alice')
  const bob = await account(bed.pds, 'bob')
  for (let i = 0; i < 4; i++) {
    await bob.create('app.bsky.feed.post', {
      $type: 'app.bsky.feed.post',
      text: `Bob's post ${i}`,
      createdAt: new Date().toISOString(),
    })
  }
  // Friends follow each other: Bob's app looks for invitations in Alice's repo.
  await bob.create('app.bsky.graph.follow', {
    $type: 'app.bsky.graph.follow',
    subject: alice.did,
    createdAt: new Date().toISOString(),
  })

  // Alice: first run, sign in.
  const a = await app(4444, dirs[0], bed)
  drivers.push(a)
  await el(a, '#welcome')
  await shot(a, 'welcome')
  await signInWithBluesky(a, alice)

  // Add Bob and watch the first backup finish.
  await click(a, '#nav-friends')
  await type(a, '#add-friend-input', bob.handle)
  await click(a, '#add-friend-submit')
  const card = `.friend-card[data-did="${bob.did}"] .friend-status`
  const status = await waitText(a, card, (s) => /^backed up/i.test(s), "Bob's backup")
  assert.match(status, /^backed up/i)
  // The card speaks of people, not identifiers (those wait in a closed "Details").
  const shown = await a.executeScript(
    (css) => {
      const card = document.querySelector(css).cloneNode(true)
      card.querySelectorAll('details').forEach((d) => d.remove())
      return card.textContent
    },
    `.friend-card[data-did="${bob.did}"]`,
  )
  assert.ok(shown.includes(bob.handle) && !shown.includes('did:'), shown)
  // Bob's server's event stream is followed from his first copy on: the card says so.
  const follow = await waitText(
    a,
    `.friend-card[data-did="${bob.did}"] .friend-follow`,
    (s) => /as it happens/i.test(s),
    "Bob's changes followed live",
  )
  assert.match(follow, /every change is copied as it happens/i)
  await shot(a, 'friends')

  // A circle with Bob.
  await click(a, '#nav-circles')
  await click(a, '#create-circle')
  await type(a, '#circle-name', 'Kitchen table')
  await click(a, `.circle-friend-checkbox[value="${bob.did}"]`)
  await act(a, '#circle-min-copies', async (e) => {
    await e.clear()
    await e.sendKeys('1')
  })
  await click(a, '#circle-submit')
  await waitText(a, '.circle-card .circle-state', (s) => /wait/i.test(s), 'the new circle')

  // Alice's invitation link, to send by chat or email: "Copy invitation link" copies it and
  // shows it under the buttons (selected to copy by hand when the window may not use the
  // clipboard, as under WebDriver it may not); "Show as QR code" shows the same link as a code.
  await click(a, '.circle-card .share-link')
  const link = await waitValue(a, '.circle-card .share-link-field', (v) => v.startsWith('p2pds://'), 'the invitation link')
  assert.match(link, /^p2pds:\/\/invite\?uri=[^&\s]+&cid=[a-z0-9]+$/)
  const circleUri = new URL(link).searchParams.get('uri')
  assert.ok(circleUri?.startsWith(`at://${alice.did}/`), circleUri)
  await waitText(a, '.circle-card .share-note', (s) => /copied|copy it/i.test(s), 'what to do with the link')
  await shot(a, 'invitation-link')
  await click(a, '.circle-card .share-qr')
  await el(a, '#qr-dialog #qr-code svg path')
  assert.equal(await a.executeScript(() => document.querySelector('#qr-link').value), link)
  await shot(a, 'invitation-qr')
  await click(a, '#qr-close')

  // Bob, on his own app: first the link before signing in (sign in first, and the link stays).
  const b = await app(4446, dirs[1], bed)
  drivers.push(b)
  await el(b, '#welcome')
  await click(b, '#welcome-link-summary')
  await retype(b, '#welcome-link-input', link)
  await click(b, '#welcome-link-open')
  await waitText(b, '#welcome-link-error', (s) => /^sign in first/i.test(s), 'the link before signing in')
  assert.equal(await waitValue(b, '#welcome-link-input', (v) => v.length > 0, 'the link kept'), link)
  await signIn(b, bob)
  await click(b, '#nav-circles')
  // "I have an invitation link": a cut-off link is refused in words, and stays in the field;
  // the whole link brings the invitation (whether or not Bob's app had found it already: it
  // follows Alice, and opening a known invitation shows it the same way).
  await click(b, '#invite-link-summary')
  const cut = link.slice(0, 40)
  await retype(b, '#invite-link-input', cut)
  await click(b, '#invite-link-open')
  await waitText(b, '#invite-link-error', (s) => /damaged/i.test(s), 'a damaged link refused')
  assert.equal(await waitValue(b, '#invite-link-input', (v) => v.length > 0, 'the damaged link kept'), cut)
  await retype(b, '#invite-link-input', link)
  assert.equal(await b.executeScript(() => document.querySelector('#invite-link-error').hidden), true)
  await click(b, '#invite-link-open')
  await waitText(b, '#invite-link-note', (s) => /Kitchen table/.test(s), 'the invitation opened by its link')
  await waitText(b, `.invitation-card[data-uri="${circleUri}"]`, (s) => s.includes('Kitchen table'), 'the invitation from the link')
  await shot(b, 'invitation-from-link')
  // The tray says it too: amber (nobody backed up yet, an invitation waiting), its menu's
  // first line the reason, as the desktop's tray reads them over D-Bus.
  const said = await b.executeAsyncScript((done) => {
    window.__TAURI__.core.invoke('overview').then(done, (e) => done({ error: String(e) }))
  })
  assert.equal(said.tray, 'needs-attention')
  let bobsTray = trayOf(dirs[1])
  for (let i = 0; i < 25 && bobsTray.first !== (said.trayReason ?? said.headline); i++) {
    await b.sleep(200)
    bobsTray = trayOf(dirs[1])
  }
  assert.equal(bobsTray.first, said.trayReason ?? said.headline)
  assert.deepEqual(bobsTray.rgb, [0xe0, 0x8a, 0x1e], 'the tray icon is amber')
  await pictureTrayMenu(b, 'tray-menu-amber')

  // The invitation, in words; he accepts.
  const inv = await waitText(b, '.invitation-card', (s) => s.includes('Kitchen table'), 'the invitation')
  assert.ok(inv.includes(alice.handle), inv)
  assert.ok(!inv.includes('did:'), inv)
  await shot(b, 'invitation')
  await click(b, '.invitation-card .accept')
  await waitText(b, '.circle-card .circle-state', (s) => /active/i.test(s), "Bob's circle active")

  // Both windows: the circle turns healthy.
  for (const [d, who] of [[a, 'Alice'], [b, 'Bob']]) {
    await click(d, '#nav-circles')
    await waitText(d, '.circle-card .circle-health', (s) => /^ok$/i.test(s.trim()), `${who}'s circle healthy`)
  }
  await shot(a, 'circles')
  await click(a, '.circle-card .circle-open')
  const state = await waitText(a, '#health-state', (s) => s.length > 0, 'the dashboard')
  assert.match(state, /ok|safe/i)
  await shot(a, 'health')
  await click(a, '#nav-settings')
  // Protect your account: read from the keyring and the identity; set up on request.
  await waitText(a, '#recovery-text', (s) => s.startsWith('Not set up'), 'the recovery key status')
  await click(a, '#recovery-start')
  await el(a, '#recovery-password')
  await shot(a, 'settings')
  const tray = await a.executeScript(() => document.querySelector('#tray-state')?.textContent)
  assert.match(tray.trim(), /^(ok|syncing|needs-attention|problem)$/)

  // The reminder ladder over simulated days: a friend whose server never answers, added (as
  // Alice's store is made to say) three and a half days ago, brings a warning; a day later,
  // the alert; the tray turns red with the reason.
  const gone = await accountOnADeadServer(bed.plc)
  await click(a, '#nav-friends')
  await type(a, '#add-friend-input', gone)
  await click(a, '#add-friend-submit')
  const failing = async () => {
    for (let i = 0; i < 120; i++) {
      const o = await overviewOf(a)
      if (o.friends?.some((f) => f.did === gone && f.state === 'failing')) return
      if (i % 10 === 9) await click(a, '#sync-now')
      await a.sleep(500)
    }
    throw new Error('the friend on a dead server never failed')
  }
  await failing()
  const toast = async (re, what) => {
    for (let i = 0; i < 60; i++) {
      const titles = await a.executeScript(() =>
        [...document.querySelectorAll('#toasts .toast-title')].map((e) => e.textContent),
      )
      const hit = titles.find((t) => re.test(t))
      if (hit) return hit
      if (i % 10 === 0) await click(a, '#sync-now')
      await a.sleep(500)
    }
    throw new Error(`${what}: no notification`)
  }
  addedDaysAgo(dirs[0], gone, 3.5)
  const warning = await toast(/not backed up for 3 days/, 'the warning')
  assert.ok(!warning.includes('did:'), warning)
  addedDaysAgo(dirs[0], gone, 4.5)
  await toast(/still not backed up after 4 days/, 'the alert')
  const o = await overviewOf(a)
  assert.equal(o.tray, 'problem')
  assert.match(o.trayReason ?? '', /not backed up/)
  await shot(a, 'reminder')
})

// The app as installed from its package (APP_BIN=/usr/bin/p2pds-desktop, or the AppImage file): its window renders
// the first screen, its tray icon is on the session bus as a StatusNotifierItem (what a
// desktop's tray shows), and "Start at login" writes an autostart entry that starts the
// installed program (in XDG_CONFIG_HOME, a folder of the test's), and a notification from the
// installed program reaches the desktop's notification service (dunst, started by installed.sh). Run by installed.sh, under Xvfb and a session bus, with tauri-driver
// on 4444.

import { test } from 'node:test'
import assert from 'node:assert/strict'
import { execFileSync, spawn } from 'node:child_process'
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { Builder, By } from 'selenium-webdriver'

const WAIT = 60_000

function gdbus(...args) {
  return execFileSync('gdbus', args, { encoding: 'utf8', timeout: 10_000 })
}

/** The bus names the process `pid` owns. */
function namesOf(pid) {
  const list = gdbus('call', '--session', '--dest', 'org.freedesktop.DBus', '--object-path', '/org/freedesktop/DBus',
    '--method', 'org.freedesktop.DBus.ListNames')
  const names = [...list.matchAll(/'(:[0-9.]+)'/g)].map((m) => m[1])
  return names.filter((n) => {
    try {
      const out = gdbus('call', '--session', '--dest', 'org.freedesktop.DBus', '--object-path', '/org/freedesktop/DBus',
        '--method', 'org.freedesktop.DBus.GetConnectionUnixProcessID', n)
      return out.includes(`uint32 ${pid}`)
    } catch {
      return false
    }
  })
}

/** Whether `name` exports an object with the StatusNotifierItem interface (the tray icon). */
function exportsTrayIcon(name) {
  try {
    const tree = gdbus('introspect', '--session', '--dest', name, '--object-path', '/', '--recurse')
    return tree.includes('org.kde.StatusNotifierItem')
  } catch {
    // A connection of the process that exports nothing at "/" (not the tray's).
    return false
  }
}

test('the installed app: its window renders, its tray icon is there, it starts at login', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'p2pds-installed-'))
  const d = await new Builder()
    .usingServer('http://127.0.0.1:4444/')
    .withCapabilities({
      browserName: 'wry',
      'tauri:options': { application: process.env.APP_BIN, args: ['--data-dir', dir] },
    })
    .build()
  t.after(async () => {
    await d.quit().catch(() => {})
    rmSync(dir, { recursive: true, force: true })
  })
  // The first screen, rendered.
  const deadline = Date.now() + WAIT
  let button = null
  while (Date.now() < deadline) {
    const found = await d.findElements(By.css('#signin-browser'))
    if (found.length && (await found[0].isDisplayed())) {
      button = found[0]
      break
    }
    await d.sleep(200)
  }
  assert.ok(button, 'the first screen never rendered')
  assert.equal(await button.getText(), 'Sign in with Bluesky')
  assert.equal(await d.getTitle(), 'P2PDS')
  // The tray icon: the app process (a child of WebKitWebDriver) exports one on the bus.
  // (From an AppImage, the program running is the copy its start-up program unpacked.)
  const pids = execFileSync('pgrep', ['-f', `p2pds-desktop --data-dir ${dir}`], { encoding: 'utf8' })
    .split('\n')
    .filter(Boolean)
  assert.ok(pids.length > 0, 'the app process was not found')
  let tray = false
  for (let i = 0; i < 50 && !tray; i++) {
    tray = pids.some((pid) => namesOf(pid).some(exportsTrayIcon))
    if (!tray) await d.sleep(200)
  }
  assert.ok(tray, 'no StatusNotifierItem (tray icon) on the session bus')

  // An invitation link opened with the app (as the system does for a p2pds: link, through the
  // desktop entry's %u) reaches the running app's window: a second start hands it over and
  // exits, and the window opens it (this one is cut off, so it is refused in words).
  const link = 'p2pds://invite?uri=at%3A%2F%2Fdid%3Aplc%3Aabc'
  execFileSync(process.env.APP_BIN, ['--data-dir', dir, link], { timeout: 30_000, stdio: 'ignore' })
  let said = ''
  for (let i = 0; i < 100 && !said; i++) {
    said = await d.executeScript(() => {
      const e = document.querySelector('#welcome-link-error')
      return e && !e.hidden ? e.textContent.trim() : ''
    })
    if (!said) await d.sleep(200)
  }
  assert.match(said, /damaged|not a whole|copy it again/i, said)
  assert.equal(await d.executeScript(() => document.querySelector('#welcome-link-input').value), link)

  // Start at login, from Settings: the entry starts the installed program, in the tray.
  const click = async (css) => {
    const end = Date.now() + WAIT
    for (;;) {
      try {
        const e = await d.findElement(By.css(css))
        if ((await e.isDisplayed()) && (await e.isEnabled())) return await e.click()
      } catch {}
      if (Date.now() > end) throw new Error(`${css} never became clickable`)
      await d.sleep(200)
    }
  }
  await click('#skip-signin')
  await click('#nav-settings')
  const box = await d.findElement(By.css('#settings-start-login'))
  if (!(await box.isSelected())) await click('#settings-start-login')
  await click('#settings-save')
  const entry = join(process.env.XDG_CONFIG_HOME, 'autostart', 'org.p2pds.desktop.desktop')
  for (let i = 0; i < 50 && !existsSync(entry); i++) await d.sleep(200)
  assert.ok(existsSync(entry), `no autostart entry at ${entry}`)
  const text = readFileSync(entry, 'utf8')
  const program = process.env.APP_EXEC || process.env.APP_BIN
  assert.ok(text.split('\n').includes(`Exec="${program}" --hidden`), text)
})

test('the installed app raises desktop notifications', async () => {
  // Watch the session bus for notifications, then have the installed app raise one: started on
  // a data folder that is a file, it can't start and says so on the desktop.
  const monitor = spawn('dbus-monitor', ['--session', "interface='org.freedesktop.Notifications',member='Notify'"])
  let seen = ''
  monitor.stdout.on('data', (b) => { seen += b })
  try {
    await new Promise((r) => setTimeout(r, 500))
    const dir = mkdtempSync(join(tmpdir(), 'p2pds-installed-'))
    const file = join(dir, 'not-a-folder')
    writeFileSync(file, 'x')
    try {
      execFileSync(process.env.APP_BIN, ['--data-dir', file], { encoding: 'utf8', stdio: 'pipe', timeout: 30_000 })
      assert.fail('the app started on a file')
    } catch (e) {
      assert.equal(e.status, 1, String(e.stderr))
    } finally {
      rmSync(dir, { recursive: true, force: true })
    }
    for (let i = 0; i < 50 && !seen.includes('P2PDS could not start'); i++) await new Promise((r) => setTimeout(r, 100))
    assert.match(seen, /string "P2PDS could not start"/, seen)
    // The notification service took it (a method return, not an error, is what the app saw).
    const names = gdbus('call', '--session', '--dest', 'org.freedesktop.DBus', '--object-path', '/org/freedesktop/DBus',
      '--method', 'org.freedesktop.DBus.NameHasOwner', 'org.freedesktop.Notifications')
    assert.match(names, /true/, 'no notification service on the bus')
  } finally {
    monitor.kill()
  }
})

// The app as installed from its package (APP_BIN=/usr/bin/p2pds-desktop): its window renders
// the first screen, its tray icon is on the session bus as a StatusNotifierItem (what a
// desktop's tray shows), and "Start at login" writes an autostart entry that starts the
// installed program (in XDG_CONFIG_HOME, a folder of the test's). Run by installed.sh, under Xvfb and a session bus, with tauri-driver
// on 4444.

import { test } from 'node:test'
import assert from 'node:assert/strict'
import { execFileSync } from 'node:child_process'
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs'
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
  const pids = execFileSync('pgrep', ['-f', `${process.env.APP_BIN} --data-dir ${dir}`], { encoding: 'utf8' })
    .split('\n')
    .filter(Boolean)
  assert.ok(pids.length > 0, 'the app process was not found')
  let tray = false
  for (let i = 0; i < 50 && !tray; i++) {
    tray = pids.some((pid) => namesOf(pid).some(exportsTrayIcon))
    if (!tray) await d.sleep(200)
  }
  assert.ok(tray, 'no StatusNotifierItem (tray icon) on the session bus')

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
  assert.match(text, /^Exec="\/usr\/bin\/p2pds-desktop" --hidden$/m, text)
})

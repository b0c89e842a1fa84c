// The web root as shipped: what the app's Content-Security-Policy allows (no inline scripts,
// styles or handlers, nothing from outside), the element ids the end-to-end tests use, and no
// tooling inside it.
import assert from 'node:assert/strict';
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join, relative } from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';

const UI = fileURLToPath(new URL('../../ui/', import.meta.url));
const html = readFileSync(join(UI, 'index.html'), 'utf8');

/** @param {string} dir @returns {string[]} */
function files(dir) {
  return readdirSync(dir).flatMap((name) => {
    const p = join(dir, name);
    return statSync(p).isDirectory() ? files(p) : [p];
  });
}
const all = files(UI).map((p) => relative(UI, p));
const js = all.filter((p) => p.endsWith('.js'));

test('the web root holds only the app', () => {
  for (const p of all) {
    assert.ok(!p.includes('node_modules') && !p.endsWith('package.json'), p);
    assert.match(p, /\.(html|css|js|d\.ts)$/, `unexpected file ${p}`);
  }
  assert.ok(js.includes('app.js'));
});

test('index.html: no inline scripts, styles or handlers', () => {
  for (const m of html.matchAll(/<script\b([^>]*)>([\s\S]*?)<\/script>/g)) {
    assert.match(m[1], /\bsrc="[^"]+"/, 'every script has a src');
    assert.equal(m[2].trim(), '', 'and no body');
  }
  assert.doesNotMatch(html, /<style[\s>]/);
  assert.doesNotMatch(html, /\sstyle=/);
  assert.doesNotMatch(html, /\son[a-z]+=/);
  assert.doesNotMatch(html, /javascript:/);
});

test('nothing is loaded from outside', () => {
  const css = readFileSync(join(UI, 'style.css'), 'utf8');
  assert.doesNotMatch(css, /@import|url\(\s*['"]?(https?:)?\/\//);
  for (const m of html.matchAll(/(?:src|href)="([^"]+)"/g)) {
    assert.doesNotMatch(m[1], /^(https?:)?\/\//, m[1]);
  }
});

test('scripts build the DOM safely and within the policy', () => {
  for (const p of js) {
    const src = readFileSync(join(UI, p), 'utf8');
    assert.doesNotMatch(src, /innerHTML|outerHTML|insertAdjacentHTML|document\.write/, `${p}: no HTML strings`);
    assert.doesNotMatch(src, /setAttribute\(\s*['"]style['"]/, `${p}: styles go through element.style`);
    assert.doesNotMatch(src, /\beval\(|new Function\(/, `${p}: no eval`);
    assert.doesNotMatch(src, /\bfetch\(|XMLHttpRequest|WebSocket|EventSource|import\(\s*['"]https?:/, `${p}: talks only to the app`);
  }
});

test('the ids the end-to-end tests use are in the page', () => {
  const ids = [
    'welcome', 'signin-handle', 'signin-password', 'signin-submit', 'signin-browser', 'signin-mode', 'signin-waiting', 'signin-url', 'signin-cancel', 'skip-signin',
    'headline', 'tray-state', 'sync-now', 'pause',
    'nav-friends', 'nav-circles', 'nav-settings',
    'add-friend-input', 'add-friend-submit',
    'create-circle', 'circle-name', 'circle-min-copies', 'circle-submit',
    'health', 'error-toast',
    'confirm-dialog', 'confirm-ok', 'confirm-cancel',
    'leave-dialog', 'leave-keep', 'leave-delete', 'leave-submit',
  ];
  for (const id of ids) assert.match(html, new RegExp(`id="${id}"`), id);
  const seen = [...html.matchAll(/\sid="([^"]+)"/g)].map((m) => m[1]);
  assert.equal(new Set(seen).size, seen.length, 'ids are unique');
  // Made by the views: classes the tests look for.
  const views = js.map((p) => readFileSync(join(UI, p), 'utf8')).join('\n');
  for (const cls of ['friend-card', 'friend-status', 'friend-progress', 'circle-friend-checkbox', 'invitation-card', 'circle-card', 'circle-health', 'circle-state', 'health-state']) {
    assert.ok(views.includes(cls), cls);
  }
  assert.match(views, /class: '[^']*\baccept'/);
  assert.match(views, /class: '[^']*\bdecline'/);
});

test('every id a script asks for exists', () => {
  const seen = new Set([...html.matchAll(/\sid="([^"]+)"/g)].map((m) => m[1]));
  const made = new Set();
  for (const p of js) {
    const src = readFileSync(join(UI, p), 'utf8');
    for (const m of src.matchAll(/\bid: '([a-z-]+)'/g)) made.add(m[1]);
  }
  for (const p of js) {
    const src = readFileSync(join(UI, p), 'utf8');
    for (const m of src.matchAll(/byId\('([a-z-]+)'/g)) {
      assert.ok(seen.has(m[1]) || made.has(m[1]), `${p}: #${m[1]}`);
    }
  }
});

test('index.html preloads every module app.js imports, and only those', () => {
  /** @type {Set<string>} */
  const reached = new Set();
  /** @param {string} file */
  const visit = (file) => {
    const src = readFileSync(join(UI, file), 'utf8');
    for (const m of src.matchAll(/^\s*(?:import|export)\b[^;]*?\bfrom\s+'([^']+)'/gm)) {
      const target = relative(UI, join(UI, file, '..', m[1]));
      if (!reached.has(target)) {
        reached.add(target);
        visit(target);
      }
    }
  };
  visit('app.js');
  const preloaded = [...html.matchAll(/<link rel="modulepreload" href="([^"]+)">/g)].map((m) => m[1]);
  assert.ok(reached.size > 5, `app.js reaches ${reached.size} modules`);
  assert.deepEqual([...preloaded].sort(), [...reached].sort());
});

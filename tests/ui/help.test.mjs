// Help pages: the page names topics, the app maps them to fixed addresses (the same ones).
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { test } from 'node:test';
import { HELP_PAGES, HELP_TEXTS, helpErrorText, helpText } from '../../ui/lib/help.js';

const html = readFileSync(new URL('../../ui/index.html', import.meta.url), 'utf8');
const commands = readFileSync(new URL('../../src-tauri/src/commands.rs', import.meta.url), 'utf8');

test('each topic opens the page the app maps it to', () => {
  assert.equal(HELP_PAGES['app-passwords'], 'https://bsky.app/settings/app-passwords');
  for (const [topic, url] of Object.entries(HELP_PAGES)) {
    assert.ok(commands.includes(`"${topic}" => Some("${url}")`), `open_help maps ${topic} to ${url}`);
  }
});

test('when the browser can’t be opened, the address is given instead', () => {
  assert.equal(helpErrorText('app-passwords'), 'Couldn’t open your browser. The page is: https://bsky.app/settings/app-passwords');
  assert.equal(helpErrorText('nope'), 'That help page is not available.');
});

test('each topic is explained in the window too, whether or not a browser opens', () => {
  for (const topic of Object.keys(HELP_PAGES)) assert.ok(helpText(topic).length > 0, topic);
  assert.deepEqual(Object.keys(HELP_TEXTS), Object.keys(HELP_PAGES));
  const text = helpText('app-passwords');
  assert.match(text, /main password/);
  assert.match(text, /Settings → Privacy and security → App passwords/);
  assert.equal(helpText('nope'), '');
  const view = readFileSync(new URL('../../ui/lib/views/help.js', import.meta.url), 'utf8');
  const shown = view.indexOf('helpText(topic)');
  assert.ok(shown > 0 && shown < view.indexOf('api.openHelp'), 'shown before the browser is asked');
});

test('help links: keyboard-reachable buttons naming a known topic, next to both app-password hints', () => {
  const links = [...html.matchAll(/<(\w+)\b([^>]*\bdata-help="([^"]+)"[^>]*)>([^<]*)</g)];
  assert.equal(links.length, 2, 'sign-in and the settings account section');
  for (const [, tag, attrs, topic, label] of links) {
    assert.equal(tag, 'button');
    assert.match(attrs, /type="button"/);
    assert.ok(topic in HELP_PAGES, topic);
    assert.equal(label.trim(), 'What is an app password?');
    const err = attrs.match(/data-help-error="([^"]+)"/);
    assert.ok(err && html.includes(`id="${err[1]}"`), 'the error paragraph exists');
  }
});

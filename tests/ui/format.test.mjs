import assert from 'node:assert/strict';
import { test } from 'node:test';
import {
  ago,
  capitalize,
  dayLabel,
  formatCount,
  hueFor,
  humanBytes,
  initial,
  plural,
  span,
  truncate,
  whenText,
} from '../../ui/lib/format.js';

test('humanBytes: decimal units, one decimal below 10', () => {
  assert.equal(humanBytes(0), '0 bytes');
  assert.equal(humanBytes(1), '1 byte');
  assert.equal(humanBytes(999), '999 bytes');
  assert.equal(humanBytes(1000), '1 kB');
  assert.equal(humanBytes(1500), '1.5 kB');
  assert.equal(humanBytes(12_345_678), '12 MB');
  assert.equal(humanBytes(120_000_000), '120 MB');
  assert.equal(humanBytes(1_200_000_000), '1.2 GB');
  assert.equal(humanBytes(9_960_000), '10 MB');
  assert.equal(humanBytes(999_600_000), '1 GB', 'rounding up to 1000 moves to the next unit');
  assert.equal(humanBytes(3e15), '3 PB');
  assert.equal(humanBytes(-1), '—');
  assert.equal(humanBytes(Number.NaN), '—');
});

test('counts and plurals', () => {
  assert.equal(formatCount(1234567), '1,234,567');
  assert.equal(plural(1, 'post'), '1 post');
  assert.equal(plural(0, 'post'), '0 posts');
  assert.equal(plural(2341, 'image'), '2,341 images');
  assert.equal(plural(2, 'copy', 'copies'), '2 copies');
});

test('ago: the Rust wording, past and future', () => {
  const now = Date.parse('2026-03-10T12:00:00Z');
  const at = (/** @type {number} */ s) => now - s * 1000;
  assert.equal(ago(at(0), now), 'just now');
  assert.equal(ago(at(59), now), 'just now');
  assert.equal(ago(at(60), now), 'a minute ago');
  assert.equal(ago(at(119), now), 'a minute ago');
  assert.equal(ago(at(120), now), '2 minutes ago');
  assert.equal(ago(at(3599), now), '59 minutes ago');
  assert.equal(ago(at(3600), now), 'an hour ago');
  assert.equal(ago(at(7200), now), '2 hours ago');
  assert.equal(ago(at(86_400), now), 'yesterday');
  assert.equal(ago(at(3 * 86_400), now), '3 days ago');
  assert.equal(ago(now + 45 * 60_000, now), 'in 45 minutes');
  assert.equal(ago(now + 3600_000, now), 'in an hour');
  assert.equal(ago(now + 30 * 3600_000, now), 'tomorrow');
  assert.equal(ago('2026-03-10T11:57:00Z', now), '3 minutes ago', 'takes RFC 3339 strings');
  assert.equal(ago('not a time', now), '');
});

test('span', () => {
  assert.equal(span(0), '1 minute');
  assert.equal(span(600), '10 minutes');
  assert.equal(span(3600), '1 hour');
  assert.equal(span(5 * 86_400), '5 days');
});

test('day labels and end times are relative to today', () => {
  const now = new Date(2026, 2, 10, 15, 0).getTime();
  assert.equal(dayLabel(new Date(2026, 2, 10, 1, 0).getTime(), now), 'Today');
  assert.equal(dayLabel(new Date(2026, 2, 9, 23, 59).getTime(), now), 'Yesterday');
  assert.equal(dayLabel(new Date(2026, 2, 11, 9, 0).getTime(), now), 'Tomorrow');
  const older = dayLabel(new Date(2026, 2, 3, 9, 0).getTime(), now, 'en-GB');
  assert.match(older, /3 Mar/);
  assert.match(dayLabel(new Date(2024, 2, 3).getTime(), now, 'en-GB'), /2024/);
  const later = whenText(new Date(2026, 2, 10, 15, 40).getTime(), now, 'en-US');
  assert.match(later, /^3:40\sPM$/);
  assert.match(whenText(new Date(2026, 2, 11, 9, 0).getTime(), now, 'en-US'), /^tomorrow 9:00\sAM$/);
});

test('capitalize: sentences, but not handles', () => {
  assert.equal(capitalize('backed up 3 minutes ago'), 'Backed up 3 minutes ago');
  assert.equal(capitalize("everyone's safe"), "Everyone's safe");
  assert.equal(capitalize('bob.bsky.social checked your copy'), 'bob.bsky.social checked your copy');
  assert.equal(capitalize("carol.example.com's computer stopped"), "carol.example.com's computer stopped");
  assert.equal(capitalize('@bob said'), '@bob said');
  assert.equal(capitalize(''), '');
});

test('truncate, initials and avatar hues', () => {
  assert.equal(truncate('alice.bsky.social', 50), 'alice.bsky.social');
  assert.equal(truncate('alice.bsky.social', 8), 'alice.b…');
  assert.equal(truncate('alice.bsky.social', 8).length, 8);
  assert.equal(initial('alice.bsky.social'), 'A');
  assert.equal(initial('@émile.test'), 'É');
  assert.equal(initial('...'), '?');
  assert.equal(hueFor('bob.test'), hueFor('bob.test'));
  assert.notEqual(hueFor('bob.test'), hueFor('rob.test'));
  for (const n of ['a', 'bob', 'carol.example.com']) {
    const h = hueFor(n);
    assert.ok(Number.isInteger(h) && h >= 0 && h < 360);
  }
});

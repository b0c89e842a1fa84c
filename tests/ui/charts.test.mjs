import assert from 'node:assert/strict';
import { test } from 'node:test';
import { barChart, chartDays, checkStrip, stripSummary } from '../../ui/lib/charts.js';

const NOW = Date.parse('2026-03-10T12:00:00Z');
const H = 3600_000;
const D = 24 * H;
const at = (/** @type {number} */ msAgo) => new Date(NOW - msAgo).toISOString();

test('check strip: slots fill the width, left to right in time', () => {
  const strip = checkStrip([], { now: NOW, days: 7, slots: 28, width: 224, height: 28, gap: 2 });
  assert.equal(strip.bars.length, 28);
  assert.equal(strip.total, 0);
  const [first, last] = [strip.bars[0], strip.bars[27]];
  assert.equal(first.x, 0);
  assert.ok(Math.abs(last.x + last.width - 224) < 0.05, 'the last slot ends at the right edge');
  for (let i = 1; i < 28; i += 1) assert.ok(strip.bars[i].x > strip.bars[i - 1].x);
  assert.equal(first.from, NOW - 7 * D);
  assert.equal(last.to, NOW);
  // Empty slots are small stubs on the baseline.
  for (const b of strip.bars) {
    assert.equal(b.outcome, 'none');
    assert.ok(b.height > 0 && b.height < 28 / 2);
    assert.equal(b.y + b.height, 28);
  }
});

test('check strip: each check lands in its slot; the worst outcome colours it', () => {
  const checks = [
    { at: at(7 * D - 1), outcome: 'pass' }, // first slot
    { at: at(1), outcome: 'pass' }, // last slot
    { at: at(2), outcome: 'fail' }, // last slot: fail wins
    { at: at(3 * D + 2 * H), outcome: 'unreachable' },
    { at: at(3 * D + 2 * H + 60_000), outcome: 'pass' }, // same slot: unreachable wins over pass
    { at: at(8 * D), outcome: 'fail' }, // too old: left out
    { at: new Date(NOW + H).toISOString(), outcome: 'fail' }, // in the future: left out
    { at: 'garbage', outcome: 'fail' },
  ];
  const strip = checkStrip(checks, { now: NOW, days: 7, slots: 28, width: 224, height: 28 });
  assert.equal(strip.total, 5);
  assert.deepEqual([strip.pass, strip.fail, strip.unreachable], [3, 1, 1]);
  assert.equal(strip.bars[0].outcome, 'pass');
  assert.equal(strip.bars[27].outcome, 'fail');
  assert.deepEqual([strip.bars[27].pass, strip.bars[27].fail], [1, 1]);
  const mid = strip.bars.find((b) => b.unreachable > 0);
  assert.ok(mid && mid.outcome === 'unreachable' && mid.pass === 1);
  // Heights tell outcomes apart without colour: pass and fail full, no answer shorter.
  assert.equal(strip.bars[0].height, 28);
  assert.equal(strip.bars[27].height, 28);
  assert.ok(mid.height < 28 && mid.height > 28 * 0.25);
  assert.equal(mid.y + mid.height, 28);
});

test('check strip summary in words', () => {
  assert.equal(stripSummary({ pass: 0, fail: 0, unreachable: 0, total: 0 }), 'No checks in this time');
  assert.equal(stripSummary({ pass: 1, fail: 0, unreachable: 0, total: 1 }), 'The check passed');
  assert.equal(stripSummary({ pass: 84, fail: 0, unreachable: 0, total: 84 }), 'All 84 checks passed');
  assert.equal(stripSummary({ pass: 80, fail: 3, unreachable: 1, total: 84 }), '80 of 84 checks passed, 3 failed, 1 got no answer');
});

test('chart days: enough for the oldest check, 1 to 14', () => {
  assert.equal(chartDays([], NOW), 1);
  assert.equal(chartDays([{ at: at(2 * H), outcome: 'pass' }], NOW), 1);
  assert.equal(chartDays([{ at: at(3 * D + H), outcome: 'pass' }], NOW), 4);
  assert.equal(chartDays([{ at: at(40 * D), outcome: 'pass' }], NOW), 14);
});

test('bar chart: largest first, bars scaled to the largest, sizes after the bars', () => {
  const chart = barChart(
    [
      { name: 'bob.test', bytes: 50_000_000 },
      { name: 'carol.test', bytes: 200_000_000 },
      { name: 'you', bytes: 0 },
    ],
    { width: 500, barHeight: 16, gap: 10, labelWidth: 150, valueWidth: 70 },
  );
  assert.deepEqual(chart.rows.map((r) => r.name), ['carol.test', 'bob.test', 'you']);
  const [carol, bob, you] = chart.rows;
  assert.equal(carol.trackWidth, 500 - 150 - 70);
  assert.equal(carol.barWidth, carol.trackWidth, 'the largest fills its track');
  assert.equal(bob.barWidth, carol.trackWidth / 4);
  assert.equal(you.barWidth, 0);
  assert.equal(you.value, 'nothing yet');
  assert.equal(carol.value, '200 MB');
  assert.deepEqual(chart.rows.map((r) => r.y), [0, 26, 52]);
  assert.equal(chart.height, 3 * 16 + 2 * 10);
  for (const r of chart.rows) {
    assert.equal(r.barX, 150);
    assert.equal(r.valueX, 150 + r.barWidth + 8);
    assert.ok(r.valueX + 60 <= 500, 'the size fits in the chart');
  }
  assert.equal(chart.total, 250_000_000);
  assert.equal(chart.totalText, '250 MB');
});

test('bar chart: tiny values stay visible, long names are shortened, empty is empty', () => {
  const chart = barChart(
    [
      { name: 'a-very-long-handle-for-someone.example.com', bytes: 1_000_000_000 },
      { name: 'tiny.test', bytes: 10 },
    ],
    { width: 400, labelWidth: 100, valueWidth: 60, charWidth: 8 },
  );
  assert.ok(chart.rows[1].barWidth >= 3);
  assert.ok(chart.rows[0].label.endsWith('…'));
  assert.ok(chart.rows[0].label.length <= Math.floor((100 - 12) / 8));
  assert.equal(chart.rows[1].label, 'tiny.test');
  const none = barChart([]);
  assert.deepEqual([none.rows.length, none.height, none.total], [0, 0, 0]);
});

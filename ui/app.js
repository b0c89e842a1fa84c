// P2PDS desktop app: the main window. Fetches the overview, shows the screen it calls for,
// and follows the engine's events (changes, backup progress, alerts).

import { api, coalesce, errorText, onEngineEvent, onLinkOpened, tauri } from './lib/api.js';
import { byId } from './lib/dom.js';
import { pruneLiveProgress } from './lib/model.js';
import { initCircles, renderCircles } from './lib/views/circles.js';
import { initFriends, renderFriends, updateProgress } from './lib/views/friends.js';
import { initHeader, renderHeader } from './lib/views/header.js';
import { initLeave, loadHealth, renderHealth } from './lib/views/health.js';
import { initHelp } from './lib/views/help.js';
import { openGivenLink } from './lib/views/invite.js';
import { confirm, initMessages, notify, showError } from './lib/views/messages.js';
import { initRestore, updateRestore } from './lib/views/restore.js';
import { initSettings, loadSettings, renderAccount, updateMoveProgress } from './lib/views/settings.js';
import { initWelcome } from './lib/views/welcome.js';

// When this page's scripts began to run (all modules loaded): for the account of where a
// window's first moments go that `scripts/bench-desktop` prints.
const scriptsRan = performance.now();

/** @typedef {import('./lib/ctx.js').Ctx} Ctx */
/** @typedef {import('./lib/ctx.js').View} View */
/** @typedef {import('./types').Overview} Overview */

/** @type {Ctx} */
const ctx = {
  state: {
    overview: null,
    view: 'friends',
    live: new Map(),
    healthUri: null,
    health: null,
    healthError: null,
    errors: new Map(),
  },
  setOverview,
  refresh: async () => refresh(),
  go,
  openHealth,
  showError,
  notify,
  confirm,
  render,
};

const VIEWS = /** @type {const} */ ({
  friends: 'view-friends',
  circles: 'view-circles',
  settings: 'view-settings',
  health: 'health',
});

/**
 * @param {Overview} o
 */
function setOverview(o) {
  const wasWelcomed = ctx.state.overview?.welcomed ?? true;
  ctx.state.overview = o;
  ctx.state.live = pruneLiveProgress(ctx.state.live, o.friends);
  render();
  if (!wasWelcomed && o.welcomed) byId('friends-title', HTMLElement).focus();
}

const refresh = coalesce(async () => {
  setOverview(await api.overview());
  if (ctx.state.view === 'health') await loadHealth(ctx);
});

/** Shows what the state calls for. */
function render() {
  const o = ctx.state.overview;
  if (!o) return;
  byId('loading', HTMLElement).hidden = true;
  byId('welcome', HTMLElement).hidden = o.welcomed;
  byId('app', HTMLElement).hidden = !o.welcomed;
  if (!o.welcomed) return;
  for (const [view, id] of Object.entries(VIEWS)) byId(id, HTMLElement).hidden = view !== ctx.state.view;
  renderHeader(ctx);
  renderFriends(ctx);
  renderCircles(ctx);
  renderAccount(ctx);
  if (ctx.state.view === 'health') renderHealth(ctx);
}

/**
 * @param {View} view
 */
function go(view) {
  const from = ctx.state.view;
  ctx.state.view = view;
  render();
  const main = byId('main', HTMLElement);
  if (from !== view) main.scrollTop = 0;
  if (view === 'settings') loadSettings(ctx);
  if (from === 'health' && view === 'circles' && ctx.state.healthUri) {
    // Back on the list: focus the circle that was open.
    for (const b of document.querySelectorAll('.circle-card')) {
      if (b instanceof HTMLElement && b.dataset.uri === ctx.state.healthUri) b.querySelector('button')?.focus();
    }
  }
}

/**
 * @param {string} uri
 */
function openHealth(uri) {
  if (ctx.state.healthUri !== uri) {
    ctx.state.health = null;
    ctx.state.healthError = null;
  }
  ctx.state.healthUri = uri;
  go('health');
  byId('health-title', HTMLElement).focus();
  loadHealth(ctx).then(() => {
    if (ctx.state.view === 'health') byId('health-title', HTMLElement).focus();
  });
}

async function start() {
  initMessages();
  initWelcome(ctx);
  initHeader(ctx);
  initFriends(ctx);
  initCircles(ctx);
  initLeave(ctx);
  initSettings(ctx);
  initRestore(ctx);
  initHelp();

  if (!tauri()) {
    byId('loading-text', HTMLElement).textContent = 'This window only works inside the P2PDS app.';
    return;
  }

  /** @type {ReturnType<typeof setTimeout> | undefined} */
  let changedTimer;
  // The engine's events are listened to and the state fetched at once, not one after the
  // other, so the first paint waits for one round trip, not two. A change between the two
  // had no listener: once both are done, the state is fetched once more.
  let listened = -1;
  const listening = onEngineEvent((e) => {
    switch (e.type) {
      case 'changed':
        // Changes come in bursts while backups run: fetch once they settle a little.
        clearTimeout(changedTimer);
        changedTimer = setTimeout(() => refresh().catch((err) => showError(errorText(err))), 150);
        break;
      case 'progress':
        ctx.state.live.set(e.did, e.progress);
        updateProgress(e.did, e.progress);
        break;
      case 'moving':
        updateMoveProgress(e.progress);
        break;
      case 'restoring':
        updateRestore(e.did, e.step);
        break;
      case 'alert':
        notify(e.title, e.body, 'warn', e.key);
        break;
      default:
        break;
    }
  })
    .catch((err) => showError(errorText(err)))
    .then(() => {
      listened = performance.now();
    });

  try {
    await refresh();
  } catch (err) {
    byId('loading-text', HTMLElement).textContent = errorText(err);
    return;
  }
  const fetched = performance.now();
  // Once the page listens, fetch once more: a change between the fetch and the listening had
  // no listener, so nothing is missed. It waits for the first frame, which it would only
  // delay (or a second, for a window not drawn yet).
  let fetchedAgain = false;
  const fetchAgain = () => {
    if (!fetchedAgain) {
      fetchedAgain = true;
      listening.then(() => refresh()).catch(() => {});
    }
  };
  setTimeout(fetchAgain, 1000);
  // The first real frame is on screen: tell the app (it measures its start-up time), with
  // when each step before it ended.
  requestAnimationFrame(() => {
    // This frame's style, layout and paint come after this callback; the next one runs once
    // it is drawn.
    const frameBegan = performance.now();
    requestAnimationFrame(() => {
      const nav = /** @type {PerformanceNavigationTiming | undefined} */ (performance.getEntriesByType('navigation')[0]);
      /** @type {[string, number][]} */
      const steps = [
        ['page asked for', 0],
        ['page received', nav ? nav.responseEnd : -1],
        ['page parsed', nav ? nav.domInteractive : -1],
        ['scripts ran', scriptsRan],
        ['events listened to', listened],
        ['overview fetched and shown', fetched],
        ['first frame began', frameBegan],
        ...performance.getEntriesByType('paint').map((p) => /** @type {[string, number]} */ ([p.name, p.startTime])),
      ];
      api.ready({ origin: performance.timeOrigin, steps }).catch(() => {});
      fetchAgain();
    });
  });

  // An invitation link the app was opened with (now, or later while the window is open).
  const takeLink = async () => {
    const link = await api.takePendingLink().catch(() => null);
    if (link) openGivenLink(ctx, link);
  };
  await onLinkOpened(() => takeLink().catch(() => {})).catch(() => {});
  await takeLink();

  // Relative times ("3 minutes ago") age while the window is open.
  setInterval(() => {
    if (document.visibilityState === 'visible') refresh().catch(() => {});
  }, 60_000);
}

start();

// The top of the main window: status pill, headline, sync and pause, banners; and the
// sidebar's navigation, storage meter and account line.

import { api, errorText } from '../api.js';
import { busy, byId, h, reconcile } from '../dom.js';
import { accountInfo, banners, pauseControl, PAUSE_MINUTES, storageSummary, trayInfo } from '../model.js';
import { icon } from './common.js';

/** @typedef {import('../ctx.js').Ctx} Ctx */

/** Banners the person hid (by their words: a banner that changes shows again), until restart. */
const dismissed = new Set();

/**
 * Binds the header's buttons and the navigation.
 * @param {Ctx} ctx
 */
export function initHeader(ctx) {
  const sync = byId('sync-now', HTMLButtonElement);
  sync.addEventListener('click', async () => {
    try {
      await busy(sync, 'Syncing…', () => api.syncNow());
    } catch (e) {
      ctx.showError(errorText(e));
    }
  });
  const pause = byId('pause', HTMLButtonElement);
  pause.addEventListener('click', async () => {
    const o = ctx.state.overview;
    if (!o) return;
    const paused = pauseControl(o).paused;
    pause.disabled = true;
    try {
      ctx.setOverview(paused ? await api.resume() : await api.pause(PAUSE_MINUTES));
    } catch (e) {
      ctx.showError(errorText(e));
    } finally {
      pause.disabled = false;
    }
  });
  for (const id of ['nav-friends', 'nav-circles', 'nav-settings']) {
    const b = byId(id, HTMLButtonElement);
    b.addEventListener('click', () => ctx.go(/** @type {import('../ctx.js').View} */ (b.dataset.view)));
  }
}

/**
 * @param {Ctx} ctx
 */
export function renderHeader(ctx) {
  const o = ctx.state.overview;
  if (!o) return;
  const headline = byId('headline', HTMLElement);
  if (headline.textContent !== o.headline) headline.textContent = o.headline;

  const tray = trayInfo(o.tray, o.circles);
  byId('tray-pill', HTMLElement).dataset.tone = tray.tone;
  byId('tray-label', HTMLElement).textContent = tray.label;
  byId('tray-state', HTMLElement).textContent = o.tray;

  const p = pauseControl(o);
  byId('pause-label', HTMLElement).textContent = p.label;
  byId('pause-icon', SVGElement).setAttribute('href', p.paused ? '#i-play' : '#i-pause');
  const note = byId('pause-note', HTMLElement);
  note.hidden = !p.note;
  note.textContent = p.note ?? '';

  reconcile(
    byId('banners', HTMLElement),
    banners(o)
      .filter((b) => !dismissed.has(b.text))
      .map((b) => {
        const close = h('button', { class: 'icon-btn', type: 'button', 'aria-label': 'Hide this message' }, icon('x'));
        close.addEventListener('click', () => {
          dismissed.add(b.text);
          renderHeader(ctx);
        });
        return h(
          'div',
          { class: 'banner', 'data-tone': b.tone, 'data-key': b.key, role: 'status' },
          icon(b.key === 'notifications' ? 'bell-off' : 'alert'),
          h('p', { text: b.text }),
          close,
        );
      }),
  );

  // Navigation.
  const current = ctx.state.view === 'health' ? 'circles' : ctx.state.view;
  for (const v of ['friends', 'circles', 'settings']) {
    const b = byId(`nav-${v}`, HTMLButtonElement);
    if (v === current) b.setAttribute('aria-current', 'page');
    else b.removeAttribute('aria-current');
  }
  const count = byId('nav-friends-count', HTMLElement);
  count.hidden = o.friends.length === 0;
  count.textContent = String(o.friends.length);
  const badge = byId('nav-circles-badge', HTMLElement);
  badge.hidden = o.invitations.length === 0;
  badge.textContent = String(o.invitations.length);
  badge.title = o.invitations.length === 1 ? '1 invitation' : `${o.invitations.length} invitations`;

  // Sidebar foot.
  const st = storageSummary(o.storage);
  byId('storage-text', HTMLElement).textContent = st.text;
  const meter = byId('storage-meter', HTMLElement);
  meter.hidden = st.fraction == null;
  if (st.fraction != null) {
    const fill = byId('storage-meter-fill', HTMLElement);
    fill.style.width = `${Math.max(2, st.fraction * 100).toFixed(1)}%`;
    meter.dataset.tone = st.fraction >= 1 ? 'danger' : st.fraction >= 0.9 ? 'warn' : 'ok';
  }
  byId('account-line', HTMLElement).textContent = accountInfo(o).signedIn
    ? `Signed in as ${o.me?.handle ? `@${o.me.handle}` : 'you'}`
    : 'Not signed in';
}

// The app's commands and events, through Tauri's global API (`withGlobalTauri`). Every
// command returns a promise; a failure is a plain-language sentence from the Rust side.

/** @typedef {import('../types').Overview} Overview */
/** @typedef {import('../types').Health} Health */
/** @typedef {import('../types').Settings} Settings */
/** @typedef {import('../types').MoveReport} MoveReport */
/** @typedef {import('../types').Event} EngineEvent */
/** @typedef {import('../types').Collection} Collection */
/** @typedef {import('../types').RestoreChoice} RestoreChoice */
/** @typedef {import('../types').RestoreInput} RestoreInput */
/** @typedef {import('../types').RestoreOutcome} RestoreOutcome */
/** @typedef {import('../types').RecoveryKeyStatus} RecoveryKeyStatus */
/** @typedef {import('../types').BrowserSignInStarted} BrowserSignInStarted */

/**
 * @typedef {object} TauriGlobal
 * @property {{ invoke: (cmd: string, args?: Record<string, unknown>) => Promise<unknown> }} core
 * @property {{ listen: (event: string, handler: (e: { payload: unknown }) => void) => Promise<() => void> }} event
 */

/**
 * Tauri's global API, when the page runs inside the app.
 * @returns {TauriGlobal | null}
 */
export function tauri() {
  const g = /** @type {{ __TAURI__?: TauriGlobal }} */ (/** @type {unknown} */ (globalThis));
  return g.__TAURI__ ?? null;
}

/**
 * A rejection's reason as a sentence to show.
 * @param {unknown} e
 * @returns {string}
 */
export function errorText(e) {
  if (typeof e === 'string' && e.trim()) return e.trim();
  if (e instanceof Error && e.message) return e.message;
  if (e && typeof e === 'object' && 'message' in e && typeof e.message === 'string' && e.message) return e.message;
  return 'Something went wrong. Please try again.';
}

/**
 * @template T
 * @param {string} cmd
 * @param {Record<string, unknown>} [args]
 * @returns {Promise<T>}
 */
async function call(cmd, args) {
  const t = tauri();
  if (!t) throw new Error('This window only works inside the P2PDS app.');
  return /** @type {T} */ (await t.core.invoke(cmd, args));
}

export const api = {
  /** @returns {Promise<Overview>} */
  overview: () => call('overview'),
  /**
   * The first frame is painted; `timing`: when the steps before it ended (ms since `origin`,
   * the page's time origin in ms since 1970), for the bench's account.
   * @param {{ origin: number, steps: [string, number][] }} timing @returns {Promise<null>}
   */
  ready: (timing) => call('ready', { timing }),
  /** @param {string} handle @param {string} password @returns {Promise<Overview>} */
  signIn: (handle, password) => call('sign_in', { handle, password }),
  /** @returns {Promise<Overview>} */
  skipSignIn: () => call('skip_sign_in'),
  /** @param {string} handle @returns {Promise<BrowserSignInStarted>} */
  startBrowserSignIn: (handle) => call('start_browser_sign_in', { handle }),
  /** @returns {Promise<Overview>} */
  finishBrowserSignIn: () => call('finish_browser_sign_in'),
  /** @returns {Promise<void>} */
  cancelBrowserSignIn: () => call('cancel_browser_sign_in'),
  /** @returns {Promise<Overview>} */
  signOut: () => call('sign_out'),
  /** @param {string} who @returns {Promise<Overview>} */
  addFriend: (who) => call('add_friend', { who }),
  /** @param {string} did @returns {Promise<Overview>} */
  removeFriend: (did) => call('remove_friend', { did }),
  /** @returns {Promise<null>} */
  syncNow: () => call('sync_now'),
  /** @param {number} minutes @returns {Promise<Overview>} */
  pause: (minutes) => call('pause', { minutes }),
  /** @returns {Promise<Overview>} */
  resume: () => call('resume'),
  /** @param {string} name @param {string[]} members @param {number} minCopies @returns {Promise<Overview>} */
  createCircle: (name, members, minCopies) => call('create_circle', { name, members, minCopies }),
  /** @param {string} uri @returns {Promise<Overview>} */
  acceptInvitation: (uri) => call('accept_invitation', { uri }),
  /** @param {string} uri @returns {Promise<Overview>} */
  declineInvitation: (uri) => call('decline_invitation', { uri }),
  /** @param {string} uri @param {boolean} keepCopies @returns {Promise<Overview>} */
  leaveCircle: (uri, keepCopies) => call('leave_circle', { uri, keepCopies }),
  /** @param {string} uri @returns {Promise<Health>} */
  circleHealth: (uri) => call('circle_health', { uri }),
  /** A circle's invitation link: one line to send by any channel. @param {string} uri @returns {Promise<string>} */
  invitationLink: (uri) => call('invitation_link', { uri }),
  /** An invitation link as a QR code: an SVG document's text (colours as attributes, no styles). @param {string} link @returns {Promise<string>} */
  invitationQr: (link) => call('invitation_qr', { link }),
  /** Checks a pasted link with its circle's author; the invitation then shows in `invitations`. @param {string} link @returns {Promise<Overview>} */
  openInvitationLink: (link) => call('open_invitation_link', { link }),
  /** Accepts what happened to an account (clears its flags). @param {string} did @returns {Promise<Overview>} */
  dismissFlags: (did) => call('dismiss_flags', { did }),
  /** What collecting old versions would free. @returns {Promise<Collection>} */
  reclaimable: () => call('reclaimable'),
  /** @returns {Promise<Collection>} */
  collectGarbage: () => call('collect_garbage'),
  /** @returns {Promise<RecoveryKeyStatus>} */
  recoveryKeyStatus: () => call('recovery_key_status'),
  /** The main password goes to the account's server only. @param {string} password @param {string | null} code @returns {Promise<RecoveryKeyStatus>} */
  addRecoveryKey: (password, code) => call('add_recovery_key', { password, code }),
  /** @returns {Promise<BrowserSignInStarted>} */
  startRecoveryConsent: () => call('start_recovery_consent'),
  /** @returns {Promise<RecoveryKeyStatus>} */
  finishRecoveryConsent: () => call('finish_recovery_consent'),
  /** @returns {Promise<void>} */
  cancelRecoveryConsent: () => call('cancel_recovery_consent'),
  /** @param {string} did @returns {Promise<RestoreChoice>} */
  restoreChoice: (did) => call('restore_choice', { did }),
  /** The passwords in `input` go to the servers only. @param {RestoreInput} input @returns {Promise<RestoreOutcome>} */
  restoreAccount: (input) => call('restore_account', { input }),
  /** @returns {Promise<Settings>} */
  getSettings: () => call('get_settings'),
  /** @param {Settings} settings @returns {Promise<Settings>} */
  saveSettings: (settings) => call('save_settings', { settings }),
  /** Copies everything to `dir`, then the app restarts there. @param {string} dir @returns {Promise<MoveReport>} */
  moveStorage: (dir) => call('move_storage', { dir }),
  /** @returns {Promise<Settings>} */
  deleteOldCopy: () => call('delete_old_copy'),
  /** An invitation link the system opened the app with, once (else null). @returns {Promise<string | null>} */
  takePendingLink: () => call('take_pending_link'),
  /** Opens a help page (a topic of lib/help.js) in the browser. @param {string} topic @returns {Promise<null>} */
  openHelp: (topic) => call('open_help', { topic }),
};

/**
 * Calls `handler` with each engine event.
 * @param {(e: EngineEvent) => void} handler
 * @returns {Promise<() => void>} stops listening
 */
export async function onEngineEvent(handler) {
  const t = tauri();
  if (!t) return () => {};
  return t.event.listen('engine', (e) => handler(/** @type {EngineEvent} */ (e.payload)));
}

/**
 * Calls `handler` when the system opened the app with an invitation link (a `p2pds:` link):
 * the page then takes it with `api.takePendingLink()`.
 * @param {() => void} handler
 * @returns {Promise<() => void>} stops listening
 */
export async function onLinkOpened(handler) {
  const t = tauri();
  if (!t) return () => {};
  return t.event.listen('link', () => handler());
}

/**
 * Runs `fn` at most once at a time: calls while it runs make one more run after it.
 * @param {() => Promise<void>} fn
 * @returns {() => Promise<void>}
 */
export function coalesce(fn) {
  /** @type {Promise<void> | null} */
  let running = null;
  let again = false;
  const run = async () => {
    if (running) {
      again = true;
      return running;
    }
    running = (async () => {
      try {
        do {
          again = false;
          await fn();
        } while (again);
      } finally {
        running = null;
      }
    })();
    return running;
  };
  return run;
}

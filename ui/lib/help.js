// Help pages the app can open in the browser. The app opens only its own fixed list (the
// `open_help` command in src-tauri/src/commands.rs maps these topics to the same addresses):
// the page names a topic, never an address. Pure: node's tests import it.

/** Topic → the page it opens. */
export const HELP_PAGES = Object.freeze({
  'app-passwords': 'https://bsky.app/settings/app-passwords',
});

/**
 * Topic → what the page explains, in a short paragraph shown in the window whether or not a
 * browser opens (an opener that starts is no proof that a browser showed the page).
 */
export const HELP_TEXTS = Object.freeze({
  'app-passwords':
    'An app password is a separate password for one app: the app never sees your main password, ' +
    'and you can delete the app password at any time. To make one in Bluesky, go to Settings → ' +
    'Privacy and security → App passwords → Add App Password, then paste it here.',
});

/**
 * The explanation of `topic`, shown in the window.
 * @param {string} topic
 * @returns {string}
 */
export function helpText(topic) {
  return /** @type {Record<string, string>} */ (HELP_TEXTS)[topic] ?? '';
}

/**
 * What to say when the browser could not be opened: where to go by hand.
 * @param {string} topic
 * @returns {string}
 */
export function helpErrorText(topic) {
  const url = /** @type {Record<string, string>} */ (HELP_PAGES)[topic];
  return url ? `Couldn’t open your browser. The page is: ${url}` : 'That help page is not available.';
}

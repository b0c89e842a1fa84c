// Help pages the app can open in the browser. The app opens only its own fixed list (the
// `open_help` command in src-tauri/src/commands.rs maps these topics to the same addresses):
// the page names a topic, never an address. Pure: node's tests import it.

/** Topic → the page it opens. */
export const HELP_PAGES = Object.freeze({
  'app-passwords': 'https://bsky.app/settings/app-passwords',
});

/**
 * What to say when the browser could not be opened: where to go by hand.
 * @param {string} topic
 * @returns {string}
 */
export function helpErrorText(topic) {
  const url = /** @type {Record<string, string>} */ (HELP_PAGES)[topic];
  return url ? `Couldn’t open your browser. The page is: ${url}` : 'That help page is not available.';
}

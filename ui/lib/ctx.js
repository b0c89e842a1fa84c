// Types shared by app.js and the views (JSDoc only).

/** @typedef {import('../types').Overview} Overview */
/** @typedef {import('../types').Health} Health */
/** @typedef {import('../types').Settings} Settings */
/** @typedef {import('../types').Progress} Progress */
/** @typedef {import('./model.js').Tone} Tone */

/** @typedef {'friends' | 'circles' | 'settings' | 'health'} View */

/**
 * @typedef {object} AppState
 * @property {Overview | null} overview
 * @property {View} view
 * @property {Map<string, Progress>} live progress from engine events, by DID
 * @property {string | null} healthUri the circle whose dashboard is open
 * @property {Health | null} health
 * @property {string | null} healthError
 * @property {Map<string, string>} errors errors shown on cards, by card key
 */

/**
 * @typedef {object} Ctx
 * @property {AppState} state
 * @property {(o: Overview) => void} setOverview shows a fresh overview
 * @property {() => Promise<void>} refresh fetches the overview again
 * @property {(view: View) => void} go
 * @property {(uri: string) => void} openHealth
 * @property {(message: string) => void} showError an error that belongs to no form
 * @property {(title: string, body?: string, tone?: Tone, key?: string) => void} notify
 * @property {(o: { title: string, body: string, confirm: string }) => Promise<boolean>} confirm
 * @property {() => void} render
 */

export {};

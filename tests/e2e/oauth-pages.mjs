// The reference PDS's OAuth sign-in and consent pages, answered as a browser would (the same
// steps as tests/it/oauth_pages.rs): load the page (a navigation: it sets the device and CSRF
// cookies), sign in and consent through the page's own API, then load the address the page
// would go to, whose 303 names the app's loopback callback. Then that callback is visited,
// which is what hands the answer to the app.
//
// node:http, not fetch: undici sends `sec-fetch-mode: cors` itself, which the page's API
// refuses. Cookies are kept by hand; signing in replaces the `ses-id` cookie.

import http from 'node:http'

const API = '/@atproto/oauth-provider/~api'

function request(url, { method = 'GET', headers = {}, body } = {}) {
  return new Promise((ok, fail) => {
    const r = http.request(url, { method, headers }, (res) => {
      const chunks = []
      res.on('data', (c) => chunks.push(c))
      res.on('end', () => ok({ status: res.statusCode, headers: res.headers, text: Buffer.concat(chunks).toString() }))
    })
    r.on('error', fail)
    r.setTimeout(30_000, () => r.destroy(new Error(`${url}: no answer in 30 s`)))
    if (body) r.write(body)
    r.end()
  })
}

class Jar {
  constructor() {
    this.cookies = new Map()
  }
  take(res) {
    for (const line of res.headers['set-cookie'] ?? []) {
      const [pair, ...attrs] = line.split(';')
      const i = pair.indexOf('=')
      const name = pair.slice(0, i).trim()
      const value = pair.slice(i + 1).trim()
      const maxAge = attrs.find((a) => a.trim().toLowerCase().startsWith('max-age='))
      if (value === '' || (maxAge && Number(maxAge.split('=')[1]) <= 0)) this.cookies.delete(name)
      else this.cookies.set(name, value)
    }
  }
  header() {
    return [...this.cookies].map(([k, v]) => `${k}=${v}`).join('; ')
  }
}

/**
 * Signs `username` in on the page at `authorizeUrl` with `password`, approves, and visits the
 * app's loopback callback the page sends the browser to. Returns what the callback answered.
 */
export async function approveInBrowser(authorizeUrl, username, password) {
  const origin = new URL(authorizeUrl).origin
  const jar = new Jar()
  const page = await request(authorizeUrl, {
    headers: { 'sec-fetch-mode': 'navigate', 'sec-fetch-dest': 'document', 'sec-fetch-site': 'none' },
  })
  if (page.status !== 200) throw new Error(`the sign-in page: HTTP ${page.status}: ${page.text.slice(0, 500)}`)
  jar.take(page)
  const api = async (step, body) => {
    const res = await request(`${origin}${API}/${step}`, {
      method: 'POST',
      headers: {
        'content-type': 'application/json',
        origin,
        referer: authorizeUrl,
        'sec-fetch-mode': 'same-origin',
        'sec-fetch-site': 'same-origin',
        'x-csrf-token': jar.cookies.get('csrf-token') ?? '',
        cookie: jar.header(),
      },
      body: JSON.stringify(body),
    })
    jar.take(res)
    if (res.status !== 200) throw new Error(`${step}: HTTP ${res.status}: ${res.text.slice(0, 500)}`)
    return JSON.parse(res.text)
  }
  const signedIn = await api('sign-in', { locale: 'en', username, password, remember: true })
  const consent = await api('consent', { did: signedIn.account.did })
  const next = await request(consent.url, {
    headers: {
      'sec-fetch-mode': 'navigate',
      'sec-fetch-dest': 'document',
      'sec-fetch-site': 'same-origin',
      referer: authorizeUrl,
      cookie: jar.header(),
    },
  })
  const callback = next.headers.location
  if (next.status !== 303 || !callback) throw new Error(`after consent: HTTP ${next.status}, no callback: ${next.text.slice(0, 500)}`)
  const answered = await request(callback)
  return answered.text
}

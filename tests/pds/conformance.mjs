// Conformance of `p2pds serve` with the reference AT Protocol libraries.
//
//   node conformance.mjs INPUT.json
//
// INPUT.json: {
//   pds, node,                         base URLs of the reference PDS and of the node
//   unknownDid,                        a DID neither server holds
//   accounts: [{
//     did, signingKey (did:key),
//     commit: {cid, rev},              the latest commit (both servers should be at it)
//     sinceRev,                        an older rev (getRepo / listBlobs `since`)
//     present: [{collection, rkey, cid}],   every record of the repo
//     absent: [{collection, rkey, height}], keys that are not in the repo
//     blobs: [{cid, mimeType, size}],  every blob the records name
//     blobsSince: [cid],               the blobs named by records written after sinceRev
//   }]
// }
//
// Every call goes through @atproto/api's client, which checks the JSON answers against the
// com.atproto lexicons; every CAR is read and verified with @atproto/repo. The same questions
// go to both servers and the answers are compared. Prints ONE JSON report on stdout:
// {checks: {endpoint: {pds: {passed, failed}, node: {...}}}, proofs: {...}, sizes: [...],
//  mismatches: ["words", ...], notes: [...], durationMs}.
// A mismatch is a failed check (on either server); a note is something worth knowing that
// fails nothing (e.g. the reference PDS answering `InvalidRequest` where the lexicon names a
// more precise error).

import { readFileSync } from 'node:fs'
import { AtpAgent } from '@atproto/api'
import * as repo from '@atproto/repo'
import { cidForCbor, cidForRawBytes, parseCid } from '@atproto/lex-data'

const started = Date.now()
const input = JSON.parse(readFileSync(process.argv[2], 'utf8'))
const SERVERS = ['pds', 'node']
const agents = {
  pds: new AtpAgent({ service: input.pds }),
  node: new AtpAgent({ service: input.node }),
}

const report = {
  servers: { pds: input.pds, node: input.node },
  checks: {},
  proofs: {
    present: { pds: {}, node: {} },
    absent: { pds: {}, node: {} },
    identicalToPds: { present: 0, absent: 0, differing: 0 },
  },
  sizes: [],
  mismatches: [],
  notes: [],
  durationMs: 0,
}

// ---- bookkeeping ----------------------------------------------------------------------------

function tally(endpoint, server, ok) {
  const e = (report.checks[endpoint] ??= {
    pds: { passed: 0, failed: 0 },
    node: { passed: 0, failed: 0 },
  })
  e[server][ok ? 'passed' : 'failed'] += 1
}

/** One check of `endpoint` on `server`: `problem` is null when it passed, else words. */
function check(endpoint, server, problem, where = '') {
  tally(endpoint, server, problem === null)
  if (problem !== null) {
    report.mismatches.push(`${server} ${endpoint}${where ? ` (${where})` : ''}: ${problem}`)
  }
  return problem === null
}

function note(text) {
  if (!report.notes.includes(text)) report.notes.push(text)
}

function proofCount(kind, server, height, ok) {
  const byHeight = report.proofs[kind][server]
  const h = (byHeight[String(height)] ??= { verified: 0, failed: 0 })
  h[ok ? 'verified' : 'failed'] += 1
}

function describeError(e) {
  if (e && typeof e === 'object') {
    const name = e.error ? `${e.error}` : e.name || 'Error'
    let text = `${name}: ${e.message}`
    if (e.validationError) text += ` (lexicon: ${e.validationError.message})`
    if (e.status !== undefined) text += ` [status ${e.status}]`
    return text
  }
  return String(e)
}

/** → {ok: true, data, headers} or {ok: false, name, text} */
async function call(server, method, params) {
  try {
    const res = await agents[server].com.atproto.sync[method](params)
    return { ok: true, data: res.data, headers: res.headers ?? {} }
  } catch (e) {
    return { ok: false, name: e?.error ?? e?.name, text: describeError(e) }
  }
}

function sample(list, n) {
  if (list.length <= n) return list.slice()
  const step = list.length / n
  return Array.from({ length: n }, (_, i) => list[Math.floor(i * step)])
}

/** JSON with the keys of every object sorted: equal answers give equal strings. */
function canonical(value) {
  return JSON.stringify(value, (_, v) =>
    v && typeof v === 'object' && !Array.isArray(v)
      ? Object.fromEntries(Object.entries(v).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)))
      : v,
  )
}

function setDiff(a, b) {
  return [...a].filter((x) => !b.has(x))
}

/** Words for how two sets of strings differ (null when equal). */
function compareSets(what, got, want) {
  const missing = setDiff(want, got)
  const extra = setDiff(got, want)
  if (missing.length === 0 && extra.length === 0) return null
  const parts = []
  if (missing.length) parts.push(`${missing.length} missing (e.g. ${missing.slice(0, 3).join(', ')})`)
  if (extra.length) parts.push(`${extra.length} extra (e.g. ${extra.slice(0, 3).join(', ')})`)
  return `${what}: ${got.size} vs ${want.size} expected; ${parts.join('; ')}`
}

/** Runs `fn` over `items`, at most `width` at a time. */
async function pool(items, width, fn) {
  let next = 0
  const workers = Array.from({ length: Math.min(width, items.length) }, async () => {
    while (next < items.length) {
      const i = next++
      await fn(items[i], i)
    }
  })
  await Promise.all(workers)
}

/** Reads a CAR (hashing every block against its CID): → {roots, cids: Set, duplicates}. */
async function carBlocks(bytes) {
  const { roots, blocks } = await repo.readCarStream([bytes])
  const cids = new Set()
  const duplicates = []
  for await (const block of blocks) {
    const key = block.cid.toString()
    if (cids.has(key)) duplicates.push(`${key} (${block.bytes.length} bytes)`)
    cids.add(key)
  }
  return { roots: roots.map(String), cids, duplicates }
}

function asBytes(data) {
  if (data instanceof Uint8Array) return data
  if (data instanceof ArrayBuffer) return new Uint8Array(data)
  return null
}

/** An error answer named `want` (the lexicon's name). The reference PDS answers some of these
 * with the generic `InvalidRequest`: accepted from it (only), with a note. */
function checkError(endpoint, server, res, want, where, pdsMayAnswer) {
  if (res.ok) return check(endpoint, server, `answered where ${want} was expected`, where)
  if (res.name === want) return check(endpoint, server, null, where)
  if (server === 'pds' && pdsMayAnswer && res.name === pdsMayAnswer) {
    note(`the reference PDS answers ${pdsMayAnswer} where the lexicon names ${want} (${endpoint})`)
    return check(endpoint, server, null, where)
  }
  return check(endpoint, server, `expected error ${want}, got ${res.text}`, where)
}

// ---- per account ------------------------------------------------------------------------------

async function latestCommit(acct) {
  const got = {}
  for (const server of SERVERS) {
    const res = await call(server, 'getLatestCommit', { did: acct.did })
    if (!res.ok) {
      check('getLatestCommit', server, res.text, acct.did)
      continue
    }
    got[server] = res.data
    const { cid, rev } = res.data
    check(
      'getLatestCommit',
      server,
      cid === acct.commit.cid && rev === acct.commit.rev
        ? null
        : `{cid: ${cid}, rev: ${rev}}, expected {cid: ${acct.commit.cid}, rev: ${acct.commit.rev}}`,
      acct.did,
    )
  }
}

async function fullRepo(acct, size) {
  const expected = new Map(acct.present.map((r) => [`${r.collection}/${r.rkey}`, r.cid]))
  const got = {}
  for (const server of SERVERS) {
    const res = await call(server, 'getRepo', { did: acct.did })
    if (!res.ok) {
      check('getRepo', server, res.text, acct.did)
      continue
    }
    const bytes = asBytes(res.data)
    if (!bytes) {
      check('getRepo', server, `not bytes: ${typeof res.data}`, acct.did)
      continue
    }
    size.full[server] = bytes.length
    let verified, blocks
    try {
      verified = await repo.verifyRepoCar(bytes, acct.did, acct.signingKey)
      blocks = await carBlocks(bytes)
    } catch (e) {
      check('getRepo', server, `the CAR does not verify: ${describeError(e)}`, acct.did)
      continue
    }
    const records = new Map(verified.creates.map((c) => [`${c.collection}/${c.rkey}`, c.cid.toString()]))
    got[server] = { blocks: blocks.cids, records, commit: verified.commit }
    const problems = []
    if (verified.commit.cid.toString() !== acct.commit.cid) {
      problems.push(`commit ${verified.commit.cid}, expected ${acct.commit.cid}`)
    }
    if (verified.commit.rev !== acct.commit.rev) {
      problems.push(`rev ${verified.commit.rev}, expected ${acct.commit.rev}`)
    }
    const keys = compareSets('records', new Set(records.keys()), new Set(expected.keys()))
    if (keys) problems.push(keys)
    const changed = [...records].filter(([k, cid]) => expected.has(k) && expected.get(k) !== cid)
    if (changed.length) problems.push(`${changed.length} records with another CID (e.g. ${changed[0][0]})`)
    if (blocks.duplicates.length) {
      note(`${server} getRepo sends ${blocks.duplicates.length} block(s) twice: ${blocks.duplicates.join(', ')} (${acct.did}; the commit is ${acct.commit.cid})`)
    }
    check('getRepo', server, problems.length ? problems.join('; ') : null, acct.did)
  }
  if (got.pds && got.node) {
    check(
      'getRepo',
      'node',
      compareSets('blocks compared with the PDS', got.node.blocks, got.pds.blocks),
      `${acct.did}, same blocks as the PDS`,
    )
  }
  return got.pds
}

async function sinceRepo(acct, size) {
  const got = {}
  for (const server of SERVERS) {
    const where = `${acct.did} since ${acct.sinceRev}`
    const res = await call(server, 'getRepo', { did: acct.did, since: acct.sinceRev })
    if (!res.ok) {
      check('getRepo since', server, res.text, where)
      continue
    }
    const bytes = asBytes(res.data)
    if (!bytes) {
      check('getRepo since', server, `not bytes: ${typeof res.data}`, where)
      continue
    }
    size.since[server] = bytes.length
    let car
    try {
      car = await carBlocks(bytes)
    } catch (e) {
      check('getRepo since', server, `not a valid CAR: ${describeError(e)}`, where)
      continue
    }
    got[server] = car.cids
    const problems = []
    if (car.roots.length !== 1 || car.roots[0] !== acct.commit.cid) {
      problems.push(`roots [${car.roots.join(', ')}], expected [${acct.commit.cid}]`)
    } else {
      // The commit in it: signed by the account's key.
      try {
        const { root, blocks } = await repo.readCarWithRoot(bytes)
        const commit = await new repo.MemoryBlockstore(blocks).readObj(root, repo.def.commit)
        if (commit.did !== acct.did) problems.push(`commit of ${commit.did}`)
        if (commit.rev !== acct.commit.rev) problems.push(`commit rev ${commit.rev}, expected ${acct.commit.rev}`)
        if (!(await repo.verifyCommitSig(commit, acct.signingKey))) problems.push('the commit signature does not verify')
      } catch (e) {
        problems.push(`no readable commit: ${describeError(e)}`)
      }
    }
    if (size.full[server] && bytes.length * 2 > size.full[server]) {
      problems.push(`not small: ${bytes.length} bytes, the whole repo is ${size.full[server]}`)
    }
    check('getRepo since', server, problems.length ? problems.join('; ') : null, where)
  }
  if (got.pds && got.node) {
    check(
      'getRepo since',
      'node',
      compareSets('blocks compared with the PDS', got.node, got.pds),
      `${acct.did} since ${acct.sinceRev}, same blocks as the PDS`,
    )
  }
}

async function heightOf(collection, rkey) {
  return repo.mstUtil.leadingZerosOnHash(`${collection}/${rkey}`)
}

async function records(acct) {
  const present = await Promise.all(
    acct.present.map(async (r) => ({ ...r, height: await heightOf(r.collection, r.rkey) })),
  )
  for (const a of acct.absent) {
    const h = await heightOf(a.collection, a.rkey)
    if (a.height !== undefined && a.height !== h) {
      report.mismatches.push(
        `input: ${a.collection}/${a.rkey} has MST height ${h} for @atproto/repo, ${a.height} for the Rust side`,
      )
    }
    a.height = h
  }
  const claims = [
    ...present.map((r) => ({ ...r, kind: 'present' })),
    ...acct.absent.map((a) => ({ ...a, cid: null, kind: 'absent' })),
  ]
  await pool(claims, 8, async (claim) => {
    const key = `${claim.collection}/${claim.rkey}`
    const where = `${acct.did} ${key} (${claim.kind}, height ${claim.height})`
    const blockSets = {}
    for (const server of SERVERS) {
      const res = await call(server, 'getRecord', {
        did: acct.did,
        collection: claim.collection,
        rkey: claim.rkey,
      })
      let problem = null
      if (!res.ok) {
        problem = res.text
      } else if (!asBytes(res.data)) {
        problem = `not bytes: ${typeof res.data}`
      } else {
        const bytes = asBytes(res.data)
        try {
          const { cids } = await carBlocks(bytes)
          blockSets[server] = cids
          const wanted = {
            collection: claim.collection,
            rkey: claim.rkey,
            cid: claim.cid === null ? null : parseCid(claim.cid),
          }
          const { verified } = await repo.verifyProofs(bytes, [wanted], acct.did, acct.signingKey)
          if (verified.length !== 1) {
            problem =
              claim.cid === null
                ? 'the proof does not show the key absent'
                : `the proof does not show the record with CID ${claim.cid}`
          } else if (claim.cid !== null) {
            const recs = await repo.verifyRecords(bytes, acct.did, acct.signingKey)
            const rec = recs.find((r) => r.collection === claim.collection && r.rkey === claim.rkey)
            if (!rec) problem = 'verifyRecords does not find the record in the proof'
            else if ((await repo.cidForRecord(rec.record)).toString() !== claim.cid) {
              problem = 'verifyRecords gives a record with another CID'
            }
          }
        } catch (e) {
          problem = `the proof does not verify: ${describeError(e)}`
        }
      }
      proofCount(claim.kind, server, claim.height, problem === null)
      check(`getRecord ${claim.kind}`, server, problem, where)
    }
    if (blockSets.pds && blockSets.node) {
      const missing = setDiff(blockSets.pds, blockSets.node)
      const extra = setDiff(blockSets.node, blockSets.pds)
      if (missing.length === 0 && extra.length === 0) {
        report.proofs.identicalToPds[claim.kind] += 1
      } else {
        report.proofs.identicalToPds.differing += 1
        if (extra.length) note(`node getRecord: proof with ${extra.length} blocks more than the PDS's (${where})`)
      }
      // A block of the reference proof that the node leaves out.
      check(
        `getRecord ${claim.kind}`,
        'node',
        missing.length ? `the proof lacks ${missing.length} blocks of the PDS's proof (e.g. ${missing[0]})` : null,
        `${where}, same blocks as the PDS`,
      )
    }
  })
}

async function blocks(acct, pdsRepo) {
  // Some record CIDs, the commit and (if known) an MST node.
  const wanted = sample(acct.present, 6).map((r) => r.cid)
  wanted.push(acct.commit.cid)
  if (pdsRepo) wanted.push(pdsRepo.commit.cid.toString())
  const unique = [...new Set(wanted)]
  const missingCid = (await cidForCbor(new TextEncoder().encode(`\x63not${acct.did}`))).toString()
  for (const server of SERVERS) {
    const where = `${acct.did}, ${unique.length} CIDs`
    const res = await call(server, 'getBlocks', { did: acct.did, cids: unique })
    if (!res.ok) {
      check('getBlocks', server, res.text, where)
    } else {
      let problem
      try {
        const car = await carBlocks(asBytes(res.data) ?? new Uint8Array())
        problem = compareSets('blocks', car.cids, new Set(unique))
      } catch (e) {
        problem = `not a valid CAR: ${describeError(e)}`
      }
      check('getBlocks', server, problem, where)
    }
    const miss = await call(server, 'getBlocks', { did: acct.did, cids: [unique[0], missingCid] })
    checkError('getBlocks missing', server, miss, 'BlockNotFound', `${acct.did}, ${missingCid}`, 'InvalidRequest')
  }
}

async function blobs(acct) {
  const bytesOf = {}
  for (const blob of acct.blobs) {
    const where = `${acct.did} ${blob.cid} (${blob.mimeType})`
    for (const server of SERVERS) {
      const res = await call(server, 'getBlob', { did: acct.did, cid: blob.cid })
      if (!res.ok) {
        check('getBlob', server, res.text, where)
        continue
      }
      const bytes = asBytes(res.data)
      const problems = []
      if (!bytes) {
        problems.push(`not bytes: ${typeof res.data}`)
      } else {
        bytesOf[server] = bytes
        if (bytes.length !== blob.size) problems.push(`${bytes.length} bytes, expected ${blob.size}`)
        const cid = (await cidForRawBytes(bytes)).toString()
        if (cid !== blob.cid) problems.push(`the bytes hash to ${cid}`)
      }
      const type = res.headers['content-type']
      if (type !== blob.mimeType) problems.push(`content-type ${type}, expected ${blob.mimeType}`)
      check('getBlob', server, problems.length ? problems.join('; ') : null, where)
    }
    if (bytesOf.pds && bytesOf.node) {
      check(
        'getBlob',
        'node',
        Buffer.from(bytesOf.pds).equals(Buffer.from(bytesOf.node)) ? null : 'bytes differ from the PDS\'s',
        `${where}, same bytes as the PDS`,
      )
    }
  }
  const missing = (await cidForRawBytes(new TextEncoder().encode(`no such blob ${acct.did}`))).toString()
  for (const server of SERVERS) {
    const res = await call(server, 'getBlob', { did: acct.did, cid: missing })
    checkError('getBlob missing', server, res, 'BlobNotFound', `${acct.did}, ${missing}`, 'InvalidRequest')
  }
}

/** Every page of listBlobs → {cids, pages} or {error}. */
async function allBlobs(server, did, since, limit) {
  const cids = []
  let cursor
  let pages = 0
  for (;;) {
    const res = await call(server, 'listBlobs', { did, limit, cursor, since })
    if (!res.ok) return { error: res.text }
    pages += 1
    cids.push(...res.data.cids)
    if (!res.data.cursor || res.data.cids.length === 0) break
    if (res.data.cursor === cursor) return { error: `the cursor ${cursor} does not move` }
    cursor = res.data.cursor
    if (pages > 1000) return { error: 'more than 1000 pages' }
  }
  return { cids, pages }
}

async function listBlobs(acct) {
  for (const [label, since, expected] of [
    ['listBlobs', undefined, acct.blobs.map((b) => b.cid)],
    ['listBlobs since', acct.sinceRev, acct.blobsSince],
  ]) {
    const got = {}
    for (const server of SERVERS) {
      const where = since ? `${acct.did} since ${since}` : acct.did
      const res = await allBlobs(server, acct.did, since, 1)
      if (res.error) {
        check(label, server, res.error, where)
        continue
      }
      const set = new Set(res.cids)
      got[server] = set
      const problems = []
      if (set.size !== res.cids.length) problems.push(`${res.cids.length - set.size} listed twice`)
      const diff = compareSets('blobs', set, new Set(expected))
      if (diff) problems.push(diff)
      if (expected.length > 1 && res.pages < 2) problems.push(`limit 1 but ${res.cids.length} blobs in ${res.pages} page`)
      check(label, server, problems.length ? problems.join('; ') : null, where)
    }
    if (got.pds && got.node) {
      check(label, 'node', compareSets('blobs compared with the PDS', got.node, got.pds), `${acct.did}, same as the PDS`)
    }
  }
}

async function repoStatus(acct) {
  const got = {}
  for (const server of SERVERS) {
    const res = await call(server, 'getRepoStatus', { did: acct.did })
    if (!res.ok) {
      check('getRepoStatus', server, res.text, acct.did)
      continue
    }
    got[server] = res.data
    const { did, active, status, rev } = res.data
    const problems = []
    if (did !== acct.did) problems.push(`did ${did}`)
    if (active !== true) problems.push(`active ${active}`)
    if (status !== undefined) problems.push(`status ${status} for an active repo`)
    if (rev !== acct.commit.rev) problems.push(`rev ${rev}, expected ${acct.commit.rev}`)
    check('getRepoStatus', server, problems.length ? problems.join('; ') : null, acct.did)
  }
  if (got.pds && got.node) {
    const same = canonical(got.pds) === canonical(got.node)
    check(
      'getRepoStatus',
      'node',
      same ? null : `${canonical(got.node)}, the PDS says ${canonical(got.pds)}`,
      `${acct.did}, same as the PDS`,
    )
  }
}

// ---- whole server -----------------------------------------------------------------------------

/** listRepos pages (with `limit`) until every DID in `want` is seen (or the end). */
async function listRepos(server, want, limit) {
  const repos = []
  const seen = new Set()
  let cursor
  let pages = 0
  for (;;) {
    const res = await call(server, 'listRepos', { limit, cursor })
    if (!res.ok) return { error: res.text }
    pages += 1
    for (const r of res.data.repos) {
      if (seen.has(r.did)) return { error: `${r.did} listed twice` }
      seen.add(r.did)
      repos.push(r)
    }
    if (!res.data.cursor || res.data.repos.length === 0) break
    if (server === 'pds' && want.every((d) => seen.has(d))) break
    if (res.data.cursor === cursor) return { error: `the cursor ${cursor} does not move` }
    cursor = res.data.cursor
    if (pages > 10000) return { error: 'more than 10000 pages' }
  }
  return { repos, pages }
}

async function repos() {
  const dids = input.accounts.map((a) => a.did)
  const got = {}
  for (const [server, limit] of [
    ['pds', 100],
    ['node', 1],
  ]) {
    const res = await listRepos(server, dids, limit)
    if (res.error) {
      check('listRepos', server, res.error)
      continue
    }
    got[server] = new Map(res.repos.map((r) => [r.did, r]))
    for (const acct of input.accounts) {
      const r = got[server].get(acct.did)
      const problems = []
      if (!r) {
        problems.push('not listed')
      } else {
        if (r.head !== acct.commit.cid) problems.push(`head ${r.head}, expected ${acct.commit.cid}`)
        if (r.rev !== acct.commit.rev) problems.push(`rev ${r.rev}, expected ${acct.commit.rev}`)
        if (r.active !== true) problems.push(`active ${r.active}`)
        if (r.status !== undefined) problems.push(`status ${r.status} for an active repo`)
      }
      check('listRepos', server, problems.length ? problems.join('; ') : null, acct.did)
    }
    if (server === 'node') {
      const extra = res.repos.filter((r) => !dids.includes(r.did))
      check(
        'listRepos',
        server,
        extra.length ? `lists ${extra.length} repos it was not given (e.g. ${extra[0].did})` : null,
        'only the accounts it holds',
      )
      check(
        'listRepos',
        server,
        dids.length > 1 && res.pages < dids.length ? `limit 1 but ${res.repos.length} repos in ${res.pages} pages` : null,
        'pagination with limit 1',
      )
    }
  }
  if (got.pds && got.node) {
    for (const did of dids) {
      const [p, n] = [got.pds.get(did), got.node.get(did)]
      if (!p || !n) continue
      const same = canonical(p) === canonical(n)
      check('listRepos', 'node', same ? null : `${canonical(n)}, the PDS says ${canonical(p)}`, `${did}, same as the PDS`)
    }
  }
}

async function unknownRepo() {
  const did = input.unknownDid
  const acct = input.accounts[0]
  const blob = acct.blobs[0]?.cid
  const cases = [
    ['getRepo', { did }],
    ['getLatestCommit', { did }],
    ['getRepoStatus', { did }],
    ['getRecord', { did, collection: acct.present[0].collection, rkey: acct.present[0].rkey }],
    ['listBlobs', { did }],
    ['getBlocks', { did, cids: [acct.commit.cid] }],
  ]
  if (blob) cases.push(['getBlob', { did, cid: blob }])
  for (const [method, params] of cases) {
    for (const server of SERVERS) {
      const res = await call(server, method, params)
      checkError(`${method} unknown DID`, server, res, 'RepoNotFound', did)
    }
  }
}

// ---- run --------------------------------------------------------------------------------------

try {
  await repos()
  await unknownRepo()
  for (const acct of input.accounts) {
    const size = { did: acct.did, full: {}, since: {} }
    report.sizes.push(size)
    await latestCommit(acct)
    const pdsRepo = await fullRepo(acct, size)
    await sinceRepo(acct, size)
    await repoStatus(acct)
    await records(acct)
    await blocks(acct, pdsRepo)
    await blobs(acct)
    await listBlobs(acct)
  }
} catch (e) {
  report.mismatches.push(`the conformance script failed: ${e?.stack ?? e}`)
}
// Which endpoint checks passed (every time) and which failed (at least once), per server.
report.summary = {}
for (const server of SERVERS) {
  const entries = Object.entries(report.checks)
  report.summary[server] = {
    passed: entries.filter(([, c]) => c[server].failed === 0 && c[server].passed > 0).map(([e]) => e),
    failed: entries.filter(([, c]) => c[server].failed > 0).map(([e]) => e),
  }
}
report.durationMs = Date.now() - started
process.stdout.write(`${JSON.stringify(report, null, 1)}\n`)

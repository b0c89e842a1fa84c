// Validates the project's Lexicon files, and records against them, with the reference
// implementation (@atproto/lexicon).
//
// Usage: node validate-lexicons.mjs [--lexicons DIR] [FILE ...]
//
// Loads every *.json under DIR (default: the repository's lexicons/, skipping examples/),
// checks that each is a valid Lexicon document and that every ref resolves, then validates
// each record in FILE (a file holds one record, or a JSON array of records) against the
// lexicon its $type names. Prints one JSON document:
//   {"ok": bool,
//    "lexicons": [{"file", "id", "valid", "error"?}],
//    "records":  [{"file", "index", "type", "valid", "error"?, "cid"?}]}
// "cid" is the record's CID as a repo would store it (from @atproto/repo, a dependency of
// @atproto/pds), so the engine's own CID computation can be checked against it.
// Exit status: 0 when everything is valid, 1 when something is not, 2 on a usage error.

import { readFileSync, readdirSync, statSync } from 'node:fs'
import { dirname, join, relative, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'
import { Lexicons, jsonToLex, parseLexiconDoc } from '@atproto/lexicon'

// Optional: present whenever @atproto/pds is installed.
const cidForRecord = await import('@atproto/repo').then((m) => m.cidForRecord).catch(() => null)

const here = dirname(fileURLToPath(import.meta.url))
const root = resolve(here, '..', '..')

// com.atproto.repo.strongRef, which the org.p2pds records reference (as published by atproto).
const STRONG_REF = {
  lexicon: 1,
  id: 'com.atproto.repo.strongRef',
  description: 'A URI with a content-hash fingerprint.',
  defs: {
    main: {
      type: 'object',
      required: ['uri', 'cid'],
      properties: {
        uri: { type: 'string', format: 'at-uri' },
        cid: { type: 'string', format: 'cid' },
      },
    },
  },
}

function usage(message) {
  process.stderr.write(`${message}\nusage: node validate-lexicons.mjs [--lexicons DIR] [FILE ...]\n`)
  process.exit(2)
}

let lexiconDir = join(root, 'lexicons')
const files = []
const args = process.argv.slice(2)
for (let i = 0; i < args.length; i++) {
  if (args[i] === '--lexicons') {
    if (i + 1 >= args.length) usage('--lexicons needs a directory')
    lexiconDir = resolve(args[++i])
  } else if (args[i].startsWith('--')) {
    usage(`unknown option ${args[i]}`)
  } else {
    files.push(resolve(args[i]))
  }
}

function lexiconFiles(dir) {
  const out = []
  for (const name of readdirSync(dir).sort()) {
    const path = join(dir, name)
    if (statSync(path).isDirectory()) {
      if (name !== 'examples') out.push(...lexiconFiles(path))
    } else if (name.endsWith('.json')) {
      out.push(path)
    }
  }
  return out
}

// Every ref in a (resolved) lexicon document.
function refsOf(node, out = []) {
  if (Array.isArray(node)) {
    for (const item of node) refsOf(item, out)
  } else if (node && typeof node === 'object') {
    if (node.type === 'ref' && typeof node.ref === 'string') out.push(node.ref)
    if (node.type === 'union' && Array.isArray(node.refs)) out.push(...node.refs)
    for (const value of Object.values(node)) refsOf(value, out)
  }
  return out
}

const message = (err) => (err instanceof Error ? err.message : String(err))
const show = (path) => relative(process.cwd(), path) || path

const report = { ok: true, lexicons: [], records: [] }
const lex = new Lexicons([STRONG_REF])
const loaded = []
for (const file of lexiconFiles(lexiconDir)) {
  const entry = { file: show(file), id: null, valid: false }
  try {
    const doc = JSON.parse(readFileSync(file, 'utf8'))
    entry.id = doc.id ?? null
    parseLexiconDoc(doc)
    const expected = relative(lexiconDir, file).replace(/\.json$/, '').split(/[\\/]/).join('.')
    if (doc.id !== expected) throw new Error(`id ${doc.id} does not match the file's path (expected ${expected})`)
    lex.add(doc)
    loaded.push({ entry, doc })
    entry.valid = true
  } catch (err) {
    entry.error = message(err)
  }
  report.lexicons.push(entry)
}
for (const { entry, doc } of loaded) {
  const missing = refsOf(doc.defs).filter((ref) => !lex.getDef(ref))
  if (missing.length > 0) {
    entry.valid = false
    entry.error = `unresolved refs: ${[...new Set(missing)].join(', ')}`
  }
}

for (const file of files) {
  let records
  try {
    const parsed = JSON.parse(readFileSync(file, 'utf8'))
    records = Array.isArray(parsed) ? parsed : [parsed]
  } catch (err) {
    report.records.push({ file: show(file), index: 0, type: null, valid: false, error: message(err) })
    continue
  }
  for (const [index, record] of records.entries()) {
    const type = record && typeof record === 'object' ? (record.$type ?? null) : null
    const entry = { file: show(file), index, type, valid: false }
    if (cidForRecord && record && typeof record === 'object') {
      try {
        entry.cid = (await cidForRecord(jsonToLex(record))).toString()
      } catch {
        // Not encodable (e.g. has floats): no CID, the validation below says why.
      }
    }
    try {
      if (typeof type !== 'string') throw new Error('the record has no $type')
      if (!lex.getDef(type)) throw new Error(`no lexicon for $type ${type}`)
      lex.assertValidRecord(type, record)
      entry.valid = true
    } catch (err) {
      entry.error = message(err)
    }
    report.records.push(entry)
  }
}

report.ok = report.lexicons.every((l) => l.valid) && report.records.every((r) => r.valid)
process.stdout.write(`${JSON.stringify(report, null, 2)}\n`)
process.exit(report.ok ? 0 : 1)

#!/usr/bin/env node
// One client of the published JavaScript SDK (@proj-airi/server-sdk 0.8.4, the April protocol)
// that a Python test drives line by line, for the mixed-generation tests (tests/test_head_mixed.py).
//
//   AIRI_JS_SDK_DIR=<dir with node_modules/@proj-airi/server-sdk> [AIRI_HUB_TOKEN=<token>] \
//   node sdk084_peer.mjs <ws://127.0.0.1:PORT/ws> <module name> <identity JSON | "default">
//
// stdout, one JSON object a line: {"step":"sdk",version}, then {"step":"recv","event":...} for
// every event the SDK hands to onAnyMessage (Dates as ISO strings), {"step":"sent","event":...}
// for every event it sends, {"step":"sdk-error","message":...}; {"step":"bye"} at the end.
// stdin, one JSON command a line: {"cmd":"send","event":{type,data,route?}} or {"cmd":"close"}.
// Gives up by itself after AIRI_PEER_TIMEOUT_MS (default 20000, exit 2).

import { createRequire } from 'node:module'
import { existsSync, readFileSync } from 'node:fs'
import path from 'node:path'
import { createInterface } from 'node:readline'
import { pathToFileURL } from 'node:url'

const TOTAL_MS = Number(process.env.AIRI_PEER_TIMEOUT_MS || 20000)
const out = obj => process.stdout.write(`${JSON.stringify(obj, (k, v) => (v === undefined ? null : v))}\n`)

let exiting = false
function exit(code, line) {
  if (exiting)
    return
  exiting = true
  process.stdout.write(`${JSON.stringify(line)}\n`, () => process.exit(code))
  setTimeout(() => process.exit(code), 1000).unref()
}

const [url, name, identityArg] = process.argv.slice(2)
if (!url || !/^wss?:\/\//.test(url) || !name || !identityArg) {
  process.stderr.write('usage: node sdk084_peer.mjs <ws://host:port/ws> <name> <identity JSON|default>\n')
  process.exit(64)
}
setTimeout(() => exit(2, { step: 'fail', error: `did not finish within ${TOTAL_MS} ms` }), TOTAL_MS).unref()

async function importSdk() {
  const base = process.env.AIRI_JS_SDK_DIR
  if (!base)
    throw new Error('AIRI_JS_SDK_DIR is not set')
  const pkg = path.resolve(base, 'node_modules', '@proj-airi', 'server-sdk')
  if (!existsSync(path.join(pkg, 'package.json')))
    throw new Error(`no @proj-airi/server-sdk under ${path.resolve(base)}`)
  let entry
  try {
    entry = createRequire(path.resolve(base, 'package.json')).resolve('@proj-airi/server-sdk')
  }
  catch {
    entry = path.join(pkg, 'dist', 'index.mjs')
  }
  const mod = await import(pathToFileURL(entry).href)
  return { Client: mod.Client, version: JSON.parse(readFileSync(path.join(pkg, 'package.json'), 'utf8')).version }
}

async function main() {
  const { Client, version } = await importSdk()
  out({ step: 'sdk', version })
  const token = process.env.AIRI_HUB_TOKEN || ''
  const client = new Client({
    name,
    url,
    ...(token ? { token } : {}),
    ...(identityArg === 'default' ? {} : { identity: JSON.parse(identityArg) }),
    possibleEvents: ['mixed:hello', 'mixed:routed'],
    autoReconnect: false,
    onAnyMessage: event => out({ step: 'recv', event }),
    onAnySend: event => out({ step: 'sent', event }),
    onError: err => out({ step: 'sdk-error', message: String(err?.message ?? err?.type ?? err) }),
  })
  out({ step: 'identity', identity: client.identity })
  const rl = createInterface({ input: process.stdin })
  rl.on('line', (line) => {
    let cmd
    try {
      cmd = JSON.parse(line)
    }
    catch {
      exit(1, { step: 'fail', error: `bad command ${line}` })
      return
    }
    if (cmd.cmd === 'send') {
      client.send(cmd.event)
      out({ step: 'ack', n: cmd.n })
    }
    else if (cmd.cmd === 'close') {
      client.close()
      setTimeout(() => exit(0, { step: 'bye' }), 100)
    }
  })
  rl.on('close', () => {
    client.close()
    setTimeout(() => exit(0, { step: 'bye' }), 100)
  })
}

main().catch(err => exit(1, { step: 'fail', error: String(err?.stack ?? err) }))

#!/usr/bin/env node
// The published JavaScript SDK (@proj-airi/server-sdk) talking to a Python module
// (airi_core.client) through an AIRI hub, in both directions.
//
//   AIRI_JS_SDK_DIR=<dir with node_modules/@proj-airi/server-sdk> [AIRI_HUB_TOKEN=<token>] \
//   node sdk_pingpong.mjs <ws://127.0.0.1:PORT/ws> <python module name>
//
// The Python module must already be announced; it answers interop:js-hello with
// interop:py-reply, then sends interop:py-hello (answered here with interop:js-reply), and it
// consumes input:text (chat-ingestion) answering output:text with the text reversed.
//
// Prints one JSON object per line ({"step": ...}); the last is {"step":"done"} (exit 0) or
// {"step":"fail","error":...} (exit 1). Gives up by itself after AIRI_PINGPONG_TIMEOUT_MS.

import { createRequire } from 'node:module'
import { existsSync, readFileSync } from 'node:fs'
import path from 'node:path'
import { isDeepStrictEqual } from 'node:util'
import { pathToFileURL } from 'node:url'

const TOTAL_MS = Number(process.env.AIRI_PINGPONG_TIMEOUT_MS || 20000)
const WAIT_MS = 5000

const out = obj => process.stdout.write(`${JSON.stringify(obj)}\n`)
class Failure extends Error {}
const ensure = (ok, message) => {
  if (!ok)
    throw new Failure(message)
}

let exiting = false
function exit(code, line) {
  if (exiting)
    return
  exiting = true
  if (code !== 0)
    process.stderr.write(`sdk_pingpong: ${line.error}\n`)
  process.stdout.write(`${JSON.stringify(line)}\n`, () => process.exit(code))
  setTimeout(() => process.exit(code), 1000).unref()
}

const [url, pyName] = process.argv.slice(2)
if (!url || !/^wss?:\/\//.test(url) || !pyName) {
  process.stderr.write('usage: node sdk_pingpong.mjs <ws://host:port/ws> <python module name>\n')
  process.exit(64)
}
const token = process.env.AIRI_HUB_TOKEN || ''
setTimeout(() => exit(2, { step: 'fail', error: `did not finish within ${TOTAL_MS} ms` }), TOTAL_MS).unref()

async function importSdk() {
  const base = process.env.AIRI_JS_SDK_DIR
  ensure(base, 'AIRI_JS_SDK_DIR is not set')
  const pkg = path.resolve(base, 'node_modules', '@proj-airi', 'server-sdk')
  ensure(existsSync(path.join(pkg, 'package.json')), `no @proj-airi/server-sdk under ${path.resolve(base)}`)
  let entry
  try {
    entry = createRequire(path.resolve(base, 'package.json')).resolve('@proj-airi/server-sdk')
  }
  catch {
    entry = path.join(pkg, 'dist', 'index.mjs')
  }
  const mod = await import(pathToFileURL(entry).href)
  ensure(typeof mod.Client === 'function', 'the SDK exports no Client')
  return { Client: mod.Client, version: JSON.parse(readFileSync(path.join(pkg, 'package.json'), 'utf8')).version }
}

// -- an SDK client that remembers what it received ------------------------------------------
const inbox = []
const listeners = new Set()
let failWith = null
const failed = new Promise((_, reject) => {
  failWith = reject
})
failed.catch(() => {})

function next(pred, what) {
  const hit = inbox.find(pred)
  if (hit)
    return Promise.resolve(hit)
  let listener
  let timer
  return Promise.race([
    new Promise((resolve) => {
      listener = (ev) => {
        if (pred(ev))
          resolve(ev)
      }
      listeners.add(listener)
    }),
    new Promise((_, reject) => {
      timer = setTimeout(() => reject(new Failure(`timed out after ${WAIT_MS} ms waiting for ${what}`)), WAIT_MS)
    }),
    failed,
  ]).finally(() => {
    listeners.delete(listener)
    clearTimeout(timer)
  })
}

const idOf = ev => ev?.metadata?.event?.id
const parentOf = ev => ev?.metadata?.event?.parentId

async function main() {
  const { Client, version } = await importSdk()
  out({ step: 'sdk', version })
  const name = 'js-pingpong'
  const identity = { id: `${name}-${Math.random().toString(36).slice(2, 8)}`, kind: 'plugin', plugin: { id: 'js-pingpong-plugin' } }
  const sent = []
  const client = new Client({
    name,
    url,
    ...(token ? { token } : {}),
    identity,
    possibleEvents: ['interop:js-hello', 'interop:js-reply', 'input:text'],
    autoReconnect: false,
    onAnySend: ev => sent.push(ev),
    onAnyMessage: (ev) => {
      inbox.push(ev)
      if (ev?.type === 'error')
        failWith(new Failure(`the hub sent an error: ${ev?.data?.message}`))
      for (const l of [...listeners]) l(ev)
    },
    onError: err => failWith(new Failure(`SDK error: ${err?.message ?? String(err)}`)),
  })

  // both modules registered
  const sync = await next(ev => ev?.type === 'registry:modules:sync'
    && [name, pyName].every(n => (ev.data?.modules ?? []).some(m => m?.name === n)), `a registry sync listing ${name} and ${pyName}`)
  out({ step: 'registry', modules: sync.data.modules.map(m => m.name) })

  // JS -> Python, and Python's reply (a Date goes through superjson: the hub forwards the frame as written)
  const hello = {
    text: 'héllo from JS 💛',
    n: 42,
    f: 0.25,
    ok: true,
    nothing: null,
    list: [1, 'two', { three: 3 }],
    when: new Date('2024-05-06T07:08:09.010Z'),
  }
  const before = sent.length
  client.send({ type: 'interop:js-hello', data: hello, route: { destinations: [`module:${pyName}`] } })
  ensure(sent.length === before + 1, 'the SDK did not send interop:js-hello (not connected?)')
  const helloId = idOf(sent[before])
  out({ step: 'sent', type: 'interop:js-hello', id: helloId, identity })
  const reply = await next(ev => ev?.type === 'interop:py-reply' && parentOf(ev) === helloId, 'interop:py-reply')
  out({ step: 'received', type: reply.type, data: reply.data, parentId: parentOf(reply), source: reply.metadata?.source, route: reply.route })

  // Python -> JS, and the JS reply
  const pyHello = await next(ev => ev?.type === 'interop:py-hello', 'interop:py-hello')
  out({ step: 'received', type: pyHello.type, data: pyHello.data, id: idOf(pyHello), source: pyHello.metadata?.source, route: pyHello.route })
  client.send({
    type: 'interop:js-reply',
    data: { echo: pyHello.data, from: 'js' },
    metadata: { event: { parentId: idOf(pyHello) } },
    route: { destinations: [`module:${pyName}`] },
  })
  out({ step: 'sent', type: 'interop:js-reply', id: idOf(sent[sent.length - 1]) })

  // input:text goes to the Python consumer (protocol default delivery), which answers output:text
  const at = sent.length
  client.send({ type: 'input:text', data: { text: 'stressed' } })
  const textId = idOf(sent[at])
  const output = await next(ev => ev?.type === 'output:text' && parentOf(ev) === textId, 'output:text')
  out({ step: 'received', type: output.type, data: output.data, parentId: parentOf(output), route: output.route })

  ensure(!inbox.some(ev => ev?.type === 'interop:js-hello' || ev?.type === 'input:text'), 'the hub echoed our own event back')
  client.close()
  exit(0, { step: 'done', ok: true })
}

main().catch(err => exit(1, { step: 'fail', error: err instanceof Failure ? err.message : (err?.stack ?? String(err)) }))

#!/usr/bin/env node
// Drives the published JavaScript SDK (@proj-airi/server-sdk) against a running AIRI hub.
//
//   AIRI_JS_SDK_DIR=<dir with node_modules/@proj-airi/server-sdk> \
//   AIRI_HUB_TOKEN=<token> node sdk_driver.mjs <scenario> <ws://127.0.0.1:PORT/ws> [--pause]
//
// Scenarios:
//   token     two clients authenticate with AIRI_HUB_TOKEN, announce, see each other in the
//             registry, exchange an event, then A closes and B sees it de-announced.
//   no-token  the same against a hub without a token; the SDK announces twice per connection
//             (once on open, once on module:authenticated) and the hub must not de-announce it.
//
// Output: one JSON object per line on stdout, each with a "step" key; the last line is
// {"step":"done",...} (exit 0) or {"step":"fail","error":...} (exit 1; exit 2 on the global
// timeout). With --pause, after each {"step":"checkpoint"} line the driver waits (bounded) for
// one line on stdin before going on, so a test can inspect the hub at that point.

import { createRequire } from 'node:module'
import { existsSync, readFileSync } from 'node:fs'
import path from 'node:path'
import { createInterface } from 'node:readline'
import { isDeepStrictEqual } from 'node:util'
import { pathToFileURL } from 'node:url'

const GLOBAL_TIMEOUT_MS = Number(process.env.AIRI_DRIVER_TIMEOUT_MS || 20000)
const STEP_TIMEOUT_MS = 5000
const SETTLE_MS = 400
const SCENARIOS = ['token', 'no-token']

function emit(step, fields = {}) {
  process.stdout.write(`${JSON.stringify({ step, ...fields })}\n`)
}

let finished = false
function finish(code, fields) {
  if (finished)
    return
  finished = true
  const line = `${JSON.stringify(fields)}\n`
  if (code !== 0)
    process.stderr.write(`sdk_driver: ${fields.error}\n`)
  process.stdout.write(line, () => process.exit(code))
  // never hang on a stuck stdout either
  setTimeout(() => process.exit(code), 1000).unref()
}

class DriverError extends Error {}
function check(cond, message) {
  if (!cond)
    throw new DriverError(message)
}

// -- arguments --------------------------------------------------------------------------------
const args = process.argv.slice(2)
const pause = args.includes('--pause')
const positional = args.filter(a => !a.startsWith('--'))
const [scenario, hubUrl] = positional
if (!SCENARIOS.includes(scenario) || !hubUrl || !/^wss?:\/\//.test(hubUrl)) {
  process.stderr.write(`usage: node sdk_driver.mjs <${SCENARIOS.join('|')}> <ws://host:port/ws> [--pause]\n`)
  process.exit(64)
}
const token = process.env.AIRI_HUB_TOKEN || ''
if (scenario === 'token' && !token) {
  process.stderr.write('sdk_driver: scenario "token" needs AIRI_HUB_TOKEN\n')
  process.exit(64)
}

const globalTimer = setTimeout(() => {
  finish(2, { step: 'fail', scenario, error: `global timeout: scenario "${scenario}" did not finish within ${GLOBAL_TIMEOUT_MS} ms` })
}, GLOBAL_TIMEOUT_MS)

// -- loading the SDK --------------------------------------------------------------------------
async function loadSdk() {
  const dir = process.env.AIRI_JS_SDK_DIR
  check(dir, 'AIRI_JS_SDK_DIR is not set (it must name a directory holding node_modules/@proj-airi/server-sdk)')
  const pkgDir = path.resolve(dir, 'node_modules', '@proj-airi', 'server-sdk')
  check(existsSync(path.join(pkgDir, 'package.json')), `@proj-airi/server-sdk is not installed under ${path.resolve(dir)}/node_modules`)
  let entry
  try {
    // resolve the way a project in AIRI_JS_SDK_DIR would (honours the package's "exports")
    entry = createRequire(path.resolve(dir, 'package.json')).resolve('@proj-airi/server-sdk')
  }
  catch {
    entry = path.join(pkgDir, 'dist', 'index.mjs')
  }
  const version = JSON.parse(readFileSync(path.join(pkgDir, 'package.json'), 'utf8')).version
  const sdk = await import(pathToFileURL(entry).href)
  check(typeof sdk.Client === 'function', `${entry} does not export a Client class`)
  return { Client: sdk.Client, version, entry }
}

// -- stdin checkpoints ------------------------------------------------------------------------
const stdinLines = []
const stdinWaiters = []
if (pause) {
  const rl = createInterface({ input: process.stdin })
  rl.on('line', (line) => {
    const w = stdinWaiters.shift()
    if (w)
      w(line)
    else stdinLines.push(line)
  })
}

async function checkpoint(name, fields = {}) {
  emit('checkpoint', { name, ...fields })
  if (!pause)
    return
  const line = stdinLines.length
    ? stdinLines.shift()
    : await bounded(new Promise(resolve => stdinWaiters.push(resolve)), STEP_TIMEOUT_MS, `an acknowledgement on stdin for checkpoint "${name}"`)
  check(line.trim() === 'ok', `checkpoint "${name}" was refused by the test: ${line.trim()}`)
}

// -- clients ----------------------------------------------------------------------------------
let fatal
const fatalPromise = new Promise((_, reject) => {
  fatal = reject
})
fatalPromise.catch(() => {})

function bounded(promise, ms, what) {
  let timer
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new DriverError(`timed out after ${ms} ms waiting for ${what}`)), ms)
  })
  return Promise.race([promise, timeout, fatalPromise]).finally(() => clearTimeout(timer))
}

const sleep = ms => new Promise(resolve => setTimeout(resolve, ms))

/** One SDK client plus everything it received and sent. */
class Tracked {
  constructor(Client, label, name, identity, withToken) {
    this.label = label
    this.name = name
    this.identity = identity
    this.received = []
    this.sent = []
    this.waiters = new Set()
    this.expectClose = false
    this.client = new Client({
      name,
      url: hubUrl,
      ...(withToken ? { token } : {}),
      identity,
      possibleEvents: ['interop:hello', 'interop:reply'],
      autoReconnect: false,
      onAnyMessage: event => this.onMessage(event),
      onAnySend: event => this.sent.push(event),
      onError: (err) => {
        const message = err?.message ?? err?.error?.message ?? String(err?.type ?? err)
        fatal(new DriverError(`client ${label}: SDK reported an error: ${message}`))
      },
      onClose: () => {
        emit('connection-lost', { client: label, expected: this.expectClose })
        if (!this.expectClose)
          fatal(new DriverError(`client ${label}: the hub closed the connection unexpectedly`))
      },
    })
  }

  onMessage(event) {
    this.received.push(event)
    const summary = { client: this.label, type: event?.type }
    if (event?.type === 'error' || event?.type?.startsWith('module:') || event?.type?.startsWith('registry:'))
      summary.data = event.data
    emit('recv', summary)
    if (event?.type === 'error')
      fatal(new DriverError(`client ${this.label}: hub sent error "${event?.data?.message}"`))
    for (const w of [...this.waiters]) w()
  }

  /** The first received event from index `from` satisfying `pred`, waiting at most STEP_TIMEOUT_MS. */
  waitFor(pred, what, from = 0) {
    const find = () => this.received.slice(from).find(pred)
    const found = find()
    if (found)
      return Promise.resolve(found)
    let waiter
    const p = new Promise((resolve) => {
      waiter = () => {
        const hit = find()
        if (hit)
          resolve(hit)
      }
      this.waiters.add(waiter)
    })
    return bounded(p, STEP_TIMEOUT_MS, `client ${this.label}: ${what}`).finally(() => this.waiters.delete(waiter))
  }

  async waitSent(pred, count, what) {
    const deadline = Date.now() + STEP_TIMEOUT_MS
    while (this.sent.filter(pred).length < count) {
      check(Date.now() < deadline, `client ${this.label}: timed out waiting for the SDK to send ${what}`)
      await bounded(sleep(20), STEP_TIMEOUT_MS, what)
    }
    return this.sent.filter(pred)
  }

  mark() {
    return this.received.length
  }

  since(from, type) {
    return this.received.slice(from).filter(e => e?.type === type)
  }

  socketClosed() {
    return this.client.websocket?.readyState === 3 // CLOSED
  }

  close() {
    this.expectClose = true
    this.client.close()
  }
}

const parentOf = e => e?.metadata?.event?.parentId
const idOf = e => e?.metadata?.event?.id
const names = sync => (sync?.data?.modules ?? []).map(m => m?.name)
const listsExactly = (want) => (e) => {
  if (e?.type !== 'registry:modules:sync')
    return false
  const got = names(e)
  return got.length === want.length && want.every(n => got.filter(x => x === n).length === 1)
}

function checkServerSource(event, what) {
  const src = event?.metadata?.source
  check(src?.kind === 'plugin' && src?.plugin?.id === 'proj-airi:server-runtime' && typeof src?.id === 'string',
    `${what}: metadata.source is not the server's identity: ${JSON.stringify(src)}`)
  check(typeof idOf(event) === 'string' && idOf(event).length > 0, `${what}: no metadata.event.id`)
}

function checkEntry(entry, who, what) {
  check(entry?.name === who.name, `${what}: name ${JSON.stringify(entry?.name)} != ${JSON.stringify(who.name)}`)
  check(isDeepStrictEqual(entry?.identity, who.identity),
    `${what}: identity ${JSON.stringify(entry?.identity)} != ${JSON.stringify(who.identity)}`)
  check(!('index' in entry), `${what}: unexpected index ${JSON.stringify(entry?.index)} (the SDK announces none)`)
}

// -- scenario steps ---------------------------------------------------------------------------
async function connectAndAnnounce(Client, label, withToken) {
  const suffix = Math.random().toString(36).slice(2, 8)
  const name = `interop-${label.toLowerCase()}`
  const identity = { id: `${name}-${suffix}`, kind: 'plugin', plugin: { id: `interop-plugin-${label.toLowerCase()}` } }
  const t = new Tracked(Client, label, name, identity, withToken)

  // the SDK pings as soon as it is open: the hub answers before authentication
  const [ping] = await t.waitSent(e => e.type === 'transport:connection:heartbeat' && e.data?.kind === 'ping', 1, 'a heartbeat ping')
  const pong = await t.waitFor(e => e.type === 'transport:connection:heartbeat' && e.data?.kind === 'pong', 'a heartbeat pong')
  check(parentOf(pong) === idOf(ping), `client ${label}: pong parentId ${parentOf(pong)} != ping id ${idOf(ping)}`)
  check(typeof pong.data.message === 'string' && Number.isFinite(pong.data.at), `client ${label}: malformed pong ${JSON.stringify(pong.data)}`)
  emit('heartbeat', { client: label, message: pong.data.message })

  const authed = await t.waitFor(e => e.type === 'module:authenticated', 'module:authenticated')
  check(authed.data?.authenticated === true, `client ${label}: module:authenticated says ${JSON.stringify(authed.data)}`)
  checkServerSource(authed, `client ${label}: module:authenticated`)
  let authId = null
  if (withToken) {
    const [auth] = await t.waitSent(e => e.type === 'module:authenticate', 1, 'module:authenticate')
    authId = idOf(auth)
    check(parentOf(authed) === authId, `client ${label}: module:authenticated parentId ${parentOf(authed)} != module:authenticate id ${authId}`)
  }
  else {
    check(parentOf(authed) === undefined, `client ${label}: module:authenticated at connect has parentId ${parentOf(authed)}`)
  }
  emit('authenticated', { client: label, withToken, parentId: parentOf(authed) ?? null })

  // the registry sync that follows authentication
  const firstSync = await t.waitFor(e => e.type === 'registry:modules:sync', 'the registry sync after authentication')
  check(t.received.indexOf(firstSync) > t.received.indexOf(authed), `client ${label}: registry sync came before module:authenticated`)
  if (withToken)
    check(parentOf(firstSync) === authId, `client ${label}: post-auth sync parentId ${parentOf(firstSync)} != ${authId}`)

  // announce: with a token once (on module:authenticated), without a token twice (on open and on module:authenticated)
  const announces = await t.waitSent(e => e.type === 'module:announce', withToken ? 1 : 2, 'module:announce')
  for (const a of announces) {
    check(a.data?.name === name && isDeepStrictEqual(a.data?.identity, identity), `client ${label}: SDK announced ${JSON.stringify(a.data)}`)
  }
  const listed = await t.waitFor(e => e.type === 'registry:modules:sync' && names(e).includes(name), `a registry sync listing ${name}`)
  checkServerSource(listed, `client ${label}: registry sync`)
  checkEntry(listed.data.modules.find(m => m.name === name), t, `client ${label}: own registry entry`)
  emit('announced', { client: label, name, identity, announceCount: announces.length, modules: names(listed) })
  return t
}

async function runScenario(Client, withToken) {
  const A = await connectAndAnnounce(Client, 'A', withToken)
  if (!withToken) {
    // both announces must have been handled before B arrives
    await sleep(SETTLE_MS)
    check(A.since(0, 'module:de-announced').length === 0,
      `client A: de-announced after the SDK's double announce: ${JSON.stringify(A.since(0, 'module:de-announced').map(e => e.data))}`)
  }
  const markA = A.mark()
  const B = await connectAndAnnounce(Client, 'B', withToken)

  // A learns about B: module:announced (parentId = B's announce id) and a sync listing both
  const announcedB = await A.waitFor(e => e.type === 'module:announced' && e.data?.name === B.name, `module:announced for ${B.name}`, markA)
  checkEntry(announcedB.data, B, 'client A: module:announced')
  checkServerSource(announcedB, 'client A: module:announced')
  const bAnnounceIds = B.sent.filter(e => e.type === 'module:announce').map(idOf)
  check(bAnnounceIds.includes(parentOf(announcedB)), `client A: module:announced parentId ${parentOf(announcedB)} is none of B's announce ids ${bAnnounceIds}`)
  const syncA = await A.waitFor(listsExactly([A.name, B.name]), 'a registry sync listing exactly A and B', markA)
  const syncB = await B.waitFor(listsExactly([A.name, B.name]), 'a registry sync listing exactly A and B')
  checkEntry(syncB.data.modules.find(m => m.name === A.name), A, 'client B: registry entry of A')
  checkEntry(syncB.data.modules.find(m => m.name === B.name), B, 'client B: registry entry of B')
  emit('registry', { client: 'A', modules: syncA.data.modules })
  emit('registry', { client: 'B', modules: syncB.data.modules })

  await sleep(SETTLE_MS)
  for (const t of [A, B]) {
    const de = t.since(0, 'module:de-announced')
    check(de.length === 0, `client ${t.label}: unexpected module:de-announced ${JSON.stringify(de.map(e => e.data))}`)
  }
  const announcedCount = A.since(markA, 'module:announced').filter(e => e.data?.name === B.name).length
  check(announcedCount === 1, `client A: expected exactly one module:announced for B, got ${announcedCount}`)
  emit('no-de-announce', { announcesSentByA: A.sent.filter(e => e.type === 'module:announce').length, announcesSentByB: B.sent.filter(e => e.type === 'module:announce').length, announcedSeenByA: announcedCount })
  await checkpoint('both-announced', { names: [A.name, B.name], identities: [A.identity, B.identity] })

  // A -> B, data intact (superjson-typed values included: the hub forwards the frame as written)
  const payload = {
    text: 'héllo from A 💛',
    n: 42,
    f: 1.5,
    flag: true,
    nothing: null,
    list: [1, 'two', { three: 3 }],
    nested: { deep: { deeper: ['x'] } },
    when: new Date('2024-05-06T07:08:09.010Z'),
  }
  const markB = B.mark()
  const sentAt = A.sent.length
  A.client.send({ type: 'interop:hello', data: payload })
  check(A.sent.length === sentAt + 1, 'client A: the SDK did not send interop:hello (not connected?)')
  const sent = A.sent[sentAt]
  const got = await B.waitFor(e => e.type === 'interop:hello', 'interop:hello from A', markB)
  check(got.data?.when instanceof Date, `client B: data.when arrived as ${JSON.stringify(got.data?.when)} instead of a Date (superjson meta lost)`)
  check(isDeepStrictEqual(got.data, payload), `client B: data changed in transit: ${JSON.stringify(got.data)} != ${JSON.stringify(payload)}`)
  check(isDeepStrictEqual(got.metadata?.source, A.identity), `client B: metadata.source ${JSON.stringify(got.metadata?.source)} != A's identity`)
  check(idOf(got) === idOf(sent), `client B: event id ${idOf(got)} != sent id ${idOf(sent)}`)
  emit('delivered', { from: 'A', to: 'B', type: got.type, data: { ...got.data, when: got.data.when.toISOString() }, eventId: idOf(got) })

  // and B -> A
  const markA2 = A.mark()
  B.client.send({ type: 'interop:reply', data: { ok: true, inReplyTo: idOf(sent) } })
  const reply = await A.waitFor(e => e.type === 'interop:reply', 'interop:reply from B', markA2)
  check(isDeepStrictEqual(reply.data, { ok: true, inReplyTo: idOf(sent) }), `client A: reply data ${JSON.stringify(reply.data)}`)
  emit('delivered', { from: 'B', to: 'A', type: reply.type, data: reply.data, eventId: idOf(reply) })
  await sleep(SETTLE_MS / 2)
  check(A.since(markA2, 'interop:hello').length === 0, 'client A: received its own interop:hello back')
  check(B.since(markB, 'interop:hello').length === 1, `client B: interop:hello delivered ${B.since(markB, 'interop:hello').length} times`)
  check(B.since(markB, 'interop:reply').length === 0, 'client B: received its own interop:reply back')

  // A closes: B sees A de-announced with reason "connection closed", then a sync without A
  const markB2 = B.mark()
  A.close()
  const de = await B.waitFor(e => e.type === 'module:de-announced', `module:de-announced for ${A.name}`, markB2)
  checkEntry(de.data, A, 'client B: module:de-announced')
  check(de.data.reason === 'connection closed', `client B: de-announce reason ${JSON.stringify(de.data.reason)} != "connection closed"`)
  checkServerSource(de, 'client B: module:de-announced')
  emit('de-announced', { client: 'B', name: de.data.name, identity: de.data.identity, reason: de.data.reason })
  const after = await B.waitFor(listsExactly([B.name]), 'a registry sync listing only B', markB2)
  check(B.received.indexOf(after) > B.received.indexOf(de), 'client B: the sync without A came before module:de-announced')
  emit('registry', { client: 'B', modules: after.data.modules, after: 'A closed' })
  await checkpoint('a-closed', { names: [B.name] })

  const deForB = B.since(markB2, 'module:de-announced')
  check(deForB.length === 1, `client B: expected one module:de-announced, got ${JSON.stringify(deForB.map(e => e.data))}`)
  B.close()
  // the SDK's close() does not call onClose (it clears `connected` first): watch the sockets
  await bounded((async () => {
    while (![A, B].every(t => t.socketClosed()))
      await sleep(20)
  })(), STEP_TIMEOUT_MS, 'both client sockets to close')
  emit('closed', { clients: ['A', 'B'] })
}

async function main() {
  const { Client, version, entry } = await loadSdk()
  emit('sdk', { package: '@proj-airi/server-sdk', version, entry, node: process.version })
  emit('start', { scenario, url: hubUrl, pause })
  await runScenario(Client, scenario === 'token')
  clearTimeout(globalTimer)
  finish(0, { step: 'done', scenario, ok: true })
}

main().catch((err) => {
  const message = err instanceof DriverError ? err.message : (err?.stack ?? String(err))
  finish(1, { step: 'fail', scenario, error: message })
})

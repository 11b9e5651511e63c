// Policy routing rules over rtnetlink (addRoutingRule, removeRoutingRule, routingRules), IPv4 and IPv6, and the typed
// errors of each, checked against `ip rule` (iproute2) as an independent reader of the kernel's state.
// Rules belong to a network namespace and the functions act on the caller's, so every test makes a namespace of its
// own (nested in the runner's private one) and drives the functions from a child process inside it; nothing leaves
// that namespace.
// Address plan of this file: 10.41.0.0 .. 10.49.255.255 and fd41:: .. fd49::.
import { spawn, type ChildProcess } from 'node:child_process'
import { createInterface } from 'node:readline'
import type { ExecutionContext } from 'ava'
import type { RoutingRule, TunErrorCode } from '../index.ts'
import { childEnv, INDEX, nodeScript } from './helpers/child.ts'
import { deviceTest } from './helpers/device.ts'
import { holdNetns, type HeldNetns } from './helpers/ns.ts'

/** The child: one JSON request per stdin line (`{ op, arg }`), one JSON answer per stdout line. */
const SERVE = `
import { createInterface } from 'node:readline'
import * as tk from ${JSON.stringify(INDEX)}
const ops = { add: (a) => tk.addRoutingRule(a), remove: (a) => tk.removeRoutingRule(a), list: (a) => tk.routingRules(a) }
for await (const line of createInterface({ input: process.stdin })) {
  const { op, arg } = JSON.parse(line)
  let answer
  try {
    answer = { value: (await ops[op](arg)) ?? null }
  } catch (e) {
    answer = { error: { tunError: e instanceof tk.TunError, code: e.code, errno: e.errno ?? null, message: e.message } }
  }
  process.stdout.write(JSON.stringify(answer) + '\\n')
}
`

interface Answer {
  value?: unknown
  error?: { tunError: boolean; code: string; errno: number | null; message: string }
}

/** A child process in `ns` that calls the rule functions for the test, one call at a time. */
class RuleClient {
  readonly #proc: ChildProcess
  readonly #lines: string[] = []
  #wake: (() => void) | null = null
  #stderr = ''
  #gone = false

  constructor(ns: HeldNetns) {
    this.#proc = spawn('nsenter', [`--net=${ns.path}`, ...nodeScript(SERVE)], {
      stdio: ['pipe', 'pipe', 'pipe'],
      env: childEnv,
    })
    createInterface({ input: this.#proc.stdout! }).on('line', (l) => {
      this.#lines.push(l)
      this.#wake?.()
    })
    this.#proc.stderr!.setEncoding('utf8').on('data', (d: string) => (this.#stderr += d))
    this.#proc.once('close', () => {
      this.#gone = true
      this.#wake?.()
    })
  }

  async call(op: 'add' | 'remove' | 'list', arg: unknown): Promise<Answer> {
    this.#proc.stdin!.write(JSON.stringify({ op, arg }) + '\n')
    const deadline = Date.now() + 30_000
    while (this.#lines.length === 0) {
      if (this.#gone) throw new Error(`the rule child exited; stderr: ${this.#stderr.trim()}`)
      const left = deadline - Date.now()
      if (left <= 0) throw new Error(`no answer to ${op} within 30 s; stderr: ${this.#stderr.trim()}`)
      await new Promise<void>((r) => {
        const timer = setTimeout(r, left)
        this.#wake = () => {
          clearTimeout(timer)
          r()
        }
      })
      this.#wake = null
    }
    return JSON.parse(this.#lines.shift()!) as Answer
  }

  /** The call's value; throws with the error's code and message when it failed. */
  async ok<T = void>(op: 'add' | 'remove' | 'list', arg: unknown): Promise<T> {
    const a = await this.call(op, arg)
    if (a.error) throw new Error(`${op} ${JSON.stringify(arg)}: ${a.error.code}: ${a.error.message}`)
    return a.value as T
  }

  /** Asserts the call fails with a `TunError` of `code` (and `errno`, when given: `null` for none). */
  async fails(
    t: ExecutionContext,
    op: 'add' | 'remove' | 'list',
    arg: unknown,
    code: TunErrorCode,
    errno?: number | null,
  ): Promise<void> {
    const what = `${op} ${JSON.stringify(arg)}`
    const a = await this.call(op, arg)
    if (!a.error) return void t.fail(`${what} did not fail`)
    t.true(a.error.tunError, `${what}: not a TunError: ${a.error.message}`)
    t.is(a.error.code, code, `${what}: ${a.error.message}`)
    if (errno !== undefined) t.is(a.error.errno, errno, `${what}: errno (${a.error.message})`)
  }

  async close(): Promise<void> {
    if (this.#gone) return
    const closed = new Promise<void>((r) => this.#proc.once('close', () => r()))
    this.#proc.stdin!.end()
    const timer = setTimeout(() => this.#proc.kill('SIGKILL'), 5000)
    await closed
    clearTimeout(timer)
  }
}

/** A namespace of the test's own with a client in it, both removed at the end of the test. */
async function setup(t: ExecutionContext): Promise<{ ns: HeldNetns; c: RuleClient }> {
  const ns = await holdNetns()
  t.teardown(() => ns.close())
  const c = new RuleClient(ns)
  t.teardown(() => c.close())
  return { ns, c }
}

/** `ip [-6] rule show` in `ns`, one string per rule. */
async function ipRules(ns: HeldNetns, family: 4 | 6): Promise<string[]> {
  const r = await ns.exec('ip', [`-${family}`, 'rule', 'show'])
  if (r.code !== 0) throw new Error(`ip -${family} rule show: ${r.stderr}`)
  return r.stdout
    .split('\n')
    .map((l) => l.trim().replace(/\s+/g, ' '))
    .filter((l) => l !== '')
}

async function ip(ns: HeldNetns, args: string[]): Promise<void> {
  const r = await ns.exec('ip', args)
  if (r.code !== 0) throw new Error(`ip ${args.join(' ')}: ${r.stderr}`)
}

const KERNEL_V4 = ['0: from all lookup local', '32766: from all lookup main', '32767: from all lookup default']
const KERNEL_V6 = ['0: from all lookup local', '32766: from all lookup main']
const KERNEL_RULES: RoutingRule[] = [
  { family: 4, priority: 0, table: 255 },
  { family: 4, priority: 32766, table: 254 },
  { family: 4, priority: 32767, table: 253 },
  { family: 6, priority: 0, table: 255 },
  { family: 6, priority: 32766, table: 254 },
]

deviceTest('addRoutingRule/routingRules/removeRoutingRule: IPv4 and IPv6 rules, as `ip rule` sees them', async (t) => {
  const { ns, c } = await setup(t)
  t.deepEqual(await ipRules(ns, 4), KERNEL_V4, 'a new namespace has the kernel rules only')
  t.deepEqual(await ipRules(ns, 6), KERNEL_V6)
  t.deepEqual(await c.ok('list', {}), KERNEL_RULES, 'the kernel rules, IPv4 first')

  const v4: RoutingRule[] = [
    { priority: 9000, from: '10.41.0.1', table: 254 },
    { family: 4, priority: 9001, table: 7890 },
    { priority: 9002, from: '10.42.0.0/16', to: '10.43.0.0/16', fwmark: 0x10, fwmask: 0xf0, iif: 'lo', table: 100 },
  ]
  const v6: RoutingRule[] = [
    { priority: 9000, from: 'fd41::1', table: 254 },
    { family: 6, priority: 9001, table: 7890 },
    // An output interface that does not exist: the kernel keeps the rule, detached, until one appears.
    { priority: 9002, to: 'fd43::/48', fwmark: 7, oif: 'tknone0', table: 100 },
  ]
  for (const r of [...v4, ...v6]) await c.ok('add', r)

  t.deepEqual(await ipRules(ns, 4), [
    '0: from all lookup local',
    '9000: from 10.41.0.1 lookup main',
    '9001: from all lookup 7890',
    '9002: from 10.42.0.0/16 to 10.43.0.0/16 fwmark 0x10/0xf0 iif lo lookup 100',
    '32766: from all lookup main',
    '32767: from all lookup default',
  ])
  t.deepEqual(await ipRules(ns, 6), [
    '0: from all lookup local',
    '9000: from fd41::1 lookup main',
    '9001: from all lookup 7890',
    '9002: from all to fd43::/48 fwmark 0x7 oif tknone0 [detached] lookup 100',
    '32766: from all lookup main',
  ])

  // Read back: the family always set, bare addresses as /32 and /128, the default mask.
  const listed4 = [
    { family: 4, priority: 9000, table: 254, from: '10.41.0.1/32' },
    { family: 4, priority: 9001, table: 7890 },
    {
      family: 4,
      priority: 9002,
      table: 100,
      from: '10.42.0.0/16',
      to: '10.43.0.0/16',
      fwmark: 0x10,
      fwmask: 0xf0,
      iif: 'lo',
    },
  ]
  const listed6 = [
    { family: 6, priority: 9000, table: 254, from: 'fd41::1/128' },
    { family: 6, priority: 9001, table: 7890 },
    { family: 6, priority: 9002, table: 100, to: 'fd43::/48', fwmark: 7, fwmask: 0xffffffff, oif: 'tknone0' },
  ]
  const [k4a, k4b, k4c, k6a, k6b] = KERNEL_RULES
  t.deepEqual(await c.ok('list', { family: 4 }), [k4a, ...listed4, k4b, k4c])
  t.deepEqual(await c.ok('list', { family: 6 }), [k6a, ...listed6, k6b])
  t.deepEqual(await c.ok('list', {}), [k4a, ...listed4, k4b, k4c, k6a, ...listed6, k6b])

  // Rules made by `ip` are listed and removable too; those the model cannot express (not, blackhole) are left out.
  await ip(ns, ['rule', 'add', 'pref', '9100', 'from', '10.44.0.0/24', 'lookup', '200'])
  await ip(ns, ['rule', 'add', 'pref', '9101', 'not', 'from', '10.45.0.0/24', 'lookup', '200'])
  await ip(ns, ['-6', 'rule', 'add', 'pref', '9102', 'blackhole'])
  const made = { family: 4, priority: 9100, table: 200, from: '10.44.0.0/24' }
  const after = await c.ok<RoutingRule[]>('list', {})
  t.deepEqual(
    after.filter((r) => r.priority >= 9100 && r.priority < 9200),
    [made],
    'only the rule tunkit can express',
  )
  await c.ok('remove', made)
  await ip(ns, ['rule', 'del', 'pref', '9101'])
  await ip(ns, ['-6', 'rule', 'del', 'pref', '9102'])

  // Removing the listed rules, as listed, leaves the kernel's.
  for (const r of [...listed4, ...listed6]) await c.ok('remove', r)
  t.deepEqual(await ipRules(ns, 4), KERNEL_V4)
  t.deepEqual(await ipRules(ns, 6), KERNEL_V6)
  t.deepEqual(await c.ok('list', {}), KERNEL_RULES)
})

deviceTest(
  'routing rule errors: duplicate, absent, bad table, bad priority, bad CIDR, mixed families, each typed and nothing half-done',
  async (t) => {
    const { ns, c } = await setup(t)
    const a4 = { priority: 9200, from: '10.46.0.1', table: 254 }
    const a6 = { family: 6, priority: 9200, table: 300 }
    await c.ok('add', a4)
    await c.ok('add', a6)
    const before4 = await ipRules(ns, 4)
    const before6 = await ipRules(ns, 6)

    // The kernel refuses: its errno comes along.
    await c.fails(t, 'add', a4, 'ERR_TUN_EXISTS', 17)
    await c.fails(t, 'add', a6, 'ERR_TUN_EXISTS', 17)
    await c.fails(t, 'remove', { ...a4, priority: 9201 }, 'ERR_TUN_NOT_FOUND', 2)
    await c.fails(t, 'remove', { ...a6, table: 301 }, 'ERR_TUN_NOT_FOUND', 2)
    await c.fails(t, 'remove', { family: 4, priority: 9200, from: '10.46.0.2', table: 254 }, 'ERR_TUN_NOT_FOUND', 2)

    // Refused before anything is sent (no errno), for add and remove alike.
    const base = { family: 4, priority: 9202, table: 100 }
    const bad: [string, unknown, TunErrorCode][] = [
      ['table 0', { ...base, table: 0 }, 'ERR_TUN_INVALID_ARGUMENT'],
      ['negative table', { ...base, table: -1 }, 'ERR_TUN_INVALID_ARGUMENT'],
      ['fractional table', { ...base, table: 1.5 }, 'ERR_TUN_INVALID_ARGUMENT'],
      ['table above 32 bits', { ...base, table: 2 ** 32 }, 'ERR_TUN_INVALID_ARGUMENT'],
      ['table as a string', { ...base, table: 'main' }, 'ERR_TUN_INVALID_ARGUMENT'],
      ['no table', { family: 4, priority: 9202 }, 'ERR_TUN_INVALID_ARGUMENT'],
      ['negative priority', { ...base, priority: -1 }, 'ERR_TUN_INVALID_ARGUMENT'],
      ['fractional priority', { ...base, priority: 9000.5 }, 'ERR_TUN_INVALID_ARGUMENT'],
      ['priority above 32 bits', { ...base, priority: 2 ** 32 }, 'ERR_TUN_INVALID_ARGUMENT'],
      ['priority as a string', { ...base, priority: '9000' }, 'ERR_TUN_INVALID_ARGUMENT'],
      ['no priority', { family: 4, table: 100 }, 'ERR_TUN_INVALID_ARGUMENT'],
      ['not an address', { ...base, from: 'nope' }, 'ERR_TUN_INVALID_ADDRESS'],
      ['IPv4 prefix too long', { ...base, from: '10.47.0.0/33' }, 'ERR_TUN_INVALID_ADDRESS'],
      ['IPv6 prefix too long', { family: 6, priority: 9202, table: 100, to: 'fd47::/129' }, 'ERR_TUN_INVALID_ADDRESS'],
      ['empty prefix length', { ...base, to: '10.47.0.0/' }, 'ERR_TUN_INVALID_ADDRESS'],
      [
        'from and to of two families',
        { priority: 9202, table: 100, from: '10.47.0.1', to: 'fd47::/64' },
        'ERR_TUN_INVALID_ADDRESS',
      ],
      [
        'IPv4 from in an IPv6 rule',
        { family: 6, priority: 9202, table: 100, from: '10.47.0.1' },
        'ERR_TUN_INVALID_ADDRESS',
      ],
      ['IPv6 to in an IPv4 rule', { ...base, to: 'fd47::/64' }, 'ERR_TUN_INVALID_ADDRESS'],
      ['no family to go by', { priority: 9202, table: 100 }, 'ERR_TUN_INVALID_ARGUMENT'],
      ['family 5', { ...base, family: 5 }, 'ERR_TUN_INVALID_ARGUMENT'],
      ['fwmask without fwmark', { ...base, fwmask: 0xff }, 'ERR_TUN_INVALID_ARGUMENT'],
      ['fwmark outside its mask', { ...base, fwmark: 0x11, fwmask: 0xf0 }, 'ERR_TUN_INVALID_ARGUMENT'],
      ['fwmask 0', { ...base, fwmark: 0, fwmask: 0 }, 'ERR_TUN_INVALID_ARGUMENT'],
      ['bad interface name', { ...base, iif: 'bad/name' }, 'ERR_TUN_INVALID_NAME'],
      ['unknown key', { ...base, lookup: 'main' }, 'ERR_TUN_INVALID_ARGUMENT'],
      ['not an object', 'pref 9202 lookup 100', 'ERR_TUN_INVALID_ARGUMENT'],
      ['null', null, 'ERR_TUN_INVALID_ARGUMENT'],
    ]
    for (const [what, rule, code] of bad) {
      for (const op of ['add', 'remove'] as const) {
        const a = await c.call(op, rule)
        t.truthy(a.error, `${op} with ${what} did not fail`)
        if (!a.error) continue
        t.true(a.error.tunError, `${op} with ${what}: not a TunError: ${a.error.message}`)
        t.is(a.error.code, code, `${op} with ${what}: ${a.error.message}`)
        t.is(a.error.errno, null, `${op} with ${what}: refused before the kernel saw it`)
      }
    }
    await c.fails(t, 'list', { family: 5 }, 'ERR_TUN_INVALID_ARGUMENT')
    await c.fails(t, 'list', { v6: true }, 'ERR_TUN_INVALID_ARGUMENT')

    t.deepEqual(await ipRules(ns, 4), before4, 'nothing was added or removed by a failed call')
    t.deepEqual(await ipRules(ns, 6), before6)
    await c.ok('remove', a4)
    await c.ok('remove', a6)
    t.deepEqual(await ipRules(ns, 4), KERNEL_V4)
    t.deepEqual(await ipRules(ns, 6), KERNEL_V6)
  },
)

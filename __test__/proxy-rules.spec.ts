// The proxy's rules engine (src/proxy/rules.ts): every condition type, AND/OR, first match, the default, both file
// formats, every validation error, a randomized cross-check against a naive matcher, and a large suffix rule set.
// Pure computation: no device, no network.
import test, { type ExecutionContext } from 'ava'
import { BlockList, isIPv4 } from 'node:net'
import { performance } from 'node:perf_hooks'
import { TunError } from '../src/errors.ts'
import { parseRules, RuleSet, type Flow, type Rule, type RuleMatch } from '../src/proxy/rules.ts'

/** A TCP flow to `address:port`, with `domain` when given. */
function tcp(address: string, port = 443, domain?: string): Flow {
  return domain === undefined ? { protocol: 'tcp', address, port } : { protocol: 'tcp', address, port, domain }
}

/** The upstream `rules` gives a flow for `domain` (to a neutral address and port). */
function byName(rules: RuleSet, domain: string | undefined): string {
  return rules.match(tcp('192.0.2.1', 443, domain)).upstream
}

/** The upstream `rules` gives a TCP flow to `address`. */
function byAddress(rules: RuleSet, address: string): string {
  return rules.match(tcp(address)).upstream
}

/** Asserts that `f` throws `ERR_TUN_INVALID_ARGUMENT` with exactly `message`. */
function throwsInvalid(t: ExecutionContext, f: () => unknown, message: string | RegExp): void {
  t.throws(f, { instanceOf: TunError, code: 'ERR_TUN_INVALID_ARGUMENT', message }, String(message))
}

test('domain: exact name only, case-insensitive, trailing dot ignored, never without a name', (t) => {
  const rules = new RuleSet([{ domain: ['example.com', 'Mixed.Case.ORG.'], upstream: 'hit' }], { default: 'miss' })
  t.is(byName(rules, 'example.com'), 'hit')
  t.is(byName(rules, 'EXAMPLE.Com'), 'hit')
  t.is(byName(rules, 'example.com.'), 'hit')
  t.is(byName(rules, 'mixed.case.org'), 'hit')
  t.is(byName(rules, 'www.example.com'), 'miss')
  t.is(byName(rules, 'badexample.com'), 'miss')
  t.is(byName(rules, 'example.co'), 'miss')
  t.is(byName(rules, undefined), 'miss')
  t.is(byName(rules, ''), 'miss')
})

test('domainSuffix: apex, deeper subdomains, not lookalikes; case and trailing dot ignored on both sides', (t) => {
  for (const entry of ['example.com', 'EXAMPLE.COM', 'example.com.', 'Example.Com.']) {
    const rules = new RuleSet([{ domainSuffix: [entry], upstream: 'hit' }], { default: 'miss' })
    t.is(byName(rules, 'example.com'), 'hit', entry)
    t.is(byName(rules, 'a.example.com'), 'hit', entry)
    t.is(byName(rules, 'a.b.c.example.com'), 'hit', entry)
    t.is(byName(rules, 'example.com.'), 'hit', entry)
    t.is(byName(rules, 'A.B.EXAMPLE.COM.'), 'hit', entry)
    t.is(byName(rules, 'badexample.com'), 'miss', entry)
    t.is(byName(rules, 'a.badexample.com'), 'miss', entry)
    t.is(byName(rules, 'example.com.evil.net'), 'miss', entry)
    t.is(byName(rules, 'xample.com'), 'miss', entry)
    t.is(byName(rules, 'com'), 'miss', entry)
    t.is(byName(rules, undefined), 'miss', entry)
  }
  // A one-label suffix is a whole top-level domain.
  const tld = new RuleSet([{ domainSuffix: ['com'], upstream: 'hit' }], { default: 'miss' })
  t.is(byName(tld, 'com'), 'hit')
  t.is(byName(tld, 'example.com'), 'hit')
  t.is(byName(tld, 'example.community'), 'miss')
})

test('domainKeyword: substring anywhere in the name, case-insensitive', (t) => {
  const rules = new RuleSet([{ domainKeyword: ['google', 'ADS.'], upstream: 'hit' }], { default: 'miss' })
  t.is(byName(rules, 'www.google.com'), 'hit')
  t.is(byName(rules, 'googleapis.com'), 'hit')
  t.is(byName(rules, 'GOOGLE.de'), 'hit')
  t.is(byName(rules, 'ads.example.net'), 'hit')
  t.is(byName(rules, 'goo.gle'), 'miss')
  t.is(byName(rules, 'ads'), 'miss')
  t.is(byName(rules, undefined), 'miss')
})

test('cidr IPv4: bounds, host bits masked, bare address, 0.0.0.0/0, several networks', (t) => {
  const rules = new RuleSet(
    [
      { cidr: ['10.1.2.3/8'], upstream: 'ten' },
      { cidr: ['8.8.8.8'], upstream: 'one' },
      { cidr: ['192.168.0.0/16', '172.16.0.0/12'], upstream: 'private' },
    ],
    { default: 'miss' },
  )
  t.is(byAddress(rules, '10.0.0.0'), 'ten')
  t.is(byAddress(rules, '10.255.255.255'), 'ten')
  t.is(byAddress(rules, '9.255.255.255'), 'miss')
  t.is(byAddress(rules, '11.0.0.0'), 'miss')
  t.is(byAddress(rules, '8.8.8.8'), 'one')
  t.is(byAddress(rules, '8.8.8.9'), 'miss')
  t.is(byAddress(rules, '192.168.200.1'), 'private')
  t.is(byAddress(rules, '172.31.255.255'), 'private')
  t.is(byAddress(rules, '172.32.0.0'), 'miss')
  t.is(byAddress(rules, '2001:db8::1'), 'miss')

  const all = new RuleSet([{ cidr: ['0.0.0.0/0'], upstream: 'v4' }], { default: 'miss' })
  t.is(byAddress(all, '0.0.0.0'), 'v4')
  t.is(byAddress(all, '255.255.255.255'), 'v4')
  t.is(byAddress(all, '::ffff:1.2.3.4'), 'v4')
  t.is(byAddress(all, '::1'), 'miss')
  // An address that does not parse meets no CIDR condition (but a catch-all still takes it).
  t.is(byAddress(all, 'not-an-ip'), 'miss')
  t.is(byAddress(all, '010.0.0.1'), 'miss')
  t.is(byAddress(all, '1.2.3'), 'miss')
  t.deepEqual(new RuleSet([{ cidr: ['0.0.0.0/0'], upstream: 'v4' }, { upstream: 'any' }]).match(tcp('bogus')), {
    upstream: 'any',
    index: 1,
  })
})

test('cidr IPv6 and IPv4-mapped IPv6', (t) => {
  const rules = new RuleSet(
    [
      { cidr: ['::1/128'], upstream: 'loopback' },
      { cidr: ['fc00::/7'], upstream: 'ula' },
      { cidr: ['2001:db8:1::/48'], upstream: 'narrow' },
      { cidr: ['2001:DB8::/32'], upstream: 'doc' },
      { cidr: ['fe80::/10'], upstream: 'link' },
      { cidr: ['64:ff9b::/96'], upstream: 'nat64' },
      { cidr: ['10.0.0.0/8'], upstream: 'ten' },
      { cidr: ['::ffff:192.168.0.0/112'], upstream: 'mapped-rule' },
      { cidr: ['::/0'], upstream: 'v6' },
    ],
    { default: 'miss' },
  )
  t.is(byAddress(rules, '::1'), 'loopback')
  t.is(byAddress(rules, '0:0:0:0:0:0:0:1'), 'loopback')
  t.is(byAddress(rules, 'fc00::'), 'ula')
  t.is(byAddress(rules, 'fd12:3456::1'), 'ula')
  t.is(byAddress(rules, 'fdff:ffff:ffff:ffff:ffff:ffff:ffff:ffff'), 'ula')
  t.is(byAddress(rules, 'fe00::'), 'v6')
  t.is(byAddress(rules, '2001:db8:1:ffff::1'), 'narrow')
  t.is(byAddress(rules, '2001:DB8:2::1'), 'doc')
  t.is(byAddress(rules, 'fe80::1%eth0'), 'link')
  t.is(byAddress(rules, '64:ff9b::1.2.3.4'), 'nat64')
  t.is(byAddress(rules, '2606:4700::1111'), 'v6')
  // IPv4-mapped flows are IPv4: IPv4 networks match them, IPv6 ones (even ::/0) do not.
  t.is(byAddress(rules, '::ffff:10.1.2.3'), 'ten')
  t.is(byAddress(rules, '::FFFF:a01:203'), 'ten')
  t.is(byAddress(rules, '0:0:0:0:0:ffff:10.9.9.9'), 'ten')
  t.is(byAddress(rules, '::ffff:11.0.0.1'), 'miss')
  // A network written in the mapped form is the IPv4 network it maps.
  t.is(byAddress(rules, '192.168.5.5'), 'mapped-rule')
  t.is(byAddress(rules, '::ffff:192.168.5.5'), 'mapped-rule')
  t.is(byAddress(rules, '1.2.3.4'), 'miss')
  t.is(byAddress(rules, '1::2::3'), 'miss')
  t.is(byAddress(rules, '1:2:3:4:5:6:7:8:9'), 'miss')
})

test('port: single ports, ranges and lists (bounds inclusive, overlaps merged); protocol', (t) => {
  const rules = new RuleSet([{ port: [22, '80', '8000-9000', '1-100', '50-200'], upstream: 'hit' }], {
    default: 'miss',
  })
  for (const port of [1, 22, 80, 150, 200, 8000, 8500, 9000]) t.is(rules.match(tcp('1.1.1.1', port)).upstream, 'hit')
  for (const port of [201, 7999, 9001, 65535]) t.is(rules.match(tcp('1.1.1.1', port)).upstream, 'miss')
  const all = new RuleSet([{ port: ['1-65535'], upstream: 'hit' }], { default: 'miss' })
  t.is(all.match(tcp('1.1.1.1', 65535)).upstream, 'hit')
  t.is(all.match(tcp('1.1.1.1', 1)).upstream, 'hit')

  const udp = new RuleSet([
    { protocol: 'udp', upstream: 'u' },
    { protocol: 'tcp', upstream: 't' },
  ])
  t.deepEqual(udp.match({ protocol: 'udp', address: '1.1.1.1', port: 53 }), { upstream: 'u', index: 0 })
  t.deepEqual(udp.match({ protocol: 'tcp', address: '1.1.1.1', port: 53 }), { upstream: 't', index: 1 })
})

test('AND across conditions, OR within a list', (t) => {
  const rules = new RuleSet(
    [
      { domainSuffix: ['a.com', 'b.com'], port: [443], protocol: 'tcp', upstream: 'web' },
      { domain: ['x.c.com'], domainSuffix: ['c.com'], upstream: 'both-domain' },
      { domainKeyword: ['cdn'], cidr: ['10.0.0.0/8', 'fd00::/8'], upstream: 'cdn-inside' },
      { cidr: ['192.0.2.0/24'], port: ['5000-6000'], protocol: 'udp', upstream: 'game' },
    ],
    { default: 'miss' },
  )
  const m = (flow: Flow): string => rules.match(flow).upstream
  t.is(m(tcp('1.1.1.1', 443, 'www.a.com')), 'web')
  t.is(m(tcp('1.1.1.1', 443, 'b.com')), 'web')
  t.is(m(tcp('1.1.1.1', 80, 'www.a.com')), 'miss')
  t.is(m({ protocol: 'udp', address: '1.1.1.1', port: 443, domain: 'www.a.com' }), 'miss')
  t.is(m(tcp('1.1.1.1', 443, 'www.d.com')), 'miss')
  t.is(m(tcp('1.1.1.1', 443, 'x.c.com')), 'both-domain')
  t.is(m(tcp('1.1.1.1', 443, 'y.c.com')), 'miss')
  t.is(m(tcp('10.2.3.4', 443, 'cdn.example.net')), 'cdn-inside')
  t.is(m(tcp('fd00::7', 443, 'cdn.example.net')), 'cdn-inside')
  t.is(m(tcp('11.2.3.4', 443, 'cdn.example.net')), 'miss')
  t.is(m(tcp('10.2.3.4', 443, 'www.example.net')), 'miss')
  t.is(m(tcp('10.2.3.4', 443)), 'miss')
  t.is(m({ protocol: 'udp', address: '192.0.2.9', port: 5500 }), 'game')
  t.is(m({ protocol: 'udp', address: '192.0.2.9', port: 6001 }), 'miss')
  t.is(m({ protocol: 'tcp', address: '192.0.2.9', port: 5500 }), 'miss')
  t.is(m({ protocol: 'udp', address: '192.0.3.9', port: 5500 }), 'miss')
})

test('first match wins, across indexed and scanned rules; catch-all; default; size', (t) => {
  const rules = new RuleSet([
    { port: [25], upstream: 'no-smtp' },
    { domainSuffix: ['example.com'], upstream: 'suffix' },
    { domain: ['www.example.com'], upstream: 'exact' },
    { cidr: ['10.0.0.0/8'], upstream: 'ten' },
    { domainKeyword: ['example'], upstream: 'keyword' },
    { cidr: ['10.1.0.0/16'], upstream: 'ten-one' },
    { upstream: 'last' },
    { domain: ['never.example.org'], upstream: 'unreachable' },
  ])
  t.is(rules.size, 8)
  t.deepEqual(rules.match(tcp('10.1.1.1', 25, 'www.example.com')), { upstream: 'no-smtp', index: 0 })
  t.deepEqual(rules.match(tcp('10.1.1.1', 443, 'www.example.com')), { upstream: 'suffix', index: 1 })
  t.deepEqual(rules.match(tcp('10.1.1.1', 443, 'www.example.org')), { upstream: 'ten', index: 3 })
  t.deepEqual(rules.match(tcp('11.1.1.1', 443, 'www.example.org')), { upstream: 'keyword', index: 4 })
  t.deepEqual(rules.match(tcp('11.1.1.1', 443, 'never.example.org')), { upstream: 'keyword', index: 4 })
  t.deepEqual(rules.match(tcp('11.1.1.1', 443, 'other.net')), { upstream: 'last', index: 6 })
  t.deepEqual(rules.match(tcp('11.1.1.1', 443)), { upstream: 'last', index: 6 })

  // The order decides, whichever index a rule sits in.
  const exactFirst = new RuleSet([
    { domain: ['www.example.com'], upstream: 'exact' },
    { domainSuffix: ['example.com'], upstream: 'suffix' },
  ])
  t.deepEqual(exactFirst.match(tcp('1.1.1.1', 443, 'www.example.com')), { upstream: 'exact', index: 0 })
  t.deepEqual(exactFirst.match(tcp('1.1.1.1', 443, 'a.example.com')), { upstream: 'suffix', index: 1 })
  const narrowLast = new RuleSet([
    { cidr: ['10.0.0.0/8'], upstream: 'wide' },
    { cidr: ['10.1.2.0/24'], upstream: 'narrow' },
  ])
  t.deepEqual(narrowLast.match(tcp('10.1.2.3')), { upstream: 'wide', index: 0 })

  // Nothing matches: the default, 'direct' unless told.
  t.deepEqual(new RuleSet([]).match(tcp('1.1.1.1')), { upstream: 'direct', index: -1 })
  t.is(new RuleSet([]).size, 0)
  t.deepEqual(new RuleSet([{ port: [1], upstream: 'x' }], { default: 'proxy' }).match(tcp('1.1.1.1')), {
    upstream: 'proxy',
    index: -1,
  })
})

test('upstreams(): every name referenced plus the default, a fresh set each call', (t) => {
  const rules = new RuleSet(
    [
      { domain: ['a.com'], upstream: 'proxy' },
      { cidr: ['10.0.0.0/8'], upstream: 'direct' },
      { port: [25], upstream: 'reject' },
      { domainKeyword: ['x'], upstream: 'proxy' },
    ],
    { default: 'fallback' },
  )
  t.deepEqual([...rules.upstreams()].sort(), ['direct', 'fallback', 'proxy', 'reject'])
  rules.upstreams().clear()
  t.is(rules.upstreams().size, 4)
  t.deepEqual([...new RuleSet([]).upstreams()], ['direct'])
})

const LINES = `
# A Clash-style rules file.

DOMAIN , login.example.com , auth
DOMAIN-SUFFIX,example.com,proxy
domain-keyword,tracker,reject          # inline comment
IP-CIDR,10.0.0.0/8,direct,no-resolve
  - IP-CIDR6,fc00::/7,direct,NO-RESOLVE
IP-CIDR6,::ffff:192.168.0.0/112,direct
DST-PORT,25,reject
DST-PORT,8000-9000,alt
DST-PORT,80/443/5000-5100,web
NETWORK,UDP,udp-up
MATCH,proxy
`

const EXPECTED: Rule[] = [
  { domain: ['login.example.com'], upstream: 'auth' },
  { domainSuffix: ['example.com'], upstream: 'proxy' },
  { domainKeyword: ['tracker'], upstream: 'reject' },
  { cidr: ['10.0.0.0/8'], upstream: 'direct' },
  { cidr: ['fc00::/7'], upstream: 'direct' },
  { cidr: ['::ffff:192.168.0.0/112'], upstream: 'direct' },
  { port: [25], upstream: 'reject' },
  { port: ['8000-9000'], upstream: 'alt' },
  { port: [80, 443, '5000-5100'], upstream: 'web' },
  { protocol: 'udp', upstream: 'udp-up' },
  { upstream: 'proxy' },
]

test('parseRules: the line format and JSON give the same rules and the same behaviour', (t) => {
  const fromLines = parseRules(LINES)
  t.deepEqual(fromLines, EXPECTED)
  t.deepEqual(parseRules(LINES.replace(/\n/g, '\r\n')), EXPECTED)
  const fromJson = parseRules(JSON.stringify(EXPECTED, null, 2))
  const fromWrapped = parseRules(`\uFEFF  ${JSON.stringify({ version: 1, rules: EXPECTED })}`)
  t.deepEqual(fromJson, EXPECTED)
  t.deepEqual(fromWrapped, EXPECTED)

  const sets = [fromLines, fromJson, fromWrapped].map((r) => new RuleSet(r, { default: 'none' }))
  const flows: Flow[] = [
    tcp('1.1.1.1', 443, 'login.example.com'),
    tcp('1.1.1.1', 443, 'LOGIN.example.com.'),
    tcp('1.1.1.1', 443, 'www.example.com'),
    tcp('1.1.1.1', 443, 'badexample.com'),
    tcp('1.1.1.1', 443, 'a.tracker.net'),
    tcp('10.9.9.9', 443),
    tcp('::ffff:10.9.9.9', 443),
    tcp('fd00::1', 443),
    tcp('192.168.1.1', 443),
    tcp('1.1.1.1', 25),
    tcp('1.1.1.1', 8080),
    tcp('1.1.1.1', 80),
    tcp('1.1.1.1', 5050),
    tcp('1.1.1.1', 7000),
    { protocol: 'udp', address: '1.1.1.1', port: 7000 },
  ]
  const expected = [
    'auth',
    'auth',
    'proxy',
    'web', // 'badexample.com' meets no domain rule; port 443 takes it to 'web'
    'reject',
    'direct',
    'direct',
    'direct',
    'direct',
    'reject',
    'alt',
    'web',
    'web',
    'proxy',
    'udp-up',
  ]
  for (const rules of sets) {
    t.is(rules.size, EXPECTED.length)
    t.deepEqual(
      flows.map((f) => rules.match(f).upstream),
      expected,
    )
  }
  t.deepEqual(parseRules(''), [])
  t.deepEqual(parseRules('# only a comment\n\n'), [])
  t.deepEqual(parseRules('[]'), [])
})

test('parseRules: errors name the line and the bad token', (t) => {
  const cases: [string, string | RegExp][] = [
    ['DOMAIN,example.com,proxy\nGEOIP,CN,direct', "rules line 2: unknown rule type 'GEOIP'"],
    ['\n# comment\r\n\r\nPROCESS-NAME,curl,direct', "rules line 4: unknown rule type 'PROCESS-NAME'"],
    ['DOMAIN,example.com', "rules line 1: DOMAIN takes two fields (value, upstream): 'DOMAIN,example.com'"],
    ['DOMAIN,a.com,proxy,extra', "rules line 1: DOMAIN takes two fields (value, upstream): 'DOMAIN,a.com,proxy,extra'"],
    [
      'DOMAIN,a.com,proxy,no-resolve',
      "rules line 1: DOMAIN takes two fields (value, upstream): 'DOMAIN,a.com,proxy,no-resolve'",
    ],
    ['DOMAIN,,proxy', "rules line 1: empty value in 'DOMAIN,,proxy'"],
    ['DOMAIN,example.com,', "rules line 1: empty upstream name ''"],
    ['MATCH', "rules line 1: MATCH takes one field (the upstream): 'MATCH'"],
    ['MATCH,a,b', "rules line 1: MATCH takes one field (the upstream): 'MATCH,a,b'"],
    ['MATCH,proxy\nDOMAIN-SUFFIX,a..com,proxy', "rules line 2: bad domain suffix 'a..com'"],
    ['DOMAIN,exa mple.com,proxy', "rules line 1: bad domain 'exa mple.com'"],
    ['DOMAIN-KEYWORD,goo gle,proxy', "rules line 1: bad domain keyword 'goo gle'"],
    ['IP-CIDR,10.0.0.0/33,direct', "rules line 1: bad CIDR '10.0.0.0/33'"],
    ['IP-CIDR6,fc00::/129,direct', "rules line 1: bad CIDR 'fc00::/129'"],
    ['IP-CIDR,10.0.0/8,direct', "rules line 1: bad CIDR '10.0.0/8'"],
    ['IP-CIDR,10.0.0.0/8,direct,resolve', "rules line 1: unknown option 'resolve'"],
    ['DST-PORT,0,proxy', 'rules line 1: bad port 0 (out of range 1-65535)'],
    ['DST-PORT,65536,proxy', 'rules line 1: bad port 65536 (out of range 1-65535)'],
    ['DST-PORT,9000-8000,proxy', "rules line 1: bad port '9000-8000' (reversed range)"],
    ['DST-PORT,http,proxy', "rules line 1: bad port 'http' (a port is 1-65535, a range 8000-9000)"],
    ['DST-PORT,80//443,proxy', "rules line 1: bad port '' (a port is 1-65535, a range 8000-9000)"],
    ['NETWORK,icmp,direct', "rules line 1: bad network 'icmp' (tcp or udp)"],
    // JSON: rules are named by index, syntax errors by line when the engine says where.
    ['[{"upstream": "a"}, {"domian": ["b.com"], "upstream": "b"}]', "rules[1]: unknown key 'domian'"],
    ['{"rules": [{"upstream": "a"}, {"upstream": "b", "port": [0]}]}', 'rules[1]: bad port 0 (out of range 1-65535)'],
    ['[1]', 'rules[0]: a rule is an object, got 1'],
    ['{"rule": []}', 'rules: a JSON object must hold the rules as an array under "rules"'],
    ['{"rules": 5}', 'rules: JSON rules must be an array, got 5'],
    ['[\n{"upstream": "x"},\n]', /^rules( line \d+)?: invalid JSON \(.+\)$/],
    ['[\n{"upstream": "x"}\n{"upstream": "y"}]', /^rules( line 3)?: invalid JSON \(.+\)$/],
  ]
  for (const [text, message] of cases) throwsInvalid(t, () => parseRules(text), message)
})

test('RuleSet: validation errors name the rule index', (t) => {
  const bad = (rule: unknown): Rule[] => [{ upstream: 'ok' }, { domain: ['ok.com'], upstream: 'ok' }, rule as Rule]
  const cases: [unknown, string][] = [
    [{ cidr: ['10.0.0.0/8', '300.0.0.0/8'], upstream: 'x' }, "rules[2]: bad CIDR '300.0.0.0/8'"],
    [{ cidr: ['010.0.0.0/8'], upstream: 'x' }, "rules[2]: bad CIDR '010.0.0.0/8'"],
    [{ cidr: ['10.0.0.0/-1'], upstream: 'x' }, "rules[2]: bad CIDR '10.0.0.0/-1'"],
    [{ cidr: ['10.0.0.0/8/8'], upstream: 'x' }, "rules[2]: bad CIDR '10.0.0.0/8/8'"],
    [{ cidr: ['fe80::1%eth0/64'], upstream: 'x' }, "rules[2]: bad CIDR 'fe80::1%eth0/64'"],
    [{ cidr: ['1:2:3:4:5:6:7:8::/64'], upstream: 'x' }, "rules[2]: bad CIDR '1:2:3:4:5:6:7:8::/64'"],
    [{ cidr: [42], upstream: 'x' }, 'rules[2]: bad CIDR 42'],
    [{ port: [0], upstream: 'x' }, 'rules[2]: bad port 0 (out of range 1-65535)'],
    [{ port: [65536], upstream: 'x' }, 'rules[2]: bad port 65536 (out of range 1-65535)'],
    [{ port: ['100-70000'], upstream: 'x' }, "rules[2]: bad port '100-70000' (out of range 1-65535)"],
    [{ port: ['0-10'], upstream: 'x' }, "rules[2]: bad port '0-10' (out of range 1-65535)"],
    [{ port: ['9000-8000'], upstream: 'x' }, "rules[2]: bad port '9000-8000' (reversed range)"],
    [{ port: [443.5], upstream: 'x' }, 'rules[2]: bad port 443.5 (not an integer)'],
    [{ port: [true], upstream: 'x' }, 'rules[2]: bad port true (a port is a number or a string)'],
    [{ port: 443, upstream: 'x' }, 'rules[2]: port must be an array, got 443'],
    [{ domain: 'a.com', upstream: 'x' }, "rules[2]: domain must be an array, got 'a.com'"],
    [{ domain: [], upstream: 'x' }, 'rules[2]: domain is an empty list (leave it out to not test it)'],
    [{ domain: [1], upstream: 'x' }, 'rules[2]: bad domain 1 (not a string)'],
    [{ domainSuffix: ['.example.com'], upstream: 'x' }, "rules[2]: bad domain suffix '.example.com'"],
    [{ domainSuffix: ['*.example.com'], upstream: 'x' }, "rules[2]: bad domain suffix '*.example.com'"],
    [{ domainKeyword: [''], upstream: 'x' }, "rules[2]: bad domain keyword ''"],
    [{ protocol: 'icmp', upstream: 'x' }, "rules[2]: bad protocol 'icmp' (tcp or udp)"],
    [{ upstream: '' }, "rules[2]: empty upstream name ''"],
    [{ upstream: '  ' }, "rules[2]: empty upstream name '  '"],
    [{ domain: ['a.com'] }, 'rules[2]: upstream must be a string, got undefined'],
    [{ ports: [443], upstream: 'x' }, "rules[2]: unknown key 'ports'"],
    [null, 'rules[2]: a rule is an object, got null'],
    [['DOMAIN', 'a.com', 'x'], 'rules[2]: a rule is an object, got ["DOMAIN","a.com","x"]'],
  ]
  for (const [rule, message] of cases) throwsInvalid(t, () => new RuleSet(bad(rule)), message)
  throwsInvalid(t, () => new RuleSet([], { default: '' }), "rules: empty default upstream name ''")
  throwsInvalid(t, () => new RuleSet({} as unknown as Rule[]), 'rules: must be an array, got {}')
  throwsInvalid(t, () => parseRules(5 as unknown as string), 'rules: text must be a string, got 5')
})

/** A deterministic PRNG (mulberry32). */
function prng(seed: number): () => number {
  let a = seed >>> 0
  return () => {
    a = (a + 0x6d2b79f5) >>> 0
    let x = Math.imul(a ^ (a >>> 15), 1 | a)
    x = (x + Math.imul(x ^ (x >>> 7), 61 | x)) ^ x
    return ((x ^ (x >>> 14)) >>> 0) / 4294967296
  }
}

/** The obvious first-match loop, with node's BlockList for the networks: what RuleSet must agree with. */
function naive(rules: Rule[], flow: Flow, fallback: string): RuleMatch {
  const norm = (d: string): string => d.toLowerCase().replace(/\.$/, '')
  const name = flow.domain === undefined || flow.domain === '' ? undefined : norm(flow.domain)
  const family = isIPv4(flow.address) ? 'ipv4' : 'ipv6'
  for (const [index, r] of rules.entries()) {
    if (r.protocol !== undefined && r.protocol !== flow.protocol) continue
    if (
      r.port !== undefined &&
      !r.port.some((p) => {
        const [lo, hi] = String(p).split('-').map(Number)
        return flow.port >= lo! && flow.port <= (hi ?? lo!)
      })
    ) {
      continue
    }
    if (r.domain !== undefined && (name === undefined || !r.domain.some((d) => norm(d) === name))) continue
    if (
      r.domainSuffix !== undefined &&
      (name === undefined || !r.domainSuffix.some((s) => name === norm(s) || name.endsWith(`.${norm(s)}`)))
    ) {
      continue
    }
    if (r.domainKeyword !== undefined && (name === undefined || !r.domainKeyword.some((k) => name.includes(k)))) {
      continue
    }
    if (r.cidr !== undefined) {
      const list = new BlockList()
      for (const c of r.cidr) {
        const [net, len] = c.split('/')
        if (isIPv4(net!) === (family === 'ipv4')) list.addSubnet(net!, Number(len), family)
      }
      if (!list.check(flow.address, family)) continue
    }
    return { upstream: r.upstream, index }
  }
  return { upstream: fallback, index: -1 }
}

test('randomized: RuleSet agrees with a naive first-match loop', (t) => {
  const names = ['example.com', 'a.example.com', 'b.a.example.com', 'badexample.com', 'example.org', 'google.com']
  const flowNames = [...names, 'www.google.com', 'mail.google.com', 'googleapis.com', 'localhost', 'com', 'x.org']
  const suffixes = ['example.com', 'a.example.com', 'google.com', 'com', 'org', 'localhost']
  const keywords = ['google', 'example', 'mail', 'bad']
  const nets = ['10.0.0.0/8', '10.1.0.0/16', '10.1.2.0/24', '192.168.0.0/16', '0.0.0.0/0', '8.8.8.8/32']
  const nets6 = ['fc00::/7', '2001:db8::/32', '2001:db8:1::/48', '::/0', '::1/128', '2001:db8:1:2::/64']
  const ports: (number | string)[] = [53, 80, 443, '8000-9000', '1-1024', 65535, '440-450']
  const addresses = ['10.1.2.3', '10.1.3.4', '10.2.0.1', '192.168.1.1', '8.8.8.8', '1.1.1.1', '172.16.0.1']
  const addresses6 = ['fd00::1', '2001:db8:1::5', '2001:db8:1:2::9', '2001:db8:2::5', '::1', '2606:4700::1111']
  const flowPorts = [53, 80, 443, 445, 8000, 8500, 9000, 9001, 22, 65535, 1024, 1025]
  let checked = 0
  for (let seed = 1; seed <= 25; seed++) {
    const rnd = prng(seed)
    const pick = <T>(xs: readonly T[]): T => xs[Math.floor(rnd() * xs.length)]!
    const some = <T>(xs: readonly T[]): T[] => [
      ...new Set(Array.from({ length: 1 + Math.floor(rnd() * 3) }, () => pick(xs))),
    ]
    const rules: Rule[] = []
    const count = 5 + Math.floor(rnd() * 40)
    for (let i = 0; i < count; i++) {
      const r: Rule = { upstream: `u${i}` }
      if (rnd() < 0.25) r.domain = some(names).map((n) => (rnd() < 0.3 ? `${n.toUpperCase()}.` : n))
      if (rnd() < 0.35) r.domainSuffix = some(suffixes)
      if (rnd() < 0.15) r.domainKeyword = some(keywords)
      if (rnd() < 0.35) r.cidr = some([...nets, ...nets6])
      if (rnd() < 0.2) r.port = some(ports)
      if (rnd() < 0.15) r.protocol = pick(['tcp', 'udp'] as const)
      if (Object.keys(r).length === 1 && rnd() < 0.8) r.domainSuffix = some(suffixes)
      rules.push(r)
    }
    const set = new RuleSet(rules, { default: 'def' })
    for (let k = 0; k < 400; k++) {
      const domain = rnd() < 0.2 ? undefined : pick(flowNames)
      const flow: Flow = {
        protocol: rnd() < 0.7 ? 'tcp' : 'udp',
        address: rnd() < 0.6 ? pick(addresses) : pick(addresses6),
        port: pick(flowPorts),
      }
      if (domain !== undefined) flow.domain = rnd() < 0.2 ? `${domain.toUpperCase()}.` : domain
      const want = naive(rules, flow, 'def')
      const got = set.match(flow)
      if (got.index !== want.index || got.upstream !== want.upstream) {
        t.fail(`seed ${seed}: ${JSON.stringify(flow)} → ${JSON.stringify(got)}, want ${JSON.stringify(want)}`)
        return
      }
      checked++
    }
  }
  t.is(checked, 25 * 400)
})

test('10 000 suffix rules: 10 000 flows still get the right answers (time logged, not asserted)', (t) => {
  const n = 10_000
  const rules: Rule[] = []
  for (let i = 0; i < n; i++) rules.push({ domainSuffix: [`site${i}.example${i % 7}.net`], upstream: `up${i % 13}` })
  rules.push({ cidr: ['10.0.0.0/8'], upstream: 'ten' })
  rules.push({ domainSuffix: ['net'], upstream: 'net' })
  const built = performance.now()
  const set = new RuleSet(rules)
  const compiled = performance.now()
  let wrong = 0
  for (let i = 0; i < n; i++) {
    const m = i % 4
    const flow =
      m === 0
        ? tcp('1.2.3.4', 443, `h${i % 5}.site${i}.example${i % 7}.net`)
        : m === 1
          ? tcp('1.2.3.4', 443, `SITE${i}.example${i % 7}.net.`)
          : m === 2
            ? tcp('10.2.3.4', 443, `badsite${i}.example${i % 7}.net`) // lookalike: falls to the CIDR rule
            : tcp('1.2.3.4', 443, `site${i}.example${(i + 1) % 7}.net`) // other parent: falls to 'net'
    const want =
      m <= 1
        ? { upstream: `up${i % 13}`, index: i }
        : m === 2
          ? { upstream: 'ten', index: n }
          : { upstream: 'net', index: n + 1 }
    const got = set.match(flow)
    if (got.index !== want.index || got.upstream !== want.upstream) wrong++
  }
  const matched = performance.now()
  t.is(wrong, 0)
  t.is(set.size, n + 2)
  t.log(`compile ${(compiled - built).toFixed(1)} ms; ${n} matches ${(matched - compiled).toFixed(1)} ms`)
})

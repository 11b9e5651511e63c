// `console.log(tun)`: name, index, mode, MTU and state, through util.inspect.custom: on the in-memory pair (no
// privileges) and on a real device.
import test from 'ava'
import { inspect } from 'node:util'
import { Tun } from '../index.ts'
import { devName, deviceTest } from './helpers/device.ts'

test('util.inspect(tun) shows name, index, mode, MTU and state', async (t) => {
  const [a, b] = Tun.createMemoryPair({ mtu: 1400 })
  t.is(inspect(a), `Tun { name: '${a.name}', index: ${a.index}, mode: 'tun', mtu: 1400, state: 'up' }`)
  t.regex(inspect(a, { colors: true }), /\u001b\[/, 'the options (colors) are passed on')
  t.is(inspect({ deep: { deeper: { tun: a } } }), '{ deep: { deeper: { tun: [Tun] } } }')
  await a.close()
  t.regex(inspect(a), /^Tun \{[^}]*name: 'mem\d+',[^}]*mtu: undefined,[^}]*state: 'closed'\s*\}$/)
  await b.close()
})

deviceTest('util.inspect of a real device: its kernel name, index, MTU and link state', async (t) => {
  const tun = await Tun.create({ name: devName('insp'), mtu: 1420 })
  t.teardown(() => tun.close())
  const shown = (state: string) =>
    `Tun { name: '${tun.name}', index: ${tun.index}, mode: 'tun', mtu: 1420, state: '${state}' }`
  t.true(tun.index > 0)
  const first = inspect(tun)
  t.true(first === shown('up') || first === shown('down'), first)
  await tun.down()
  t.is(inspect(tun), shown('down'))
  await tun.up()
  t.is(inspect(tun), shown('up'))
  await tun.close()
  t.regex(inspect(tun), /state: 'closed'/)
})

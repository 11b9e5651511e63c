/**
 * Gate for tests that create real devices. They run only inside the private network namespace that
 * `scripts/netns.mjs` makes (TUNKIT_NETNS=1), and only if a throwaway device can actually be created there (a real
 * capability probe, not a check for /dev/net/tun). With TUNKIT_REQUIRE_DEVICE=1 a failed probe fails every device
 * test instead of skipping it.
 */
import anyTest, { type TestFn } from 'ava'
import { Tun } from '../../index.ts'

const test = anyTest as TestFn

async function probe(): Promise<string | null> {
  if (process.platform !== 'linux') return `device tests run on Linux here (platform ${process.platform})`
  if (process.env.TUNKIT_NETNS !== '1') {
    return 'not inside a private network namespace made by scripts/netns.mjs (run `npm test`)'
  }
  try {
    const t = await Tun.create({ name: 'tkprobe%d' })
    await t.close()
    return null
  } catch (e) {
    const err = e as Error & { code?: string }
    return `cannot create a TUN device: ${err.code ?? ''} ${err.message}`
  }
}

const reason = await probe()
const required = process.env.TUNKIT_REQUIRE_DEVICE === '1'

/** `test.serial` when devices can be created; otherwise a skip with the reason, or a failure when required. */
type Impl = (t: import('ava').ExecutionContext) => Promise<void> | void
export const deviceTest = (title: string, impl: Impl): void => {
  if (reason === null) return test.serial(title, impl)
  if (required) return test.serial(title, (t) => t.fail(`TUNKIT_REQUIRE_DEVICE=1 but ${reason}`))
  return test.serial.skip(`${title} (skipped: ${reason})`, impl)
}

export const canCreateDevices = reason === null

/**
 * `deviceTest` for a test with a precondition of its own beyond devices (`unmet`: why it cannot run here, or null):
 * skipped with that reason when unmet, so that a missing precondition never shows as a pass.
 */
export const deviceTestIf = (unmet: string | null, title: string, impl: Impl): void => {
  if (unmet !== null && reason === null) return test.serial.skip(`${title} (skipped: ${unmet})`, impl)
  return deviceTest(title, impl)
}

/** Unique names per test file and test: `tk<file tag><n>`. */
let counter = 0
export function devName(tag: string): string {
  return `tk${tag}${counter++}`
}

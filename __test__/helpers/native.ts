/**
 * The test addon: the binding built with tunkit-core's fault injection points (`--features test-hooks`) by
 * `npm run build:test-native` (which `npm test` runs first). Tests load it in a child process through
 * `TUNKIT_NATIVE_PATH` and arm points with `TUNKIT_TEST_FAULTS`; the release addon ignores both points and variable.
 */
import { existsSync } from 'node:fs'
import { fileURLToPath } from 'node:url'

/** Where scripts/build-test-native.mjs puts the test addon. */
export const TEST_NATIVE = fileURLToPath(new URL('../../target/test-hooks/tunkit.test.node', import.meta.url))

/** The test addon's path; throws, saying how to build it, when it was not built. */
export function testNative(): string {
  if (!existsSync(TEST_NATIVE)) {
    throw new Error(
      `the test addon ${TEST_NATIVE} is missing: run \`npm run build:test-native\` (npm test builds it before ava)`,
    )
  }
  return TEST_NATIVE
}

/** An environment for a child process that loads the test addon with the fault injection points `faults` armed. */
export function faultEnv(faults: string[], base: NodeJS.ProcessEnv = process.env): NodeJS.ProcessEnv {
  return { ...base, TUNKIT_NATIVE_PATH: testNative(), TUNKIT_TEST_FAULTS: faults.join(',') }
}

/**
 * Examples create real devices and send real packets, so they run inside a private network namespace: when started
 * outside one, this re-runs the example through scripts/netns.mjs and exits with its status.
 */
import { spawnSync } from 'node:child_process'
import { fileURLToPath } from 'node:url'

export function ensureNetns(exampleUrl: string): void {
  if (process.env.TUNKIT_NETNS === '1') return
  const script = fileURLToPath(new URL('../scripts/netns.mjs', import.meta.url))
  const r = spawnSync(
    process.execPath,
    [script, process.execPath, '--import', 'tsx', fileURLToPath(exampleUrl), ...process.argv.slice(2)],
    {
      stdio: 'inherit',
    },
  )
  process.exit(r.status ?? 1)
}

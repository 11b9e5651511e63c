/**
 * What a user gets from npm: the main package and this platform's package packed with `npm pack` and installed into
 * a scratch project offline, with an empty npm cache (so nothing can come from the registry). Used by the pack test
 * and by the tests that run the `tunkit` command exactly as a user would (`npx tunkit ...` from that project).
 */
import { spawnSync } from 'node:child_process'
import { copyFileSync, cpSync, existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs'
import { createRequire } from 'node:module'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'

export const root = join(dirname(fileURLToPath(import.meta.url)), '..', '..')
export const { triple } = createRequire(import.meta.url)(join(root, 'binding.cjs')) as { triple: string }
export const pkg = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8')) as { name: string; version: string }

/** Runs a command; throws with its output when it fails. */
export function run(cmd: string, args: string[], cwd: string, env: NodeJS.ProcessEnv = {}): string {
  const r = spawnSync(cmd, args, { cwd, encoding: 'utf8', env: { ...process.env, ...env }, timeout: 120_000 })
  if (r.status !== 0) {
    throw new Error(
      `${cmd} ${args.join(' ')} (in ${cwd}) failed with ${r.status ?? r.signal}:\n${r.stdout}\n${r.stderr}`,
    )
  }
  return r.stdout
}

/** `npm pack` of `dir` into `dest`; returns the tarball's path. Lifecycle scripts are skipped (`prepare` builds). */
function pack(dir: string, dest: string): string {
  const out = run('npm', ['pack', '--ignore-scripts', '--json', '--pack-destination', dest], dir)
  const [info] = JSON.parse(out) as { filename: string }[]
  return join(dest, info!.filename)
}

export interface Installed {
  /** The scratch project with both packages in its node_modules. */
  app: string
  mainTgz: string
  platformTgz: string
}

/**
 * Packs both packages into `work` (the platform package as the release workflow fills it: the generated
 * `npm/<triple>` directory plus the binary) and installs them into `work/app`, offline with an empty cache. Needs
 * `npm run build` first.
 */
export function packAndInstall(work: string): Installed {
  const native = join(root, `tunkit.${triple}.node`)
  const platformDir = join(root, 'npm', triple)
  for (const [path, what] of [
    [join(root, 'dist', 'index.js'), 'dist/ (npm run build)'],
    [native, `${native} (npm run build)`],
    [join(platformDir, 'package.json'), `npm/${triple} (napi create-npm-dirs)`],
  ] as const) {
    if (!existsSync(path)) throw new Error(`packAndInstall: ${what} is missing`)
  }
  const mainTgz = pack(root, work)
  const platformCopy = join(work, `platform-${triple}`)
  cpSync(platformDir, platformCopy, { recursive: true })
  copyFileSync(native, join(platformCopy, `tunkit.${triple}.node`))
  if (process.platform === 'win32' && existsSync(join(root, 'wintun.dll'))) {
    copyFileSync(join(root, 'wintun.dll'), join(platformCopy, 'wintun.dll'))
    run('npm', ['pkg', 'set', 'files[]=wintun.dll'], platformCopy)
  }
  const platformTgz = pack(platformCopy, work)
  const app = join(work, 'app')
  mkdirSync(app)
  writeFileSync(join(app, 'package.json'), JSON.stringify({ name: 'app', version: '1.0.0', private: true }))
  run(
    'npm',
    ['install', '--offline', '--no-audit', '--no-fund', '--cache', join(work, 'npm-cache'), mainTgz, platformTgz],
    app,
  )
  return { app, mainTgz, platformTgz }
}

/** The command line of `npx tunkit ...` as a user types it, resolved offline from the installed package. */
export function npxTunkit(args: string[]): string[] {
  return ['npx', '--offline', '--no-install', 'tunkit', ...args]
}

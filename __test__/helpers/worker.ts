/**
 * `worker_threads` workers running a TypeScript file.
 *
 * Under Node 20, `new Worker(url, { execArgv: ['--import', 'tsx'] })` does not help: the worker's entry module is
 * resolved by Node's default loader and fails with ERR_UNKNOWN_FILE_EXTENSION (checked with Node 20.20 and tsx 4).
 * So the worker starts from a two-line bootstrap (evaluated as CommonJS) that registers tsx's ESM hooks in the
 * worker through `tsx/esm/api` and then imports the .ts file. Compiled JavaScript needs none of this.
 */
import { Worker, type WorkerOptions } from 'node:worker_threads'

const tsxApi = import.meta.resolve('tsx/esm/api')

/** Starts a worker running the TypeScript module at `file` (a `file:` URL). */
export function tsWorker(file: URL, options: Omit<WorkerOptions, 'eval'> = {}): Worker {
  const boot = `import(${JSON.stringify(tsxApi)}).then(({ register }) => { register(); return import(${JSON.stringify(file.href)}) })`
  return new Worker(boot, { ...options, eval: true })
}

/** Resolves with the first message from `w` that `match` accepts; rejects on a worker error, exit or after `ms`. */
export function nextMessage<T>(w: Worker, match: (m: unknown) => m is T, ms: number, what: string): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    const timer = setTimeout(() => done(new Error(`timed out after ${ms} ms waiting for ${what}`)), ms)
    const onMessage = (m: unknown) => {
      if (match(m)) done(undefined, m)
    }
    const onError = (e: Error) => done(e)
    const onExit = (code: number) => done(new Error(`worker exited (${code}) before ${what}`))
    function done(err?: Error, value?: T) {
      clearTimeout(timer)
      w.off('message', onMessage)
      w.off('error', onError)
      w.off('exit', onExit)
      if (err) reject(err)
      else resolve(value as T)
    }
    w.on('message', onMessage)
    w.on('error', onError)
    w.on('exit', onExit)
  })
}

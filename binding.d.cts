/**
 * The native addon of this platform, as `binding.cjs` loads it. Internal: the API is `tunkit`'s `Tun`, `Stack` and
 * the rest; this entry exists for tunkit's own modules and is not covered by semver.
 *
 * When this platform's package is missing, of another version than tunkit, or does not load, it has `loadError`: an
 * `Error` with `code` `'ERR_TUN_NO_BINDING'` and the original error as `cause`.
 *
 * @internal
 */
declare const binding: {
  /** The platform this addon was picked for, e.g. `'linux-x64-gnu'`. */
  readonly triple: string
  /** Set instead of the addon's functions when no binding could be loaded (and then thrown by `src/native.ts`). */
  readonly loadError?: Error & { code: 'ERR_TUN_NO_BINDING'; cause?: unknown }
  readonly [name: string]: unknown
}
export = binding

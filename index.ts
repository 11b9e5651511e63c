/**
 * tunkit: TUN/TAP virtual network interfaces for Node.js, with a Rust core and a batched zero-copy packet ring.
 *
 * @packageDocumentation
 */
export { Tun, TunQueue, DEFAULT_TX_QUEUE_LENGTH } from './src/tun.js'
export type {
  TunOptions,
  RouteSpec,
  AddressInfo,
  TunStats,
  LinkState,
  EventOptions,
  OffloadOptions,
} from './src/tun.js'
export type { LinkEvent } from './src/events.js'
export type { RingOptions, IterateOptions, QueueStats } from './src/queue.js'
export { Stack, UdpSession } from './src/stack.js'
export type {
  StackOptions,
  StackConnection,
  UdpMessage,
  Endpoint,
  ConnectRequest,
  AcceptDecision,
  StackStats,
  RelayOptions,
  RelayResult,
} from './src/stack.js'
export { TunError } from './src/errors.js'
export type { TunErrorCode } from './src/errors.js'
export * as packet from './src/packet.js'

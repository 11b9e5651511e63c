/** Typed view of the native addon (`crates/tunkit-napi`). Internal: the public API is `Tun`. */
import { createRequire } from 'node:module'
import type { QueueStats, RingOptions } from './queue.js'
import type { RoutingRule } from './routing.js'
import type { AddressInfo, RouteSpec, TunOptions } from './tun.js'

/** Opaque handle of a device. */
export type DeviceHandle = { readonly __device: unique symbol }
/** Opaque handle of one queue's ring. */
export type QueueHandle = { readonly __queue: unique symbol }
/** Opaque handle of a link-event subscription. */
export type EventsHandle = { readonly __events: unique symbol }

/** A change on the link. */
export type NativeLinkEvent =
  | { type: 'up' }
  | { type: 'down' }
  | { type: 'mtu'; mtu: number }
  | { type: 'address-added'; address: AddressInfo }
  | { type: 'address-removed'; address: AddressInfo }
  /**
   * Events were lost: more than 1024 waited while nobody took them (nobody called `next()`, or JavaScript was
   * busy), and the `lost` oldest were dropped. The events after it are the newest ones, in order; the state of the
   * link may have changed in ways they do not show, so read it again (`tun.link()`, `tun.addresses()`) if it matters.
   */
  | { type: 'overflow'; lost: number }

/** `createDevice` takes the options of `Tun.create` (less the ring's, which go to `openQueue`), plus `Tun.open`'s flag. */
export type NativeDeviceOptions = Omit<TunOptions, 'ring'> & { openExisting?: boolean }

export interface NativeLink {
  name: string
  index: number
  mtu: number
  up: boolean
  txQueueLength: number
  mac?: string
  stats: {
    rxPackets: number
    txPackets: number
    rxBytes: number
    txBytes: number
    rxDropped: number
    txDropped: number
    rxErrors: number
    txErrors: number
  }
}

/** Event codes the ring sends to `onEvent`. */
export const EVENT_READABLE = 1
export const EVENT_WRITABLE = 2
export const EVENT_ENDED = 3
export const EVENT_NOTICE = 4

export interface NativeBinding {
  triple: string
  createDevice(opts: NativeDeviceOptions): DeviceHandle
  createMemoryPair(mtu: number, capacity: number): [DeviceHandle, DeviceHandle]
  fromFd(fd: number, mode: 'tun' | 'tap' | undefined, ring: RingOptions): DeviceHandle
  deviceInfo(dev: DeviceHandle): { name: string; index: number; mode: 'tun' | 'tap'; queues: number }
  link(dev: DeviceHandle): NativeLink
  setMtu(dev: DeviceHandle, mtu: number): void
  setUp(dev: DeviceHandle, up: boolean): void
  setTxQueueLength(dev: DeviceHandle, n: number): void
  setMac(dev: DeviceHandle, mac: string): void
  setPersist(dev: DeviceHandle, persist: boolean): void
  addAddress(dev: DeviceHandle, cidr: string, opts?: { peer?: string }): void
  removeAddress(dev: DeviceHandle, cidr: string): void
  addresses(dev: DeviceHandle): AddressInfo[]
  addRoute(dev: DeviceHandle, route: RouteSpec): void
  removeRoute(dev: DeviceHandle, route: RouteSpec): void
  routes(dev: DeviceHandle): RouteSpec[]
  addRule(rule: RoutingRule): void
  removeRule(rule: RoutingRule): void
  /** Every rule has its `family`. */
  rules(family: 4 | 6 | undefined): RoutingRule[]
  closeDevice(dev: DeviceHandle): void
  openQueue(dev: DeviceHandle, index: number, opts: RingOptions, onEvent: (code: number) => void): QueueHandle
  pull(q: QueueHandle, lens: Uint32Array): ArrayBuffer | null | undefined
  /** 0: taken; 1: taken, but the ring is over its budget (an EVENT_WRITABLE follows). Throws when nothing was taken. */
  send(q: QueueHandle, packets: Uint8Array | readonly Uint8Array[]): 0 | 1
  /** Detaches a pulled batch's ArrayBuffer so that its memory returns at once (no view of it may be in use). */
  releaseBatch(ab: ArrayBuffer): void
  setRef(q: QueueHandle, ref: boolean): void
  queueStats(q: QueueHandle): QueueStats
  takeWriteError(q: QueueHandle): { code: string; message: string; errno?: number; syscall?: string } | undefined
  takeNotices(q: QueueHandle): string[]
  closeQueue(q: QueueHandle): void
  detachQueue(dev: DeviceHandle, index: number): number
  attachQueue(token: number, opts: RingOptions, onEvent: (code: number) => void): [DeviceHandle, QueueHandle]
  subscribeEvents(dev: DeviceHandle, onEvent: (code: number) => void): EventsHandle
  takeEvents(sub: EventsHandle): NativeLinkEvent[] | undefined
  setEventsRef(sub: EventsHandle, ref: boolean): void
  closeEvents(sub: EventsHandle): void
  stackCreate(queues: QueueHandle[], opts: NativeStackOptions, onEvent: (code: number) => void): StackHandle
  stackLookup(s: StackHandle, address: string, port: number): { source: Endpoint; destination: Endpoint } | null
  stackRelease(s: StackHandle, address: string, port: number): void
  /**
   * `[payloads, meta]`: meta is flat, `[session, length, destAddress, destPort, clientAddress | null, clientPort,
   * segmentSize]` each.
   */
  stackTakeDatagrams(s: StackHandle): [Buffer, (number | string | null)[]] | null
  stackSendUdp(
    s: StackHandle,
    q: QueueHandle,
    session: number,
    address: string,
    port: number,
    data: Uint8Array,
  ): boolean
  stackRefuseUdp(
    s: StackHandle,
    q: QueueHandle,
    session: number,
    address: string,
    port: number,
    data: Uint8Array,
  ): boolean
  stackCloseUdp(s: StackHandle, session: number): void
  /** Flat: `[flow, clientAddress, clientPort, destAddress, destPort]` per held SYN. */
  stackTakeRequests(s: StackHandle): (number | string)[] | null
  stackDecide(s: StackHandle, q: QueueHandle, flow: number, decision: 'accept' | 'reset' | 'unreachable'): boolean
  /** `[endedUdpSessions, notice, expiredHolds]`. */
  stackTick(s: StackHandle): [number[], string | undefined, number[]]
  stackStats(s: StackHandle): Record<string, number>
  stackSetRef(s: StackHandle, ref: boolean): void
  stackClose(s: StackHandle): void
  relayCreate(onEvent: (code: number) => void, maxPairs: number): RelayHandle
  relayAdd(
    r: RelayHandle,
    fdA: number,
    fdB: number,
    opts: { idleMs?: number; aWriteClosed?: boolean; bWriteClosed?: boolean },
  ): number
  /** `[sent, received]`, or `null` when the pair had ended already (its record comes from `relayTake`). */
  relayCancel(r: RelayHandle, id: number): [number, number] | null
  /** Flat: `[id, sent, received, reason, errno]` per ended pair. */
  relayTake(r: RelayHandle): (number | string)[] | null
  relaySetRef(r: RelayHandle, ref: boolean): void
  relayClose(r: RelayHandle): void
}

/** Opaque handle of a relay thread (the stack's splice fast path). */
export type RelayHandle = { readonly __relay: unique symbol }

/** Opaque handle of a forwarding stack. */
export type StackHandle = { readonly __stack: unique symbol }

/** An IP endpoint. */
export interface Endpoint {
  address: string
  port: number
  family: 4 | 6
}

/** One address family of the stack: the device's own address (the kernel listener's), the NAT addresses, the prefix. */
export interface NativeStackFamily {
  gateway: string
  nat: string[]
  prefix: number
}

export interface NativeStackOptions {
  v4?: NativeStackFamily
  v6?: NativeStackFamily
  listenPort: number
  tcp: boolean
  udp: boolean
  icmp: 'reply' | 'drop' | 'pass'
  maxTcpFlows?: number
  maxUdpSessions?: number
  udpIdleMs?: number
  tcpSynIdleMs?: number
  quarantineMs?: number
  holdSyn?: boolean
  holdTimeoutMs?: number
  udpGso?: 'split' | 'pass'
}

const require = createRequire(import.meta.url)

/** The loaded addon. Loading throws `ERR_TUN_NO_BINDING` with the list of what was tried. */
export const binding: NativeBinding = require('tunkit/binding')

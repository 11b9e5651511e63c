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
export { addRoutingRule, removeRoutingRule, routingRules } from './src/routing.js'
export type { RoutingRule, RoutingRulesOptions } from './src/routing.js'
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
export { Proxy, parseResolver } from './src/proxy/proxy.js'
export type { ProxyOptions, ProxyDnsOptions, ProxyStats, Upstream, FlowEvent, RouteRequest } from './src/proxy/proxy.js'
export { RuleSet, parseRules } from './src/proxy/rules.js'
export type { Rule, Flow as RuleFlow } from './src/proxy/rules.js'
export { socks5Connect, socks5UdpAssociate, UpstreamError } from './src/proxy/socks5.js'
export type { Socks5Server, Socks5Udp, Target } from './src/proxy/socks5.js'
export { httpConnect } from './src/proxy/http-connect.js'
export type { HttpProxyServer } from './src/proxy/http-connect.js'
export { FakeIpPool } from './src/proxy/fakeip.js'
export { TunError } from './src/errors.js'
export type { TunErrorCode } from './src/errors.js'
export * as packet from './src/packet.js'

// fastify-redis-broadcast/client: the same code in browsers and Node, with no dependencies.
export { BroadcastClient } from './client.js'
export type { BroadcastClientOptions, ClientEvents, CloseInfo, ConnectionState, HistoryAnswer, PresenceAnswer, TokenSource, WebSocketClass } from './client.js'
export type { Subscription } from './subscription.js'
export { BroadcastError } from './errors.js'
export { createPublisher } from './publisher.js'
export type { Publisher, PublisherOptions, PublishMessage, PublishOptions, PublishResult } from './publisher.js'
export type { Filter, MessageInfo, Position, PresenceEvent, ResetInfo, SubscribedInfo, SubscribeOptions, SubscriptionHandlers, Tags } from './types.js'

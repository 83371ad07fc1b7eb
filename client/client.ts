import { backoff } from './backoff.js'
import { BroadcastError } from './errors.js'
import { Emitter } from './emitter.js'
import { ChannelSubscription, type Subscription } from './subscription.js'
import { tokenExpiry } from './token.js'
import { httpUrl } from './url.js'
import type { ServerFrame, SubscribeOptions, SubscriptionHandlers } from './types.js'

/** The WebSocket class to connect with: the browser's, or the `ws` package's in Node 20 (which has none built in). */
export type WebSocketClass = new (url: string, protocols?: string[]) => unknown

/** A connect token, or a function that makes one (called at each connect, and before the token expires). */
export type TokenSource = string | (() => string | Promise<string>)

export interface BroadcastClientOptions {
  /** @default globalThis.WebSocket */
  WebSocket?: WebSocketClass
  /** Sent as the `bearer` subprotocol, and as `Authorization: Bearer` by `presence()` and `history()`. */
  token?: TokenSource
  /** Back-off of the reconnects (and of a subscribe retried after `FRB_BUS_UNAVAILABLE`): the first delay's cap, in ms. @default 500 */
  minReconnectDelay?: number
  /** The largest delay between two attempts, in ms. @default 20000 */
  maxReconnectDelay?: number
  /** An attempt not open after this long is given up (a link that swallows the upgrade never fails on its own), in ms. @default 10000 */
  connectTimeout?: number
  /** With no frame from the hub for this long, the client sends a ping, in ms. @default 25000 */
  pingInterval?: number
  /** With no frame at all this long after that ping, the link is taken for dead and replaced, in ms. @default 10000 */
  pongTimeout?: number
  /** With a token function, a JWT is refreshed this long before its `exp` (at half its life left, if that is later), in ms. @default 10000 */
  refreshBefore?: number
  /** The presence route's base path, or a whole URL. @default '/presence' */
  presencePath?: string
  /** The history route's base path, or a whole URL. @default '/history' */
  historyPath?: string
}

export type ConnectionState = 'connecting' | 'connected' | 'disconnected'

export interface CloseInfo {
  code: number
  reason: string
}

// A type, not an interface: the emitter needs the index signature a type literal has implicitly.
export type ClientEvents = {
  connecting: []
  connected: []
  /** Every connection that ends, and every attempt that fails, with the close code and reason. */
  disconnected: [CloseInfo]
  /** A refusal that stopped the client, a refused refresh, or an error frame about no subscription. */
  error: [BroadcastError]
  /** A message published to everyone (no channel). */
  message: [unknown]
}

export interface PresenceAnswer {
  channel: string
  count: number
  members: unknown[]
}

export interface HistoryAnswer {
  channel: string
  epoch: string | null
  offset: number
  messages: ServerFrame[]
}

/** The parts of a WebSocket the client uses; the browser's and ws's both have them. */
interface Socket {
  readyState: number
  send (text: string): void
  close (code?: number, reason?: string): void
  /** ws only: drops the TCP connection without a closing handshake. */
  terminate?: () => void
  onopen: (() => void) | null
  onmessage: ((event: { data: unknown }) => void) | null
  onclose: ((event: { code: number, reason: string }) => void) | null
  onerror: ((event: { message?: string }) => void) | null
}

const OPEN = 1
// Refusals that retrying will not change: unsupported data, a policy violation (frame rate), a
// frame too large; and 4403, the back end closing this identity's connections (POST /disconnect:
// a logout, a ban), which a reconnect with the same token would undo.
const FINAL_CLOSE_CODES = [1003, 1008, 1009, 4403]
// A connection up this long was a success: the back-off starts again from its first step.
const STABLE_AFTER = 5000

/**
 * A connection to the hub that survives what networks and servers do: it reconnects with
 * back-off, resumes every subscription from the last offset seen, drops what arrives twice,
 * refreshes its token before it expires, and replaces a link that went silent.
 */
export class BroadcastClient extends Emitter<ClientEvents> {
  state: ConnectionState = 'disconnected'
  private readonly options: Required<Omit<BroadcastClientOptions, 'token'>> & Pick<BroadcastClientOptions, 'token'>
  private readonly subscriptions = new Map<string, ChannelSubscription>()
  private socket: Socket | undefined
  private openedAt = 0
  /** The token of the current connection (replaced at each `refreshed`), and the one being refreshed to. */
  private token: string | undefined
  private nextToken: string | undefined
  private attempt = 0
  /** An upgrade refused with 401/403 is retried once, with a fresh token. */
  private authRefused = false
  private stopped = true
  /** Bumped by connect() and close(), so an attempt started before either goes no further. */
  private generation = 0
  private reconnectTimer: ReturnType<typeof setTimeout> | undefined
  private livenessTimer: ReturnType<typeof setTimeout> | undefined
  private refreshTimer: ReturnType<typeof setTimeout> | undefined

  constructor (readonly url: string, options: BroadcastClientOptions = {}) {
    super()
    this.options = {
      WebSocket: (globalThis as { WebSocket?: WebSocketClass }).WebSocket as WebSocketClass,
      minReconnectDelay: 500,
      maxReconnectDelay: 20_000,
      connectTimeout: 10_000,
      pingInterval: 25_000,
      pongTimeout: 10_000,
      refreshBefore: 10_000,
      presencePath: '/presence',
      historyPath: '/history',
      ...options
    }
    if (this.options.WebSocket === undefined) throw new TypeError('no WebSocket class: in Node 20, pass the ws package as the WebSocket option')
    this.connect()
  }

  /** Subscribes to a channel, now or at the next connect, and keeps it through every reconnect. */
  subscribe (channel: string, handlers: SubscriptionHandlers = {}, options: SubscribeOptions = {}): Subscription {
    if (this.subscriptions.has(channel)) throw new BroadcastError(`already subscribed to ${channel}`, undefined, undefined, channel)
    const subscription = new ChannelSubscription(channel, handlers, options.filter, () => {
      if (this.subscriptions.get(channel) !== subscription) return
      this.subscriptions.delete(channel)
      subscription.end(new BroadcastError('unsubscribed', undefined, undefined, channel))
      this.send({ type: 'unsubscribe', channel })
    })
    this.subscriptions.set(channel, subscription)
    this.send(subscription.frame())
    return subscription
  }

  /** Starts connecting again after the client stopped (a refusal) or was closed; the constructor calls it. */
  connect (): void {
    if (!this.stopped) return
    this.stopped = false
    const generation = ++this.generation
    // On the next tick, once the caller has added its listeners (unless it closed the client first).
    queueMicrotask(() => { if (generation === this.generation) void this.open() })
  }

  /** Disconnects for good: no reconnect, and every subscription ends. */
  close (): void {
    this.stopped = true
    this.generation++
    clearTimeout(this.reconnectTimer)
    const { socket } = this
    if (socket !== undefined) {
      socket.close(1000)
      this.closed(1000, 'closed by the client')
    } else if (this.state !== 'disconnected') this.change('disconnected', { code: 1000, reason: 'closed by the client' })
    for (const subscription of this.subscriptions.values()) subscription.end(new BroadcastError('the client was closed', undefined, undefined, subscription.channel))
    this.subscriptions.clear()
  }

  /** Who is on the channel, on any instance (`GET /presence/:channel`). */
  async presence (channel: string): Promise<PresenceAnswer> {
    return await this.get(this.options.presencePath, channel, '') as PresenceAnswer
  }

  /** What the channel's history holds after `since` (`GET /history/:channel`). */
  async history (channel: string, { since = 0, limit = 100, reverse = false } = {}): Promise<HistoryAnswer> {
    return await this.get(this.options.historyPath, channel, `?since=${since}&limit=${limit}&reverse=${Number(reverse)}`) as HistoryAnswer
  }

  private async get (path: string, channel: string, query: string): Promise<unknown> {
    const token = this.token ?? await this.fetchToken()
    const response = await fetch(httpUrl(this.url, `${path}/${encodeURIComponent(channel)}${query}`),
      token === undefined ? {} : { headers: { authorization: `Bearer ${token}` } })
    const body = await response.json() as { code?: string, message?: string }
    if (!response.ok) throw new BroadcastError(body.message ?? response.statusText, body.code, response.status, channel)
    return body
  }

  private async fetchToken (): Promise<string | undefined> {
    const { token } = this.options
    return typeof token === 'function' ? await token() : token
  }

  private async open (): Promise<void> {
    const generation = this.generation
    this.change('connecting')
    let token: string | undefined
    try {
      token = await this.fetchToken()
    } catch (err) {
      if (generation !== this.generation) return
      this.emit('error', new BroadcastError(`token() failed: ${(err as Error).message}`))
      this.change('disconnected', { code: 1006, reason: 'no token' })
      return this.reconnect()
    }
    if (generation !== this.generation) return
    this.token = token
    let socket: Socket
    try {
      socket = new this.options.WebSocket(this.url, token === undefined ? undefined : ['bearer', token]) as Socket
    } catch (err) {
      // A malformed URL, or a token that cannot be a subprotocol: no retry will fix either.
      this.change('disconnected', { code: 1006, reason: (err as Error).message })
      return this.stop(new BroadcastError((err as Error).message))
    }
    this.socket = socket
    this.openedAt = 0
    this.livenessTimer = setTimeout(() => this.drop(1006, 'not open within connectTimeout'), this.options.connectTimeout)
    let failure = ''
    // Every handler stays attached for the socket's whole life (ws throws an error event that has
    // no listener); once the socket is no longer the current one, its events are ignored.
    const current = <A extends unknown[]>(handler: (...args: A) => void) => (...args: A): void => {
      if (socket === this.socket) handler(...args)
    }
    socket.onopen = current(() => {
      this.openedAt = Date.now()
      this.authRefused = false
      this.change('connected')
      this.alive()
      this.armRefresh(token)
      for (const subscription of this.subscriptions.values()) {
        clearTimeout(subscription.retry)
        this.send(subscription.frame())
      }
    })
    socket.onmessage = current(({ data }: { data: unknown }) => {
      this.alive()
      this.receive(String(data))
    })
    // A browser's error event says nothing; ws's says why the upgrade failed.
    socket.onerror = ({ message }) => { failure = message ?? '' }
    socket.onclose = current(({ code, reason }: { code: number, reason: string }) => this.closed(code, reason === '' ? failure : reason))
  }

  private closed (code: number, reason: string): void {
    const { openedAt } = this
    this.socket = undefined
    clearTimeout(this.livenessTimer)
    clearTimeout(this.refreshTimer)
    for (const subscription of this.subscriptions.values()) clearTimeout(subscription.retry)
    this.change('disconnected', { code, reason })
    if (this.stopped) return
    if (openedAt > 0 && Date.now() - openedAt >= STABLE_AFTER) this.attempt = 0
    // ws says why an upgrade failed ("Unexpected server response: 401"); a browser cannot know.
    const status = openedAt > 0 ? 0 : Number(/response: (\d+)/.exec(reason)?.[1] ?? 0)
    if (status === 401 || status === 403) {
      // A token function may have a better token now; a second refusal in a row means no.
      if (typeof this.options.token === 'function' && !this.authRefused) {
        this.authRefused = true
        return this.reconnect()
      }
      return this.stop(new BroadcastError(`the hub refused the connection with ${status}`, undefined, status))
    }
    if (status >= 400 && status < 500 && status !== 408 && status !== 429) {
      return this.stop(new BroadcastError(`the hub refused the connection with ${status}`, undefined, status))
    }
    if (openedAt > 0 && FINAL_CLOSE_CODES.includes(code)) return this.stop(new BroadcastError(`the hub closed the connection with ${code}: ${reason}`))
    this.reconnect()
  }

  private stop (error: BroadcastError): void {
    this.stopped = true
    this.emit('error', error)
  }

  private reconnect (): void {
    const { minReconnectDelay, maxReconnectDelay } = this.options
    this.reconnectTimer = setTimeout(() => { void this.open() }, backoff(this.attempt++, minReconnectDelay, maxReconnectDelay))
  }

  private change (state: ConnectionState, close?: CloseInfo): void {
    this.state = state
    if (close !== undefined) this.emit('disconnected', close)
    else this.emit(state as 'connecting' | 'connected')
  }

  private send (frame: string | object): void {
    if (this.socket?.readyState === OPEN) this.socket.send(typeof frame === 'string' ? frame : JSON.stringify(frame))
  }

  /** Any frame proves the link works; a silent one gets a ping, and one silent after it is dropped. */
  private alive (): void {
    const { pingInterval, pongTimeout } = this.options
    clearTimeout(this.livenessTimer)
    this.livenessTimer = setTimeout(() => {
      this.send({ type: 'ping' })
      this.livenessTimer = setTimeout(() => this.drop(1006, 'no answer to a ping'), pongTimeout)
    }, pingInterval)
  }

  /** A half-open link never reports its close: the socket is dropped without waiting for one. */
  private drop (code: number, reason: string): void {
    const socket = this.socket as Socket
    if (socket.terminate !== undefined) socket.terminate()
    else socket.close()
    this.closed(code, reason)
  }

  private armRefresh (token: string | undefined): void {
    clearTimeout(this.refreshTimer)
    const expiry = token === undefined ? undefined : tokenExpiry(token)
    if (typeof this.options.token !== 'function' || expiry === undefined) return
    const left = expiry - Date.now()
    this.refreshTimer = setTimeout(() => { void this.refresh() }, Math.max(left - this.options.refreshBefore, left / 2))
  }

  private async refresh (): Promise<void> {
    const { socket } = this
    try {
      const token = await this.fetchToken()
      if (socket !== this.socket) return
      this.nextToken = token
      this.send({ type: 'refresh', token })
    } catch (err) {
      this.emit('error', new BroadcastError(`token() failed: ${(err as Error).message}`))
    }
  }

  private receive (text: string): void {
    let frame: ServerFrame
    try {
      frame = JSON.parse(text) as ServerFrame
    } catch {
      return this.emit('error', new BroadcastError(`a frame that is not JSON: ${text.slice(0, 64)}`))
    }
    const subscription = frame.channel === undefined ? undefined : this.subscriptions.get(frame.channel)
    switch (frame.type) {
      case 'message':
        if (frame.channel === undefined) this.emit('message', frame.data)
        else if (subscription?.message(frame) === true) this.send(subscription.frame())
        break
      case 'subscribed':
        if (subscription?.subscribed(frame) === true) this.send(subscription.frame())
        break
      case 'gap':
        // This instance lost messages it could not read back: a resume asks the history for them.
        if (subscription !== undefined) this.send(subscription.frame())
        break
      case 'join':
      case 'leave':
        subscription?.presence(frame)
        break
      case 'refreshed':
        this.token = this.nextToken
        this.armRefresh(this.token)
        break
      case 'error':
        this.refused(frame, subscription)
        break
    }
  }

  private refused ({ code, message, channel }: ServerFrame, subscription: ChannelSubscription | undefined): void {
    const error = new BroadcastError(message ?? '', code, undefined, channel)
    if (subscription === undefined) return this.emit('error', error)
    if (code === 'FRB_BUS_UNAVAILABLE') {
      // Redis will be back: ask again later. The hub may also complete the subscription on its own
      // when it is; a second `subscribed` then changes nothing, and duplicates are dropped by offset.
      const { minReconnectDelay, maxReconnectDelay } = this.options
      clearTimeout(subscription.retry)
      subscription.retry = setTimeout(() => this.send(subscription.frame()), backoff(subscription.failures++, minReconnectDelay, maxReconnectDelay))
      return
    }
    this.subscriptions.delete(subscription.channel)
    subscription.fail(error)
  }
}

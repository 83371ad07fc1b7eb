import { randomBytes } from 'node:crypto'
import type { Socket } from 'node:net'
import type { FastifyBaseLogger, FastifyRequest } from 'fastify'
import type { RawData, WebSocket } from 'ws'
import type { Hub, HubMember } from '../hub.js'
import type { Position } from '../history/sequence.js'
import { ChannelSync, type LiveMessage } from '../history/replay.js'
import {
  errorFrame, isWireError, parseClientFrame, PONG_FRAME, REFRESHED_FRAME, subscribedFrame, toWireError, unsubscribedFrame,
  type Resume
} from '../frames.js'
import { BusRefusedError, BusUnavailableError, ChannelForbiddenError, ChannelLimitError, ForbiddenError, RefreshUnavailableError } from '../errors.js'
import { CLOSE_POLICY_VIOLATION, CLOSE_TOKEN_EXPIRED } from '../close-codes.js'
import type { Authenticator } from '../security/connect-auth.js'
import type { ConnectionAuth } from '../types.js'
import type { ChannelAccess } from '../security/channel-access.js'
import { TokenBucket } from '../security/token-bucket.js'
import { isMessageFrame, type Filter, type ParsedFilter } from '../tags.js'
import { SocketWriter, type SlowConsumerPolicy } from './socket-writer.js'
import { personalChannel } from '../personal.js'

const OPEN = 1
/** Tells this process's connection ids from other instances'. */
const PROCESS_ID = randomBytes(6).toString('hex')
let sessionsNamed = 0
/** The frame queue of a session with nothing to do: one resolved promise shared by all. */
const SETTLED = Promise.resolve()
// setTimeout keeps at most a 32-bit delay; a later expiry is re-armed when it fires.
const MAX_TIMER_DELAY = 2 ** 31 - 1

export interface SessionLimits extends SlowConsumerPolicy {
  maxChannels: number
  frameRate: number
  frameBurst: number
  /** Resumes per second; the burst is maxChannels, so a reconnecting client resumes all of its channels at once. */
  resumeRate: number
  /** Bytes per second a client may send, counted on the TCP stream, so fragments count too. */
  byteRate: number
  byteBurst: number
}

/** What every session of one plugin instance shares. */
export interface SessionContext {
  hub: Hub<Session>
  authenticator: Authenticator
  access: ChannelAccess
  limits: SessionLimits
  /** The plugin's logger: a session's logs are its children, tagged with the upgrade's request id. */
  log: FastifyBaseLogger
}

/**
 * One client connection, whole: who it is (identity, grants, token expiry and refresh), what it
 * may send (frame and byte budgets), what it listens to (channels, and the channels being
 * resumed), and its write queue (SocketWriter). The route hands the upgraded socket over; the
 * hub sees a session as a HubMember.
 */
export class Session extends SocketWriter implements HubMember {
  readonly channels = new Set<string>()
  /** From connect-time auth; undefined when no auth is configured. */
  identity: unknown
  /**
   * The identity's personal channel (`@<identity>`), undefined without one: encoded once, as a
   * refresh keeps the identity's name (the same sub), and back-end commands find sessions by it.
   */
  readonly personal: string | undefined
  /** Channels or `prefix*` patterns this connection may subscribe to, when auth is configured. */
  grants: readonly string[] | undefined
  /** When the heartbeat pinged this session and no pong or frame has come back since; 0 if none is due. */
  pingedAt = 0
  /** The client's address, as the upgrade request saw it. */
  readonly remoteAddress: string
  /** Channels being joined, whose live messages must meet the replay without a gap or a duplicate. */
  private syncs: Map<string, ChannelSync> | undefined
  /** Frames from the client are handled one after another, so replies keep their order. */
  private frames: Promise<void> = SETTLED
  /** Made at the first frame or chunk: a bucket starts full, so starting it later changes nothing. */
  private frameBudget: TokenBucket | undefined
  private byteBudget: TokenBucket | undefined
  private resumeBudget: TokenBucket | undefined
  /** Per channel, the subscription's filter; undefined while no channel has one (most sessions). */
  private filters: Map<string, Filter> | undefined
  private expiry: NodeJS.Timeout | undefined
  /** The upgrade's request id and log level: logs made for this session carry them, as request.log's would. */
  private readonly reqId: string
  private readonly logLevel: string
  /** The upgrade request, kept only when a refresh can happen (authorize() sees it again then). */
  private readonly request: FastifyRequest | undefined
  private name: string | undefined

  constructor (socket: WebSocket, tcp: Socket | undefined, private readonly context: SessionContext,
    auth: ConnectionAuth | undefined, request: FastifyRequest) {
    super(socket, tcp, context.limits)
    this.identity = auth?.identity
    this.personal = personalChannel(auth?.identity)
    this.grants = auth?.channels
    this.remoteAddress = request.ip
    this.reqId = request.id
    this.logLevel = request.log.level
    this.request = context.authenticator.refresh === undefined ? undefined : request
    this.armExpiry(auth?.expiresAt)
  }

  /**
   * Names this session in logs and, when it is anonymous, in presence: this process's random
   * prefix and a counter, unique across instances. Made when first read, as few sessions ever
   * need one; a short flat string, where randomUUID()'s is a rope of ~450 bytes.
   */
  get id (): string {
    this.name ??= `${PROCESS_ID}.${(++sessionsNamed).toString(36)}`
    return this.name
  }

  // ---- what the hub asks of a member ----------------------------------------------------------

  // The hub delivers only what passes this session's filter on the channel (see filterOf).
  deliver (channel: string | null, payload: Buffer, frame: Buffer[], position: Position | undefined): boolean {
    const sync = channel === null ? undefined : this.syncs?.get(channel)
    if (sync === undefined) return this.enqueue(payload, frame)
    return this.offer(channel as string, sync, { payload, position }, frame)
  }

  filterOf (channel: string): Filter | undefined {
    return this.filters?.get(channel)
  }

  accepts (channel: string, payload: Buffer): boolean {
    const filter = this.filters?.get(channel)
    return filter === undefined || !isMessageFrame(payload) || filter.passes(payload)
  }

  startSync (channel: string): void {
    this.syncs ??= new Map()
    this.syncs.set(channel, new ChannelSync())
  }

  releaseSync (channel: string, epoch: string | undefined, top: number, passed: boolean): void {
    const sync = this.syncs?.get(channel)
    // Gone meanwhile: the replay returns before it releases a session that left, so only a sync
    // stopped some other way could be missing here.
    const held = sync?.release(epoch, top)
    /* c8 ignore next */
    if (held === undefined) return
    for (const message of held) this.offer(channel, sync as ChannelSync, message)
    if (passed) this.stopSync(channel)
  }

  stopSync (channel: string): void {
    if (this.syncs === undefined) return
    this.syncs.delete(channel)
    if (this.syncs.size === 0) this.syncs = undefined
  }

  /** Closes after the frames already queued, so a reply sent just before still arrives first. */
  close (code = 1000, reason = ''): void {
    this.flush()
    this.socket.close(code, reason)
  }

  terminate (): void {
    this.socket.terminate()
  }

  async whenClosed (): Promise<void> {
    // A session is in the hub only while its socket is open or closing: 'close' is still to come.
    await new Promise<void>((resolve) => this.socket.once('close', () => resolve()))
  }

  ping (): void {
    this.socket.ping()
  }

  protected scheduleFlush (): void {
    this.context.hub.scheduleFlush(this)
  }

  protected onSlowConsumer (): void {
    this.context.hub.closeSlowConsumer(this)
  }

  // ---- what the client sends ------------------------------------------------------------------

  /** The back end put this connection on `channel` (POST /subscriptions): no grant is needed. */
  subscribeFromServer (channel: string): void {
    this.queue(async () => await this.subscribe(channel, undefined, undefined, true))
  }

  /** The back end took this connection off `channel` (DELETE /subscriptions). */
  unsubscribeFromServer (channel: string): void {
    this.queue(() => {
      this.context.hub.leave(this, channel)
      this.setFilter(channel, undefined)
      this.send(unsubscribedFrame(channel))
    })
  }

  /** The back end ended this connection (POST /disconnect): logout, a ban. */
  disconnect (code: number, reason: string): void {
    this.evict(code, reason)
  }

  /** Subscribes to the channels the upgrade asked for, in order, before any frame is handled. */
  subscribeAtConnect (channels: Iterable<string>): void {
    for (const channel of channels) this.queue(async () => await this.subscribe(channel))
  }

  /**
   * Runs `step` after the steps queued before it. Once the queue is idle it is the shared settled
   * promise again, so an idle session keeps no promise of its own. (Each step catches its own
   * errors: receive's below, subscribe's inside.)
   */
  private queue (step: () => unknown): void {
    const next = this.frames.then(step) as Promise<void>
    this.frames = next
    next.then(() => { if (this.frames === next) this.frames = SETTLED }, () => {})
  }

  /** A chunk of raw bytes from the client: ws keeps every fragment of a message until the last one,
   * so a flood of tiny fragments costs memory and CPU without ever making a message. */
  receiveBytes (length: number): void {
    this.byteBudget ??= new TokenBucket(this.context.limits.byteRate, this.context.limits.byteBurst)
    if (this.byteBudget.take(Date.now(), length) || this.socket.readyState !== OPEN) return
    this.evict(CLOSE_POLICY_VIOLATION, 'too much data')
  }

  receive (raw: RawData, isBinary: boolean): void {
    this.markAlive()
    this.frameBudget ??= new TokenBucket(this.context.limits.frameRate, this.context.limits.frameBurst)
    if (!this.frameBudget.take()) {
      this.evict(CLOSE_POLICY_VIOLATION, 'too many frames')
      return
    }
    const frame = parseClientFrame(raw, isBinary)
    this.queue(async () => { await this.handle(frame) })
  }

  private async handle (frame: ReturnType<typeof parseClientFrame>): Promise<void> {
    try {
      if (isWireError(frame)) {
        this.send(errorFrame(frame))
      } else if (frame.type === 'ping') {
        this.send(PONG_FRAME)
      } else if (frame.type === 'subscribe') {
        await this.subscribe(frame.channel, frame.resume, frame.filter)
      } else if (frame.type === 'unsubscribe') {
        this.context.hub.leave(this, frame.channel)
        this.setFilter(frame.channel, undefined)
        this.send(unsubscribedFrame(frame.channel))
      } else {
        await this.refresh(frame.token)
      }
    // Every step catches its own errors; this keeps one unforeseen fault from leaving the queue rejected.
    /* c8 ignore start */
    } catch (err) {
      this.log().error({ err }, 'handling a client frame failed')
    }
    /* c8 ignore stop */
  }

  /** A pong or any frame from the client proves it is there. */
  markAlive (): void {
    this.pingedAt = 0
  }

  /** The socket closed or failed: the session leaves every channel. */
  ended (): void {
    clearTimeout(this.expiry)
    this.context.hub.remove(this)
    if (this.filters !== undefined) for (const channel of [...this.filters.keys()]) this.setFilter(channel, undefined)
  }

  /**
   * The logger of the upgrade request, made again when something is logged: request.log is a
   * child logger with serializers of its own, ~400 bytes that every idle socket would keep.
   */
  log (): FastifyBaseLogger {
    return this.context.log.child({ reqId: this.reqId }, { level: this.logLevel })
  }

  subscribeFailed (channel: string, err: unknown): void {
    this.log().warn({ err, channel }, 'subscribe failed')
    this.send(errorFrame(toWireError(err, channel)))
  }

  /** Sets (or, with undefined, drops) the filter of `channel`; subscribing again replaces it. */
  private setFilter (channel: string, parsed: ParsedFilter | undefined): void {
    const { hub } = this.context
    const before = this.filters?.get(channel)
    const after = parsed === undefined ? undefined : hub.acquireFilter(parsed)
    if (after !== undefined) {
      this.filters ??= new Map()
      this.filters.set(channel, after)
    } else {
      this.filters?.delete(channel)
      if (this.filters?.size === 0) this.filters = undefined
    }
    // Already listening (a subscribe again with another filter): the hub moves it to its new group.
    hub.regroup(this, channel, before, after)
    if (before !== undefined) hub.releaseFilter(before)
  }

  private async subscribe (channel: string, resume?: Resume, filter?: ParsedFilter, fromServer = false): Promise<void> {
    const { hub, access, limits } = this.context
    if (resume !== undefined) {
      // Each resume may read history: a cheap frame must not buy expensive reads without end.
      this.resumeBudget ??= new TokenBucket(limits.resumeRate, limits.maxChannels)
      if (!this.resumeBudget.take()) resume = { ...resume, throttled: true }
    }
    try {
      if (!this.channels.has(channel) && this.channels.size >= limits.maxChannels) throw new ChannelLimitError(limits.maxChannels)
      if (!fromServer && !await access.allows(this.identity, this.grants, channel)) throw new ChannelForbiddenError(JSON.stringify(channel))
      this.setFilter(channel, filter)
      await hub.join(this, channel, resume, (outcome) => this.send(subscribedFrame(channel, outcome)))
    } catch (err) {
      if (!this.channels.has(channel)) this.setFilter(channel, undefined)
      // Redis refusing: the operator should hear of it, not only the client.
      if (err instanceof BusUnavailableError || err instanceof BusRefusedError) this.subscribeFailed(channel, err)
      else this.send(errorFrame(toWireError(err, channel)))
    }
  }

  private async refresh (token: string): Promise<void> {
    const { hub, access, authenticator } = this.context
    try {
      // Both or neither: the request is kept exactly when refresh is defined.
      if (authenticator.refresh === undefined || this.request === undefined) throw new RefreshUnavailableError()
      const renewed = await authenticator.refresh(token, this.request)
      const before = subjectOf(this.identity)
      if (before === undefined || before !== subjectOf(renewed.identity)) {
        throw new ForbiddenError('a refresh token must carry the same sub claim as the connection\'s token')
      }
      /* c8 ignore next -- the socket closed while the token was being verified */
      if (!hub.members.has(this)) return
      this.identity = renewed.identity
      this.grants = renewed.channels
      this.armExpiry(renewed.expiresAt)
      this.send(REFRESHED_FRAME)
      // Grants may have shrunk: nothing may keep flowing from a channel no longer allowed.
      for (const channel of [...this.channels]) {
        if (await access.allows(this.identity, this.grants, channel)) continue
        hub.leave(this, channel)
        this.setFilter(channel, undefined)
        this.send(errorFrame(toWireError(new ChannelForbiddenError(JSON.stringify(channel)), channel)))
      }
    } catch (err) {
      this.send(errorFrame(toWireError(err)))
    }
  }

  private armExpiry (expiresAt: number | undefined): void {
    clearTimeout(this.expiry)
    if (expiresAt === undefined) return
    const delay = expiresAt - Date.now()
    this.expiry = setTimeout(() => {
      /* c8 ignore next -- only an expiry beyond setTimeout's 24.8-day limit wakes early */
      if (Date.now() < expiresAt) return this.armExpiry(expiresAt)
      this.evict(CLOSE_TOKEN_EXPIRED, 'token expired')
    }, Math.min(Math.max(delay, 0), MAX_TIMER_DELAY))
  }

  /** Leaves the hub at once (nothing more is delivered), then closes after what is queued. */
  private evict (code: number, reason: string): void {
    this.context.hub.remove(this)
    this.close(code, reason)
  }

  /** A live message of a channel being joined: held, skipped as replayed, or queued. */
  private offer (channel: string, sync: ChannelSync, message: LiveMessage, frame?: Buffer[]): boolean {
    switch (sync.offer(message)) {
      case 'hold':
        // Held while the history is read, or while a deferred subscribe waits for the bus: a
        // backlog the client cannot drain, so it counts against the slow-consumer bound.
        if (sync.heldBytes > this.context.limits.slowConsumerBytes) this.onSlowConsumer()
        return false
      case 'skip':
        return false
      case 'caught-up':
        // Past the replay: from here on the live stream is in offset order.
        this.stopSync(channel)
        return this.enqueue(message.payload, frame)
      default:
        return this.enqueue(message.payload, frame)
    }
  }
}

/** The `sub` claim of an identity that is a token's claims; undefined for any other identity. */
function subjectOf (identity: unknown): unknown {
  return (identity as { sub?: unknown } | null | undefined)?.sub
}

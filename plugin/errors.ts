import createError from '@fastify/error'

// One catalogue for HTTP replies, `broadcast()` rejections and WebSocket error frames:
// a client sees the same code whichever way it talks to the hub.

export const InvalidOptionError = createError<[string, string]>(
  'FRB_INVALID_OPTION',
  'fastify-redis-broadcast: option "%s" %s'
)

export const AlreadyRegisteredError = createError(
  'FRB_ALREADY_REGISTERED',
  'fastify-redis-broadcast is already registered on this instance'
)

export const RegisteredBeforeRedisError = createError(
  'FRB_REGISTERED_BEFORE_REDIS',
  'fastify-redis-broadcast was registered before @fastify/redis, so it runs on the in-process bus ' +
    'while the app has a Redis client: register @fastify/redis first, or pass the client as the redis option'
)

export const InvalidChannelError = createError<[string]>(
  'FRB_INVALID_CHANNEL',
  'Invalid channel name %s: use 1-128 characters of A-Z a-z 0-9 _ - . :',
  400
)

export const InvalidPublishError = createError<[string]>(
  'FRB_INVALID_PUBLISH',
  'The publish body was refused: %s',
  400
)

export const InvalidTagsError = createError<[string]>(
  'FRB_INVALID_TAGS',
  'Invalid tags: %s',
  400
)

export const InvalidFilterError = createError<[string]>(
  'FRB_INVALID_FILTER',
  'Invalid filter: %s',
  400
)

export const InvalidDataError = createError<[string]>(
  'FRB_INVALID_DATA',
  'Message data must be a JSON value: %s',
  400
)

export const BadJsonError = createError(
  'FRB_BAD_JSON',
  'A frame must be a JSON object in a text frame, such as {"type":"subscribe","channel":"news"}',
  400
)

export const UnknownTypeError = createError<[string]>(
  'FRB_UNKNOWN_TYPE',
  'Unknown frame type %s: expected subscribe, unsubscribe, ping or refresh',
  400
)

export const BusUnavailableError = createError<[string]>(
  'FRB_BUS_UNAVAILABLE',
  'The message bus is unavailable: %s',
  503
)

export const UnauthorizedError = createError<[string]>(
  'FRB_UNAUTHORIZED',
  'Authentication failed: %s',
  401
)

export const PublishKeyRequiredError = createError(
  'FRB_PUBLISH_KEY_REQUIRED',
  'Publishing from a non-loopback address needs a publish key: set the publishKeys option ' +
    'and send Authorization: Bearer <key>, or set insecurePublish: true to accept anyone',
  401
)

export const ForbiddenError = createError<[string]>(
  'FRB_FORBIDDEN',
  'Access denied: %s',
  403
)

export const OriginForbiddenError = createError<[string]>(
  'FRB_ORIGIN_FORBIDDEN',
  'Origin %s may not open a WebSocket here: add it to the allowedOrigins option',
  403
)

export const ChannelForbiddenError = createError<[string]>(
  'FRB_CHANNEL_FORBIDDEN',
  'Subscribing to channel %s is not allowed for this connection',
  403
)

export const ChannelLimitError = createError<[number]>(
  'FRB_CHANNEL_LIMIT',
  'A connection may subscribe to at most %d channels',
  429
)

export const ServerFullError = createError(
  'FRB_SERVER_FULL',
  'This instance has reached its connection limit; try again later or another instance',
  503
)

export const TooManyConnectionsError = createError(
  'FRB_TOO_MANY_CONNECTIONS',
  'Too many connections from this address',
  429
)

export const RateLimitedError = createError<[string]>(
  'FRB_RATE_LIMITED',
  'Rate limit exceeded, retry in %s',
  429
)

export const RefreshUnavailableError = createError(
  'FRB_REFRESH_UNAVAILABLE',
  'Token refresh needs the jwt option',
  400
)

export const MessageTooLargeError = createError<[number, number]>(
  'FRB_MESSAGE_TOO_LARGE',
  'The encoded message is %d bytes; the limit is %d (maxMessageBytes)',
  413
)

export const BusRefusedError = createError<[string]>(
  'FRB_BUS_REFUSED',
  'Redis refused the command: %s',
  502
)

export const InvalidIdempotencyKeyError = createError(
  'FRB_INVALID_IDEMPOTENCY_KEY',
  'An idempotency key must be 1-128 printable ASCII characters',
  400
)

export const InvalidResumeError = createError(
  'FRB_INVALID_RESUME',
  'To resume, "since" must be a whole number of at least 0 and "epoch" the string from a message or subscribed frame',
  400
)

export const HistoryUnavailableError = createError<[string]>(
  'FRB_NO_HISTORY',
  'Channel %s keeps no history',
  404
)

export const PresenceUnavailableError = createError<[string]>(
  'FRB_NO_PRESENCE',
  'Channel %s is not tracked for presence (see the presence.channels option)',
  404
)

export const InternalError = createError(
  'FRB_INTERNAL',
  'An internal error occurred',
  500
)

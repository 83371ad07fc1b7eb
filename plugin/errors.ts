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

export const InvalidChannelError = createError<[string]>(
  'FRB_INVALID_CHANNEL',
  'Invalid channel name %s: use 1-128 characters of A-Z a-z 0-9 _ - . :',
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
  'Unknown frame type %s: expected subscribe, unsubscribe or ping',
  400
)

export const BusUnavailableError = createError<[string]>(
  'FRB_BUS_UNAVAILABLE',
  'The message bus is unavailable: %s',
  503
)

export const ShuttingDownError = createError(
  'FRB_SHUTTING_DOWN',
  'The service is shutting down',
  503
)

// Every WebSocket close code this plugin sends; README.md explains each to clients.

/** The server is shutting down: reconnect, to another instance if there is one. */
export const CLOSE_GOING_AWAY = 1001
/** Too many frames or bytes from the client. */
export const CLOSE_POLICY_VIOLATION = 1008
/** The client did not read its messages fast enough. */
export const CLOSE_SLOW_CONSUMER = 4008
/** The connection's token expired and was not refreshed. */
export const CLOSE_TOKEN_EXPIRED = 4401
/** The back end closed the identity's connections (POST /disconnect without a code of its own). */
export const CLOSE_DISCONNECTED = 4403

// Sizes and bounds this server advertises or enforces. Changing one changes what clients see
// (BLOCK_SIZE info) or how much one client can make us hold, so they live in one place.

export const MIB = 1024 * 1024;

/** NBD_INFO_BLOCK_SIZE: any byte alignment works; 4 MiB matches the vault's chunk size. */
export const MIN_BLOCK_SIZE = 1;
export const PREFERRED_BLOCK_SIZE = 4 * MIB;
/** Largest READ/WRITE payload accepted; larger writes are drained and refused. */
export const MAX_PAYLOAD = 32 * MIB;

/** An option payload over this is drained (not buffered) and answered NBD_REP_ERR_TOO_BIG. */
export const MAX_OPTION_LENGTH = 64 * 1024;
/** An option payload over this is not even drained: the client is disconnected. */
export const MAX_OPTION_DRAIN = 16 * MIB;
/** Options per handshake: a client looping forever in negotiation is cut off (the handshake
 *  timeout bounds it too). nbdkit's fixed 32 was too few here: `nbdinfo --list` sends several per
 *  export it lists (INFO, meta contexts), and every snapshot is an export, so one volume with 14
 *  daily snapshots was cut off. A LIST raises the allowance by OPTIONS_PER_LISTED_EXPORT for each
 *  export it returned. */
export const MAX_OPTIONS = 64;
export const OPTIONS_PER_LISTED_EXPORT = 8;
/** ...and the handshake timer that much more time per listed export (once per handshake). */
export const HANDSHAKE_MS_PER_LISTED_EXPORT = 1000;
/** ...for at most this many exports (a client holds a negotiating slot at most ~5 min longer). */
export const HANDSHAKE_LISTED_EXPORTS_MAX = 300;
/** Extents per BLOCK_STATUS reply. */
export const MAX_EXTENTS = 1024;

export const DEFAULT_MAX_IN_FLIGHT_BYTES = 64 * MIB;
/** Short: a real client negotiates (TLS included) in milliseconds; an idle socket holds a slot. */
export const DEFAULT_HANDSHAKE_TIMEOUT_MS = 10_000;
/** An export whose open waits for something that ends by itself (a stopped server's lease
 *  running out) extends its client's handshake by that wait plus this slack (the open's own
 *  work after it), once per handshake and at most by HANDSHAKE_OPEN_WAIT_MAX_MS: the lease
 *  ttl is at most 600 s. */
export const HANDSHAKE_OPEN_WAIT_SLACK_MS = 5_000;
export const HANDSHAKE_OPEN_WAIT_MAX_MS = 600_000;
export const DEFAULT_MAX_CONNECTIONS = 256;
/** Connections still negotiating, in all and from one address (admission.ts). */
export const DEFAULT_MAX_HANDSHAKES = 128;
export const DEFAULT_MAX_HANDSHAKES_PER_ADDRESS = 32;
/** Graceful shutdown waits this long for in-flight requests before cutting connections. */
export const DEFAULT_SHUTDOWN_GRACE_MS = 10_000;
/** After the grace period: how long dropped connections' requests get to end, before and after
 *  the exports close (a request waiting on a failing store ends only when its export closes). */
export const SHUTDOWN_STRAGGLER_WAIT_MS = 2_000;

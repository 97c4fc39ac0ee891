// Client sockets read into one recycled buffer instead of a fresh allocation per read. A plain
// socket hands each read (up to 64 KiB) over in new memory: the kernel's copy faults every page of
// it in, and V8 counts it as external memory and starts a full marking every ~30 MB of it (an
// import of the 1 GiB corpus: 32 markings, ~1 CPU s of the collector's threads; BENCHMARKS.md).
// Node reads into memory of ours only through the `onread` option of a socket it constructs, not
// of one a server accepts: so the server accepts paused, and the accepted socket's handle is
// wrapped again in a socket made with `onread` (the accepted one, now handle-less, is destroyed
// with it, which keeps the server's connection count right).
//
// Every read lands in the same buffer, which the next read of any socket overwrites: the sink
// must copy whatever it keeps before it returns (the request reader copies payloads and detaches
// unparsed input; the handshake queue copies). TLS sockets read as before: a TLS socket wraps the
// accepted one's stream, and Node's TLS layer reads its own way.
import { Socket } from 'node:net';

/** One read's most: the socket read as a plain one would (libuv's 64 KiB) and then some. */
const READ_BUFFER_BYTES = 256 * 1024;

let shared: Buffer | null = null;
let wrapped = 0;

/** sockets read this way since the start (tests: the server did take this path) */
export function recycledReadSockets(): number {
  return wrapped;
}

/** Where a socket's reads go: a view of the shared buffer, valid only during the call. */
export type TransientReads = (view: Buffer) => void;

/**
 * `accepted` (accepted with pauseOnConnect, not read yet) as a socket whose reads go to `sink`
 * through the shared buffer; null where this Node cannot (the caller then reads `accepted` as
 * usual).
 */
export function withRecycledReads(accepted: Socket, sink: TransientReads): Socket | null {
  const internal = accepted as unknown as { _handle?: { useUserBuffer?: unknown; readStop?: unknown } | null };
  const handle = internal._handle;
  if (!handle || typeof handle.useUserBuffer !== 'function') return null;
  shared ??= Buffer.allocUnsafeSlow(READ_BUFFER_BYTES);
  const buffer = shared;
  internal._handle = null;
  const socket = new Socket({
    handle,
    allowHalfOpen: true,
    readable: true,
    writable: true,
    onread: {
      buffer,
      callback: (bytes: number) => {
        sink(buffer.subarray(0, bytes));
        return true;
      },
    },
  } as unknown as ConstructorParameters<typeof Socket>[0]);
  socket.once('close', () => accepted.destroy());
  wrapped++;
  return socket;
}

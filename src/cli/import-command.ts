// import: copy a raw image into an existing volume, zero-aware. The image is a file or a block
// device (read by position, four chunks at a time), or a stream: `-` for standard input, or a
// pipe, whose length is known only at its end.
import type { Command } from 'commander';
import { createReadStream } from 'node:fs';
import { open as openFile, readFile, stat, type FileHandle } from 'node:fs/promises';
import type { Readable } from 'node:stream';
import { VaultError, describeError } from '../errors';
import { isAllZero } from '../codec';
import { CHUNK_SIZE, chunkCount } from '../volume/chunk-math';
import type { VolumeEngine } from '../volume/volume-engine';
import { formatSize, parseSize } from '../util/size';
import { closeAfter } from '../util/close-after';
import { adminRequest, servesThis } from './admin-socket';
import { forEachLimited, zeroChunks } from './chunk-walk';
import { Progress } from './progress';
import { addSettings } from './settings';
import { VAULT_SETTINGS, withVault } from './vault-context';
import { out } from './stdout';

/** chunks written at once (each holds 4 MiB until the engine has taken it) */
const CHUNKS_IN_FLIGHT = 4;

/** Where the image comes from: a length known before reading it, or a stream. */
type ImageSource = { kind: 'file'; size: number } | { kind: 'stream' };

/**
 * A regular file's or block device's length (from sysfs: stat says 0 for a device), or a stream
 * for `-`, a pipe or a character device. Anything else is refused.
 */
async function imageSource(file: string): Promise<ImageSource> {
  if (file === '-') {
    if (process.stdin.isTTY) throw new VaultError('ERR_INVALID_ARGUMENT', 'import - reads the image from standard input, which is a terminal: pipe or redirect the image in');
    return { kind: 'stream' };
  }
  const st = await stat(file).catch((err: NodeJS.ErrnoException) => {
    throw new VaultError(err.code === 'ENOENT' ? 'ERR_NOT_FOUND' : 'ERR_IO', `cannot read ${file}: ${err.code === 'ENOENT' ? 'no such file' : err.message}`);
  });
  if (st.isFile()) return { kind: 'file', size: st.size };
  if (st.isFIFO() || st.isCharacterDevice()) return { kind: 'stream' };
  if (st.isBlockDevice()) {
    const major = Math.floor(st.rdev / 256) & 0xfff;
    const minor = (st.rdev & 0xff) | (Math.floor(st.rdev / 4096) & 0xfff00);
    const sectors = Number((await readFile(`/sys/dev/block/${major}:${minor}/size`, 'utf8').catch(() => '')).trim());
    if (Number.isSafeInteger(sectors) && sectors > 0) return { kind: 'file', size: sectors * 512 };
    throw new VaultError('ERR_INVALID_ARGUMENT', `cannot tell the size of block device ${file}`);
  }
  throw new VaultError('ERR_INVALID_ARGUMENT', `${file} is not a regular file, a block device or a pipe`);
}

/** Disk image containers whose first bytes say what they are: imported as raw, a VM would see
 *  their metadata as its disk. */
const IMAGE_CONTAINERS: Array<[string, Buffer]> = [
  ['qcow2 (or qcow)', Buffer.from('QFI\xfb', 'latin1')],
  ['QED', Buffer.from('QED\0', 'latin1')],
  ['VMDK', Buffer.from('KDMV', 'latin1')],
  ['VMDK (ESXi COWD)', Buffer.from('COWD', 'latin1')],
  ['VMDK descriptor', Buffer.from('# Disk DescriptorFile', 'latin1')],
  ['VHDX', Buffer.from('vhdxfile', 'latin1')],
  ['VHD (dynamic)', Buffer.from('conectix', 'latin1')],
  ['VDI', Buffer.from('<<< ', 'latin1')],
];

/** A VDI header's signature, after its 64 bytes of free text (which VirtualBox and qemu word apart) */
const VDI_SIGNATURE = Buffer.from([0x7f, 0x10, 0xda, 0xbe]);

/** A fixed VHD is a raw disk followed by a 512-byte footer that starts with this cookie. */
const VHD_FOOTER_COOKIE = Buffer.from('conectix', 'latin1');
const VHD_FOOTER_BYTES = 512;
/** what the container check reads of a file's start */
const HEAD_BYTES = 68;

/** The container format whose start HEAD is, or whose footer TAIL (a file's last 512 bytes) is;
 *  null for a raw image, as far as those bytes tell. */
function containerFormatIn(head: Buffer, tail?: Buffer): string | null {
  for (const [name, magic] of IMAGE_CONTAINERS) {
    if (head.subarray(0, magic.length).equals(magic) && (name !== 'VDI' || head.subarray(64, 68).equals(VDI_SIGNATURE))) return name;
  }
  if (tail?.length === VHD_FOOTER_BYTES && tail.subarray(0, VHD_FOOTER_COOKIE.length).equals(VHD_FOOTER_COOKIE)) return 'VHD (fixed)';
  return null;
}

async function containerFormatOfFile(fh: FileHandle, size: number): Promise<string | null> {
  const head = Buffer.alloc(Math.min(HEAD_BYTES, size));
  await fh.read(head, 0, head.length, 0);
  const tail = Buffer.alloc(size >= 2 * VHD_FOOTER_BYTES ? VHD_FOOTER_BYTES : 0);
  if (tail.length > 0) await fh.read(tail, 0, tail.length, size - VHD_FOOTER_BYTES);
  return containerFormatIn(head, tail);
}

function refuseContainer(file: string, format: string, volume: string): never {
  throw new VaultError('ERR_INVALID_ARGUMENT', `${file === '-' ? 'standard input' : file} is a ${format} image, not a raw disk: imported as it is, the volume would hold its metadata. Convert it first (qemu-img convert -O raw IMAGE disk.raw), or copy it in through a running server (qemu-img convert -n -O raw IMAGE nbd://…/${volume}); --raw imports it as it is`);
}

/** STREAM in CHUNK_SIZE pieces (the last one shorter), whatever sizes it arrives in. */
async function* chunksOf(stream: Readable): AsyncGenerator<Buffer> {
  let parts: Buffer[] = [];
  let have = 0;
  for await (const piece of stream) {
    let rest = piece as Buffer;
    while (rest.length > 0) {
      const take = Math.min(CHUNK_SIZE - have, rest.length);
      parts.push(rest.subarray(0, take));
      have += take;
      rest = rest.subarray(take);
      if (have === CHUNK_SIZE) {
        yield parts.length === 1 ? parts[0] : Buffer.concat(parts, have);
        parts = [];
        have = 0;
      }
    }
  }
  if (have > 0) yield Buffer.concat(parts, have);
}

interface CopyCounters {
  done: number;
  skipped: number;
}

/** Write chunk I (BUF) unless it is zeros where the volume is zeros already. */
async function putChunk(engine: VolumeEngine, volumeZero: Uint8Array, i: number, buf: Buffer, counters: CopyCounters): Promise<void> {
  if (isAllZero(buf) && volumeZero[i]) counters.skipped++;
  else await engine.write(i * CHUNK_SIZE, buf);
  counters.done += buf.length;
}

async function copyFile(fh: FileHandle, file: string, size: number, engine: VolumeEngine, volumeZero: Uint8Array, counters: CopyCounters, bar: Progress): Promise<number> {
  await forEachLimited(chunkCount(size), CHUNKS_IN_FLIGHT, async (i) => {
    const len = Math.min(CHUNK_SIZE, size - i * CHUNK_SIZE);
    const buf = Buffer.allocUnsafe(len);
    const { bytesRead } = await fh.read(buf, 0, len, i * CHUNK_SIZE);
    if (bytesRead !== len) throw new VaultError('ERR_IO', `short read from ${file} at ${i * CHUNK_SIZE}`);
    await putChunk(engine, volumeZero, i, buf, counters);
    bar.update(counters.done);
  });
  return size;
}

/**
 * A stream's chunks in order, CHUNKS_IN_FLIGHT written at once; its length once it ends. A pipe's
 * end does not tell a whole image from a producer that failed (an ssh that did not log in sends
 * nothing): an empty stream is refused, and with `expected` (--size) a stream of any other length.
 */
async function copyStream(stream: Readable, what: string, volume: string, raw: boolean, expected: number | undefined, engine: VolumeEngine, volumeZero: Uint8Array, counters: CopyCounters, bar: Progress): Promise<number> {
  const inFlight: Promise<void>[] = [];
  const limit = expected ?? engine.size;
  let size = 0;
  try {
    for await (const buf of chunksOf(stream)) {
      if (size === 0 && !raw) {
        const format = containerFormatIn(buf);
        if (format) refuseContainer(what, format, volume);
      }
      if (size + buf.length > limit) {
        const bound = expected === undefined ? `volume "${volume}" (${engine.size} bytes)` : `--size (${expected} bytes)`;
        throw new VaultError('ERR_NO_SPACE', `${what} holds more than ${bound}: the volume now holds its first ${formatSize(size)} over its earlier content, the rest is not imported`);
      }
      const write = putChunk(engine, volumeZero, size / CHUNK_SIZE, buf, counters).then(() => bar.update(counters.done, counters.done));
      write.catch(() => {}); // (awaited below: this only keeps a failure while earlier ones run)
      inFlight.push(write);
      size += buf.length;
      if (inFlight.length >= CHUNKS_IN_FLIGHT) await inFlight.shift();
    }
  } finally {
    await Promise.allSettled(inFlight); // no write left running on an engine about to close
  }
  await Promise.all(inFlight);
  if (size === 0) throw new VaultError('ERR_INVALID_ARGUMENT', `${what} ended before its first byte: nothing imported, volume "${volume}" is unchanged (a producer that failed sends nothing)`);
  if (expected !== undefined && size !== expected) {
    throw new VaultError('ERR_IO', `${what} ended after ${size} of the ${expected} bytes --size announced: the volume now holds them over its earlier content (the producer failed?); import it again`);
  }
  return size;
}

export function registerImportCommand(program: Command): void {
  addSettings(
    program
      .command('import <file> <volume>')
      .description('Copy a raw image FILE (a file, a block device, a pipe, or - for standard input) into an existing VOLUME (zero-aware); refused while a server serves the vault from the same --state (import through it with nbdcopy)')
      .option('--raw', 'import FILE as it is even when it looks like a qcow2, VMDK, VHD(X), QED or VDI image')
      .option('--size <size>', "a stream's length (- or a pipe), checked at its end: then the volume past it reads as zeros, as after a file's import (without it, a stream leaves the rest of the volume as it was)"),
    VAULT_SETTINGS,
  ).action(async (file: string, volume: string, opts) => {
    const source = await imageSource(file);
    const what = file === '-' ? 'standard input' : file;
    const expected = opts.size === undefined ? undefined : parseSize(String(opts.size));
    if (expected !== undefined && source.kind === 'file') throw new VaultError('ERR_INVALID_ARGUMENT', `--size is for a stream (- or a pipe): ${file} has a size of its own`);
    if (expected === 0) throw new VaultError('ERR_INVALID_ARGUMENT', '--size 0 imports nothing');
    const fh = source.kind === 'file' ? await openFile(file, 'r') : null;
    // opened when the copy starts: a pipe nobody writes to blocks its open, and an open that
    // fails must not be an unhandled 'error' event while the vault opens
    let stream: Readable | null = null;
    await closeAfter(
      async () => {
        if (fh && source.kind === 'file' && !opts.raw) {
          const format = await containerFormatOfFile(fh, source.size);
          if (format) refuseContainer(file, format, volume);
        }
        await importInto(volume, opts, async (engine, volumeZero, counters, bar) => {
          if (fh && source.kind === 'file') {
            if (source.size > engine.size) throw new VaultError('ERR_NO_SPACE', `${file} (${source.size} bytes) is larger than volume "${volume}" (${engine.size} bytes)`);
            bar.update(0, source.size);
            return { size: await copyFile(fh, file, source.size, engine, volumeZero, counters, bar), zeroRest: true };
          }
          if (expected !== undefined && expected > engine.size) throw new VaultError('ERR_NO_SPACE', `--size ${expected} is larger than volume "${volume}" (${engine.size} bytes)`);
          if (expected !== undefined) bar.update(0, expected);
          stream = file === '-' ? process.stdin : createReadStream(file, { highWaterMark: 1 << 20 });
          return { size: await copyStream(stream, what, volume, Boolean(opts.raw), expected, engine, volumeZero, counters, bar), zeroRest: expected !== undefined };
        }, what);
      },
      async () => {
        await fh?.close().catch(() => {}); // (read-only: nothing to lose)
        if (stream && stream !== process.stdin) stream.destroy();
      },
      () => {},
    );
  });
}

/** The copy: the image's length, and whether the volume past it is to read as zeros. */
type CopyInto = (engine: VolumeEngine, volumeZero: Uint8Array, counters: CopyCounters, bar: Progress) => Promise<{ size: number; zeroRest: boolean }>;

/** Open VOLUME, COPY the image into it, trim what lies past the image's end, flush, report. */
async function importInto(volume: string, opts: Record<string, unknown>, copy: CopyInto, what: string): Promise<void> {
  await withVault(opts, async (ctx, s) => {
    const ping = await adminRequest(s.state, { op: 'ping' });
    if (servesThis(ping, ctx)) {
      throw new VaultError('ERR_LEASE', `a server is serving this vault (state ${s.state}); import through it with nbdcopy or qemu-img convert, or stop it`);
    }
    const engine = await ctx.vault.openEngine(volume, { autoCommitMs: 0 });
    const bar = new Progress(`import ${volume}`, 0);
    const counters: CopyCounters = { done: 0, skipped: 0 };
    let size = 0;
    let zeroRest = false;
    const run = async () => {
      const volumeZero = await zeroChunks(engine);
      ({ size, zeroRest } = await copy(engine, volumeZero, counters, bar));
      // The volume now holds the image: whatever an earlier content left past its end is
      // not part of it (a restore of a smaller image must not keep old bytes there).
      if (zeroRest && size < engine.size) await engine.trim(size, engine.size - size);
      await engine.flush();
    };
    const close = async () => {
      bar.done();
      await engine.close();
    };
    await closeAfter(run, close, (err) => ctx.logger.warn({ volume, err: describeError(err) }, 'closing the volume after the failure failed too'));
    const rest = size >= engine.size ? '' : zeroRest ? `; the ${formatSize(engine.size - size)} past its end now read as zeros` : `; the ${formatSize(engine.size - size)} past its end are as they were (--size makes them zeros)`;
    out(`imported ${formatSize(size)} from ${what} into ${volume} (${counters.skipped} zero chunks skipped)${rest}`);
  });
}

# Every transmission command against `nbd-vault serve --memory disk=64M --memory ro=1M:ro`, via
# python3-libnbd with client-side strict checks OFF (so the server's own checks are what we test).
# Usage: /usr/bin/python3 nbd_commands.py PORT [memory|vault]. Exits non-zero (with a traceback) on
# any failure. With "vault": volumes "disk" (64M) and "ro" (1M, empty) with a snapshot "s" (the
# read-only export "ro@s"); block status is per 4 MiB chunk there, not per 64 KiB page.
import errno
import os
import sys
import nbd

PORT = sys.argv[1]
BACKEND = sys.argv[2] if len(sys.argv) > 2 else "memory"
RO = "ro@s" if BACKEND == "vault" else "ro"
HOST = "127.0.0.1"
MIB = 1024 * 1024
SIZE = 64 * MIB
checks = []


def check(name, cond, detail=""):
    if not cond:
        raise AssertionError(f"{name}: {detail}")
    checks.append(name)


def connect(export="disk", structured=True, meta=True):
    h = nbd.NBD()
    h.set_strict_mode(0)
    h.set_request_structured_replies(structured)
    if meta:
        h.add_meta_context("base:allocation")
    h.set_export_name(export)
    h.connect_tcp(HOST, PORT)
    return h


def expect_errno(name, want, fn, *args):
    try:
        fn(*args)
    except nbd.Error as e:
        check(name, e.errno in (want, errno.errorcode[want]), f"errno {e.errno} ({e.string}), want {want}")
        return
    check(name, False, "no error")


def extents_of(h, count, offset, flags=0):
    got = []
    def cb(meta, off, entries, err):
        if meta == "base:allocation":
            got.extend(zip(entries[0::2], entries[1::2]))
        return 0
    h.block_status(count, offset, cb, flags)
    return got


for structured in (True, False):
    mode = "structured" if structured else "simple"
    h = connect(structured=structured, meta=structured)
    base = 8 * MIB if structured else 24 * MIB
    # READ / WRITE across a 4 MiB boundary, unaligned.
    data = os.urandom(3 * MIB + 123)
    h.pwrite(data, base + 4 * MIB - MIB - 7)
    check(f"{mode} read back", h.pread(len(data), base + 4 * MIB - MIB - 7) == data)
    # FUA write, FLUSH.
    h.pwrite(b"F" * 4096, base, nbd.CMD_FLAG_FUA)
    h.flush()
    check(f"{mode} fua write", h.pread(4096, base) == b"F" * 4096)
    # FUA on a read is accepted (spec: valid on every command once SEND_FUA is advertised).
    check(f"{mode} fua on read", h.pread(10, base, nbd.CMD_FLAG_FUA) == b"F" * 10)
    # TRIM and WRITE_ZEROES read back as zeros.
    h.trim(4096, base)
    check(f"{mode} trim zeroes", h.pread(4096, base) == bytes(4096))
    h.pwrite(b"Z" * 8192, base)
    h.zero(8192, base, nbd.CMD_FLAG_NO_HOLE)
    check(f"{mode} zero no_hole", h.pread(8192, base) == bytes(8192))
    h.pwrite(b"Z" * 8192, base)
    h.zero(8192, base, nbd.CMD_FLAG_FAST_ZERO)
    check(f"{mode} zero fast", h.pread(8192, base) == bytes(8192))
    h.cache(MIB, base)
    # Zero-length requests are answered.
    check(f"{mode} zero-length read", h.pread(0, base) == b"")
    h.pwrite(b"", base)
    h.trim(0, base)
    h.zero(0, base)
    h.cache(0, base)
    check(f"{mode} zero-length ok", True)
    # Reading up to the last byte works; beyond is EINVAL; writing beyond is ENOSPC.
    check(f"{mode} read last byte", len(h.pread(1, SIZE - 1)) == 1)
    expect_errno(f"{mode} read past end", errno.EINVAL, h.pread, 2, SIZE - 1)
    expect_errno(f"{mode} read far past end", errno.EINVAL, h.pread, 512, 2**62)
    expect_errno(f"{mode} write past end", errno.ENOSPC, h.pwrite, b"ab", SIZE - 1)
    expect_errno(f"{mode} zero past end", errno.ENOSPC, h.zero, 4096, SIZE)
    expect_errno(f"{mode} trim past end", errno.EINVAL, h.trim, 4096, SIZE)
    expect_errno(f"{mode} cache past end", errno.EINVAL, h.cache, 4096, SIZE)
    # Invalid flags: DF on a write, NO_HOLE on a read, REQ_ONE on a trim.
    expect_errno(f"{mode} bad flag write", errno.EINVAL, h.pwrite, b"x", 0, nbd.CMD_FLAG_DF)
    expect_errno(f"{mode} bad flag read", errno.EINVAL, h.pread, 1, 0, nbd.CMD_FLAG_NO_HOLE)
    expect_errno(f"{mode} bad flag trim", errno.EINVAL, h.trim, 1, 0, nbd.CMD_FLAG_REQ_ONE)
    # A read larger than the 32 MiB maximum payload: EOVERFLOW where DF is supported (structured
    # replies), EINVAL otherwise (spec); the connection survives.
    expect_errno(f"{mode} huge read", errno.EOVERFLOW if structured else errno.EINVAL, h.pread, 33 * MIB, 0)
    check(f"{mode} alive after errors", h.pread(4096, base + 4 * MIB - MIB - 7) == data[:4096])
    if not structured:
        expect_errno("simple: DF not negotiated", errno.EINVAL, h.pread, 1, 0, nbd.CMD_FLAG_DF)
        expect_errno("simple: block status without context", errno.EINVAL, extents_of, h, 4096, 0)
    h.shutdown()

# Structured reads: holes become OFFSET_HOLE chunks, data OFFSET_DATA; DF gives one chunk.
h = connect()
h.trim(4 * MIB, 40 * MIB)
h.pwrite(b"D" * 65536, 40 * MIB + 65536)
chunks = []
def chunk_cb(buf, offset, status, err):
    chunks.append((offset, len(buf), status))
    return 0
buf = h.pread_structured(4 * MIB, 40 * MIB, chunk_cb)
check("structured read content", buf[65536:131072] == b"D" * 65536 and buf[:65536] == bytes(65536) and buf[131072:] == bytes(4 * MIB - 131072))
kinds = [(o - 40 * MIB, n, s) for o, n, s in chunks]
if BACKEND == "vault":  # the chunk holds data: one OFFSET_DATA chunk (zeros and all)
    check("structured read chunks", kinds == [(0, 4 * MIB, nbd.READ_DATA)], kinds)
else:
    check("structured read chunks", kinds == [(0, 65536, nbd.READ_HOLE), (65536, 65536, nbd.READ_DATA), (131072, 4 * MIB - 131072, nbd.READ_HOLE)], kinds)
chunks.clear()
buf = h.pread_structured(4 * MIB, 40 * MIB, chunk_cb, nbd.CMD_FLAG_DF)
check("DF single chunk", len(chunks) == 1 and chunks[0][2] == nbd.READ_DATA and chunks[0][1] == 4 * MIB, chunks)
check("DF content", buf[65536:131072] == b"D" * 65536)

# BLOCK_STATUS: holes and data; REQ_ONE gives a single extent; past the end is EINVAL.
ext = extents_of(h, 4 * MIB, 40 * MIB)
if BACKEND == "vault":
    check("block status extents", ext == [(4 * MIB, 0)], ext)
    ext = extents_of(h, 8 * MIB, 36 * MIB, nbd.CMD_FLAG_REQ_ONE)
    check("block status req_one", ext == [(4 * MIB, 3)], ext)  # the trimmed chunk before it
else:
    check("block status extents", ext == [(65536, 3), (65536, 0), (4 * MIB - 131072, 3)], ext)
    ext = extents_of(h, 4 * MIB, 40 * MIB, nbd.CMD_FLAG_REQ_ONE)
    check("block status req_one", ext == [(65536, 3)], ext)
expect_errno("block status past end", errno.EINVAL, extents_of, h, 4096, SIZE)
expect_errno("block status zero length", errno.EINVAL, extents_of, h, 0, 0)
# Zero-length read with structured replies: a single NONE chunk, no content chunks.
chunks.clear()
h.pread_structured(0, 0, chunk_cb)
check("zero-length structured read", chunks == [], chunks)

# Multi-connection visibility: a write + flush on one connection is seen by another.
h2 = connect()
payload = os.urandom(65536)
h.pwrite(payload, 50 * MIB + 3)
h.flush()
check("multi-conn visibility", h2.pread(65536, 50 * MIB + 3) == payload)
h2.shutdown()

# Many requests in flight, replies matched by handle (libnbd checks handles), then DISC:
# every in-flight request completes before the server closes.
cookies = []
bufs = []
for i in range(64):
    b = nbd.Buffer(65536)
    bufs.append(b)
    cookies.append(h.aio_pread(b, (i * 65536 * 7) % (SIZE - 65536)))
h.aio_disconnect()
for _ in range(1000):
    if h.aio_is_closed():
        break
    h.poll(1)
check("DISC closes", h.aio_is_closed())
# aio_command_completed raises if a command failed (e.g. cut off by the close).
check("DISC after in-flight", all(h.aio_command_completed(c) for c in cookies))
del h

# Read-only export: writes, trims and zeroes are EPERM; reads work.
h = connect(export=RO)
expect_errno("ro write", errno.EPERM, h.pwrite, b"x", 0)
expect_errno("ro trim", errno.EPERM, h.trim, 512, 0)
expect_errno("ro zero", errno.EPERM, h.zero, 512, 0)
check("ro read", h.pread(512, 0) == bytes(512))
h.shutdown()

print(f"PASS {len(checks)} checks")

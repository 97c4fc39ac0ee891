# Crash-safety workload for an NBD export, with python3-libnbd (a real client).
#
# The operations are a pure function of (SEED, SIZE, TRIM): random writes of 4 KiB-64 KiB at
# 4 KiB-aligned offsets, each 4 KiB block filled with a pattern naming (operation, block), and,
# with TRIM=1, trims of 4 KiB-256 KiB. Operations go out in batches of up to 8 concurrent,
# non-overlapping requests (aio); a FLUSH follows every few batches.
#
#   write URI SEED SIZE TRIM PAUSE_EVERY CONNS
#       runs the operations until killed or done over CONNS connections (a batch spreads over them;
#       the FLUSHes take turns: with CAN_MULTI_CONN a FLUSH covers what every connection completed),
#       printing one line per event (flushed to stdout):
#         issued K   operations < K may have reached the server (printed before they are sent)
#         flushed K  a FLUSH sent after operations < K were acknowledged was acknowledged
#         paused K   (every PAUSE_EVERY-th flush, if > 0) waits for one line on stdin before going on,
#                    so the caller can take a snapshot of exactly the flushed state K
#         done K     all operations sent and flushed
#   check URI SEED SIZE TRIM BASE FLUSHED ISSUED OUT
#       reads the whole export back and checks every 4 KiB block: it must hold the content of the
#       last operation < FLUSHED touching it (BASE's content if none: a file, or - for zeros), or
#       the content of some operation FLUSHED <= i < ISSUED touching it (a write's pattern, or
#       zeros for a trim). Writes what it read to OUT (the next round's BASE; - for none).
#       FLUSHED = ISSUED asks for exactly the state after operation FLUSHED (a snapshot's).
#       Exit 0 and "ok ..." or exit 1 and the first bad blocks.
import hashlib
import random
import sys

import nbd

BLOCK = 4096
OPS = 100000         # more than any round reaches before it is killed, even on a fast server
ZERO = bytes(BLOCK)


def operations(seed, size, trim):
    """[(kind, first_block, nblocks, batch_end, flush_after)], deterministic in the arguments."""
    rng = random.Random(seed)
    nblocks = size // BLOCK
    ops = []
    while len(ops) < OPS:
        batch, taken = [], set()
        for _ in range(rng.randint(1, 8)):
            if trim and rng.random() < 0.15:
                kind, n = 'trim', rng.randint(1, 64)
            else:
                kind, n = 'write', rng.randint(1, 16)
            first = rng.randrange(0, nblocks - n + 1)
            span = set(range(first, first + n))
            if span & taken:
                continue  # requests in flight together never overlap: their order is unknown
            taken |= span
            batch.append([kind, first, n, False, False])
        batch[-1][3] = True
        batch[-1][4] = rng.random() < 0.3
        ops.extend(batch)
    return ops


def content(op_index, kind, block):
    if kind == 'trim':
        return ZERO
    return hashlib.sha256(b'%d:%d' % (op_index, block)).digest() * (BLOCK // 32)


def payload(op_index, first, n):
    return b''.join(content(op_index, 'write', b) for b in range(first, first + n))


def write(uri, seed, size, trim, pause_every, conns):
    ops = operations(seed, size, trim)
    handles = []
    for _ in range(conns):
        h = nbd.NBD()
        h.connect_uri(uri)
        handles.append(h)
    if conns > 1 and not handles[0].can_multi_conn():
        sys.exit('the server does not advertise CAN_MULTI_CONN: a FLUSH on one connection promises nothing for the others')
    flushes = 0
    i = 0
    while i < len(ops):
        start = i
        while not ops[i][3]:
            i += 1
        i += 1
        print('issued', i, flush=True)
        keep = []
        for j in range(start, i):
            h = handles[j % conns]  # a batch spreads over the connections
            kind, first, n = ops[j][:3]
            if kind == 'write':
                buf = nbd.Buffer.from_bytearray(bytearray(payload(j, first, n)))
                keep.append((h, h.aio_pwrite(buf, first * BLOCK), buf))
            else:
                keep.append((h, h.aio_trim(n * BLOCK, first * BLOCK), None))
        while any(h.aio_in_flight() > 0 for h in handles):
            for h in handles:
                if h.aio_in_flight() > 0:
                    h.poll(-1 if conns == 1 else 1)
        for h, cookie, _ in keep:
            h.aio_command_completed(cookie)  # raises on an error reply
        if ops[i - 1][4]:
            handles[flushes % conns].flush()  # with multi-conn, covers what every connection completed
            flushes += 1
            print('flushed', i, flush=True)
            if pause_every and flushes % pause_every == 0:
                print('paused', i, flush=True)
                sys.stdin.readline()
    handles[0].flush()
    print('flushed', len(ops), flush=True)
    print('done', len(ops), flush=True)
    for h in handles:
        h.shutdown()


def check(uri, seed, size, trim, base_path, flushed, issued, out_path):
    ops = operations(seed, size, trim)
    nblocks = size // BLOCK
    durable = [None] * nblocks        # op index of the last op < flushed per block
    later = [[] for _ in range(nblocks)]  # op indexes flushed <= i < issued per block
    for j, (kind, first, n, _, _) in enumerate(ops[:issued]):
        for b in range(first, first + n):
            if j < flushed:
                durable[b] = j
            else:
                later[b].append(j)
    base = open(base_path, 'rb') if base_path != '-' else None
    out = open(out_path, 'wb') if out_path != '-' else None
    h = nbd.NBD()
    h.connect_uri(uri)
    if h.get_size() != size:
        print('size', h.get_size(), 'expected', size)
        sys.exit(1)
    bad = []
    kept_old = took_new = 0
    step = 256  # blocks per read: 1 MiB
    for first in range(0, nblocks, step):
        got_all = h.pread(step * BLOCK, first * BLOCK)
        old_all = base.read(step * BLOCK) if base else None
        if out:
            out.write(got_all)
        for k in range(step):
            b = first + k
            got = got_all[k * BLOCK:(k + 1) * BLOCK]
            d = durable[b]
            want = content(d, ops[d][0], b) if d is not None else (old_all[k * BLOCK:(k + 1) * BLOCK] if base else ZERO)
            if got == want:
                kept_old += 1 if later[b] else 0
                continue
            if any(got == content(j, ops[j][0], b) for j in later[b]):
                took_new += 1
                continue
            what = 'zeros' if got == ZERO else 'other data'
            bad.append('block %d (offset %d): %s; expected op %s%s' % (
                b, b * BLOCK, what, d if d is not None else 'base',
                (' or one of ops ' + ','.join(map(str, later[b][:8]))) if later[b] else ''))
    h.shutdown()
    if bad:
        print('BAD %d blocks, flushed=%d issued=%d:' % (len(bad), flushed, issued))
        print('\n'.join(bad[:10]))
        sys.exit(1)
    print('ok blocks=%d flushed=%d issued=%d unflushed-kept-old=%d unflushed-new=%d' % (nblocks, flushed, issued, kept_old, took_new))


if __name__ == '__main__':
    mode, uri, seed, size, trim = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5] == '1'
    if mode == 'write':
        write(uri, seed, size, trim, int(sys.argv[6]), int(sys.argv[7]))
    elif mode == 'check':
        check(uri, seed, size, trim, sys.argv[6], int(sys.argv[7]), int(sys.argv[8]), sys.argv[9])
    else:
        sys.exit('unknown mode ' + mode)

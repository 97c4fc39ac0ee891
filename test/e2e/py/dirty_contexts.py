# Metadata contexts of a vault server through python3-libnbd: LIST queries, SET of several
# contexts at once, BLOCK_STATUS (one chunk per context, REQ_ONE), refusals that leave the
# connection usable.
# Usage: /usr/bin/python3 dirty_contexts.py PORT VOL S1 S2 OTHER_SNAP DIRTY_CHUNKS
#   DIRTY_CHUNKS: comma-separated chunk indexes expected dirty between S1 and S2
import sys
import nbd

PORT, VOL, S1, S2, OTHER, DIRTY = sys.argv[1:7]
CHUNK = 4 * 1024 * 1024
EXPECTED = sorted(int(x) for x in DIRTY.split(","))
BITMAP = "qemu:dirty-bitmap:" + S1
checks = []


def check(name, cond, detail=""):
    if not cond:
        raise AssertionError(f"{name}: {detail}")
    checks.append(name)


def handle(export, structured=True):
    h = nbd.NBD()
    h.set_opt_mode(True)
    h.set_request_structured_replies(structured)
    h.set_export_name(export)
    h.connect_tcp("127.0.0.1", PORT)
    return h


def listed(h, queries):
    h.clear_meta_contexts()
    for q in queries:
        h.add_meta_context(q)
    got = []
    h.opt_list_meta_context(lambda name: got.append(name) or 0)
    return sorted(got)


snap2 = f"{VOL}@{S2}"
h = handle(snap2)
check("list all", listed(h, []) == sorted(["base:allocation", "qemu:allocation-depth", BITMAP]), listed(h, []))
check("list qemu:", listed(h, ["qemu:"]) == sorted(["qemu:allocation-depth", BITMAP]), listed(h, ["qemu:"]))
check("list qemu:dirty-bitmap:", listed(h, ["qemu:dirty-bitmap:"]) == [BITMAP], listed(h, ["qemu:dirty-bitmap:"]))
check("list exact", listed(h, [BITMAP]) == [BITMAP])
check("list base:", listed(h, ["base:"]) == ["base:allocation"])
check("list unknown", listed(h, ["qemu:dirty-bitmap:no-such", "x-other:thing"]) == [])
check("list another volume's snapshot", listed(h, ["qemu:dirty-bitmap:" + OTHER]) == [])
check("a later snapshot is no context of an earlier one", listed(h, ["qemu:dirty-bitmap:" + S2]) == [])

# SET several at once (with names that select nothing), then GO: two contexts, ids apart.
h.clear_meta_contexts()
for q in ["base:allocation", BITMAP, "qemu:dirty-bitmap:no-such", "qemu:dirty-bitmap:" + OTHER]:
    h.add_meta_context(q)
h.opt_go()
check("base:allocation selected", h.can_meta_context("base:allocation"))
check("bitmap selected", h.can_meta_context(BITMAP))
check("unknown not selected", not h.can_meta_context("qemu:dirty-bitmap:no-such"))
check("other volume's snapshot not selected", not h.can_meta_context("qemu:dirty-bitmap:" + OTHER))
size = h.get_size()


def status(h, offset, length, flags=0):
    seen = {}

    def cb(ctx, off, entries, err):
        check("callback offset", off == offset, (off, offset))
        seen[ctx] = entries
        return 0

    h.block_status(length, offset, cb, flags)
    return seen


def dirty_chunks(h):
    chunks, at = [], 0
    while at < size:
        entries = status(h, at, min(size - at, 2**31))[BITMAP]
        for k in range(0, len(entries), 2):
            length, flags = entries[k], entries[k + 1]
            check("bitmap flags are 0 or 1", flags in (0, 1), flags)
            if flags == 1:
                chunks.extend(range(at // CHUNK, (at + length + CHUNK - 1) // CHUNK))
            at += length
    return sorted(set(chunks))


seen = status(h, 0, size)
check("one chunk per context", sorted(seen) == sorted(["base:allocation", BITMAP]), list(seen))
check("dirty chunks", dirty_chunks(h) == EXPECTED, (dirty_chunks(h), EXPECTED))
one = status(h, 0, size, nbd.CMD_FLAG_REQ_ONE)
for ctx, entries in one.items():
    check("REQ_ONE: one extent " + ctx, len(entries) == 2 and 0 < entries[0] <= size, entries)
# a request inside a dirty chunk: one dirty extent, no longer than asked
first = EXPECTED[0] * CHUNK + 4096
inner = status(h, first, 8192, nbd.CMD_FLAG_REQ_ONE)[BITMAP]
check("inside a dirty chunk", inner == [8192, 1], inner)

h.shutdown()

# BLOCK_STATUS with only an unknown context selected: libnbd has nothing to ask for, the
# connection still reads.
h = handle(snap2)
h.add_meta_context("qemu:dirty-bitmap:no-such")
h.opt_go()
check("nothing selected", not h.can_meta_context("qemu:dirty-bitmap:no-such") and not h.can_meta_context("base:allocation"))
check("reads still work", len(h.pread(512, 0)) == 512)
h.shutdown()

# Without structured replies: LIST_META_CONTEXT is refused (NBD_REP_ERR_INVALID), the session goes on.
h = handle(snap2, structured=False)
h.add_meta_context(BITMAP)
try:
    h.opt_list_meta_context(lambda name: 0)
    raise AssertionError("LIST_META_CONTEXT without structured replies succeeded")
except nbd.Error as e:
    check("refused without structured replies", "invalid" in str(e).lower() or e.errno is not None, str(e))
h.opt_go()
check("no contexts without structured replies", not h.can_meta_context(BITMAP))
check("GO after the refusal", len(h.pread(512, 0)) == 512)
h.shutdown()

print(f"PASS {len(checks)} checks")

# Option haggling against `nbd-vault serve --memory disk=64M --memory ro=1M:ro`, via python3-libnbd.
# Usage: /usr/bin/python3 nbd_options.py PORT [memory|vault]. Exits non-zero (with a traceback) on
# any failure. With "vault": a vault serving volumes "disk" (64M, the default) and "ro" (1M) with
# a snapshot "s", whose export "ro@s" is the read-only one.
import errno
import sys
import nbd

PORT = sys.argv[1]
BACKEND = sys.argv[2] if len(sys.argv) > 2 else "memory"
HOST = "127.0.0.1"
RO = "ro@s" if BACKEND == "vault" else "ro"
EXPORTS = {"disk", "ro", "ro@s"} if BACKEND == "vault" else {"disk", "ro"}
DESCRIPTION = "nbd-vault volume" if BACKEND == "vault" else "memory export"
checks = []


def check(name, cond, detail=""):
    if not cond:
        raise AssertionError(f"{name}: {detail}")
    checks.append(name)


def handle(opt_mode=True, structured=True, flags=None, export="disk"):
    h = nbd.NBD()
    h.set_opt_mode(opt_mode)
    h.set_request_structured_replies(structured)
    if flags is not None:
        h.set_handshake_flags(flags)
    h.set_export_name(export)
    return h


# LIST: both exports, with descriptions.
h = handle()
h.connect_tcp(HOST, PORT)
seen = {}
h.opt_list(lambda name, desc: seen.__setitem__(name, desc) or 0)
check("list names", set(seen) == EXPORTS, seen)
check("list description", DESCRIPTION in seen["disk"], seen)

# INFO on an unknown export: ERR_UNKNOWN, and the session goes on.
h.set_export_name("nope")
try:
    h.opt_info()
    check("info unknown export fails", False)
except nbd.Error as e:
    check("info unknown export fails", True)
h.set_export_name("disk")
h.set_full_info(True)
h.opt_info()
check("info size", h.get_size() == 64 * 1024 * 1024, h.get_size())
check("info block size min", h.get_block_size(nbd.SIZE_MINIMUM) == 1)
check("info block size preferred", h.get_block_size(nbd.SIZE_PREFERRED) == 4 * 1024 * 1024)
check("info block size max", h.get_block_size(nbd.SIZE_MAXIMUM) == 32 * 1024 * 1024)
check("info description", DESCRIPTION in h.get_export_description())

# LIST_META_CONTEXT: base:allocation, with and without queries.
ctxs = []
h.opt_list_meta_context(lambda name: ctxs.append(name) or 0)
# a vault volume also offers qemu:allocation-depth (and, with snapshots, qemu:dirty-bitmap:*)
expected = ["base:allocation"] if BACKEND == "memory" else ["base:allocation", "qemu:allocation-depth"]
check("list meta context (no query)", sorted(ctxs) == expected, ctxs)
h.add_meta_context("base:allocation")
ctxs = []
h.opt_list_meta_context(lambda name: ctxs.append(name) or 0)
check("list meta context (query)", ctxs == ["base:allocation"], ctxs)

# GO: transmission flags as advertised.
h.opt_go()
check("go size", h.get_size() == 64 * 1024 * 1024)
check("structured", h.get_structured_replies_negotiated())
for cap in ("can_flush", "can_fua", "can_trim", "can_zero", "can_fast_zero", "can_cache", "can_multi_conn", "can_df"):
    check(cap, getattr(h, cap)() is True, cap)
check("meta context", h.can_meta_context("base:allocation"))
check("not read only", not h.is_read_only())
check("protocol", h.get_protocol() == "newstyle-fixed")
h.shutdown()

# ABORT is acked and ends the session cleanly.
h = handle()
h.connect_tcp(HOST, PORT)
h.opt_abort()
check("abort closes", h.aio_is_closed(), h.connection_state())

# Read-only export: READ_ONLY flag, no write features.
h = handle(opt_mode=False, export=RO)
h.connect_tcp(HOST, PORT)
check("ro flag", h.is_read_only())
check("ro no trim", not h.can_trim())
check("ro no zero", not h.can_zero())
h.shutdown()

# Default export (empty name) is the first --memory.
h = handle(opt_mode=False, export="")
h.connect_tcp(HOST, PORT)
check("default export", h.get_size() == 64 * 1024 * 1024)
h.shutdown()

# Without structured replies: no DF, no meta context.
h = handle(opt_mode=False, structured=False)
h.add_meta_context("base:allocation")
h.connect_tcp(HOST, PORT)
check("simple: not structured", not h.get_structured_replies_negotiated())
check("simple: no df", not h.can_df())
h.shutdown()

# Clients sending neither handshake flag (EXPORT_NAME + 124 zero bytes), and FIXED only.
for flags, name in ((0, "no flags"), (nbd.HANDSHAKE_FLAG_FIXED_NEWSTYLE, "fixed only"), (nbd.HANDSHAKE_FLAG_NO_ZEROES, "no-zeroes only")):
    h = handle(opt_mode=False, flags=flags)
    h.connect_tcp(HOST, PORT)
    h.pwrite(b"x" * 512, 4096)
    check(f"handshake {name}", h.pread(512, 4096) == b"x" * 512)
    h.shutdown()

# GO on an unknown export: error, then GO on a good one in the same session works.
h = handle(export="missing")
h.connect_tcp(HOST, PORT)
try:
    h.opt_go()
    check("go unknown fails", False)
except nbd.Error:
    check("go unknown fails", True)
h.set_export_name("disk")
h.opt_go()
check("go after unknown", h.get_size() == 64 * 1024 * 1024)
h.shutdown()

print(f"PASS {len(checks)} checks")

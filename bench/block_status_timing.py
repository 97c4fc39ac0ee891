# BLOCK_STATUS latency through python3-libnbd against a running nbd-vault server.
# Usage: /usr/bin/python3 block_status_timing.py URI CONTEXT REPEATS
# Prints one JSON line: first request (cold: loads the reference manifest), then the median and
# max of REPEATS requests of 4 GiB - 4 KiB at random offsets, and a walk over the whole export.
import json
import random
import sys
import time
import nbd

uri, context, repeats = sys.argv[1], sys.argv[2], int(sys.argv[3])
h = nbd.NBD()
h.add_meta_context(context)
h.connect_uri(uri)
size = h.get_size()
SPAN = 2**32 - 4096
extents = [0]


def cb(ctx, off, entries, err):
    if ctx == context:
        extents[0] += len(entries) // 2
    return 0


def one(offset):
    t = time.perf_counter()
    h.block_status(min(SPAN, size - offset), offset, cb)
    return (time.perf_counter() - t) * 1000


cold = one(0)
random.seed(1)
times = sorted(one(random.randrange(0, size - SPAN) // 4096 * 4096) for _ in range(repeats))
t = time.perf_counter()
at, requests = 0, 0
while at < size:
    got = []
    h.block_status(min(SPAN, size - at), at, lambda ctx, off, e, err: got.extend(e) if ctx == context else 0)
    at += sum(got[0::2])
    requests += 1
walk = (time.perf_counter() - t) * 1000
h.shutdown()
print(json.dumps({"context": context, "cold_ms": cold, "median_ms": times[len(times) // 2], "max_ms": times[-1], "walk_ms": walk, "walk_requests": requests, "size": size}))

#!/usr/bin/env python3
"""Bring a restored image up to a later snapshot by copying only the dirty extents.

  nbd-apply-changes.py nbd://HOST:PORT/VOL@S2 S1 IMAGE

IMAGE must hold VOL@S1 (e.g. `qemu-img convert -O raw nbd://HOST:PORT/VOL@S1 IMAGE`). The
script asks the server for the context qemu:dirty-bitmap:S1 on VOL@S2 (NBD BLOCK_STATUS) and
copies every dirty extent from VOL@S2 into IMAGE; afterwards IMAGE equals VOL@S2. A volume
resized between the two snapshots: IMAGE, as large as VOL@S1, is first cut or extended (with
zeros, which the bitmap does not mark) to the size of VOL@S2. Needs python3-libnbd (Debian:
python3-libnbd). Prints how much it copied. For a clone, S1 may be its origin snapshot
ORIGIN@SNAP (the context qemu:dirty-bitmap:ORIGIN@SNAP): IMAGE then holds ORIGIN@SNAP.
"""
import sys
import nbd

MAX_READ = 32 * 1024 * 1024  # nbd-vault's largest read
MAX_STATUS = 2**32 - 2**22  # one BLOCK_STATUS request at most (4 MiB aligned)


def base_uri(uri, base):
    """nbd://HOST:PORT/VOL@S2 -> nbd://HOST:PORT/VOL@S1 (the export name is after the last '/');
    a base that names its volume (ORIGIN@SNAP, a clone's origin snapshot) is that export."""
    head, _, export = uri.rpartition("/")
    volume = export.split("?")[0].rsplit("@", 1)[0]
    query = export[len(export.split("?")[0]):]
    return f"{head}/{base if '@' in base else f'{volume}@{base}'}{query}"


def size_of(uri):
    h = nbd.NBD()
    h.connect_uri(uri)
    size = h.get_size()
    h.shutdown()
    return size


def main():
    if len(sys.argv) != 4:
        sys.exit(__doc__)
    uri, base, image = sys.argv[1:]
    context = "qemu:dirty-bitmap:" + base
    h = nbd.NBD()
    h.add_meta_context(context)
    h.connect_uri(uri)
    if not h.can_meta_context(context):
        sys.exit(f"{uri} offers no context {context} (is {base} an older snapshot of the same volume?)")
    size = h.get_size()
    dirty = []  # (offset, length)
    at = 0
    while at < size:
        got = []
        h.block_status(min(MAX_STATUS, size - at), at, lambda ctx, off, e, err: got.extend(e) if ctx == context else 0)
        for k in range(0, len(got), 2):
            length = min(got[k], size - at)
            if got[k + 1] & 1:
                dirty.append((at, length))
            at += length
    copied = 0
    with open(image, "r+b") as f:
        f.seek(0, 2)
        if f.tell() != size:
            # resized between the snapshots: fine if IMAGE is as large as the base snapshot
            base_size = size_of(base_uri(uri, base))
            if f.tell() != base_size:
                sys.exit(f"{image} is {f.tell()} bytes, but {base} is {base_size} and the export {size}: restore the base snapshot first")
            f.truncate(size)
            print(f"{image} resized from {base_size} to {size} bytes, as the volume was between {base} and the export")
        for off, length in dirty:
            for piece in range(off, off + length, MAX_READ):
                n = min(MAX_READ, off + length - piece)
                f.seek(piece)
                f.write(h.pread(n, piece))
                copied += n
    h.shutdown()
    print(f"copied {copied} of {size} bytes in {len(dirty)} dirty extents")


if __name__ == "__main__":
    try:
        main()
    except (nbd.Error, OSError) as e:
        sys.exit(f"nbd-apply-changes: {e}")

#!/usr/bin/env python3
"""Push a qemu disk into an nbd-vault volume (full or incremental), then snapshot it.

qemu keeps the change record (a persistent dirty bitmap in the qcow2 image); nbd-vault keeps
every backup as a snapshot. Each run, over QMP:

  --full         transaction { add (or clear) the bitmap, blockdev-backup sync=full }:
                 the bitmap starts at exactly the point the full copy shows
  --incremental  blockdev-backup sync=incremental bitmap=NAME: only the clusters written
                 since the last backup; qemu clears the bitmap when the job succeeds

then `nbd-vault snapshot VOL NAME` freezes the volume as that backup (through the running
server). Restore any backup with `qemu-img convert nbd://HOST:PORT/VOL@NAME out.img`.

Example:
  qemu-push-backup.py --qmp /run/vm01.qmp --node drive0 --bitmap nbd-vault \\
      --target nbd://127.0.0.1:10809/vm01 --full --snapshot b1
  qemu-push-backup.py ... --incremental --snapshot b2

Python 3 standard library only. Exit status 0 on success, 1 with a message otherwise.
"""
import argparse
import json
import shlex
import socket
import subprocess
import sys
import time
import urllib.parse


class QmpError(Exception):
    pass


class Qmp:
    """A minimal QMP client: one command at a time, events queued."""

    def __init__(self, path, timeout):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        self.sock.connect(path)
        self.file = self.sock.makefile("rwb")
        self.events = []
        greeting = self._read()
        if "QMP" not in greeting:
            raise QmpError(f"not a QMP socket: {greeting}")
        self.command("qmp_capabilities")

    def _read(self):
        line = self.file.readline()
        if not line:
            raise QmpError("qemu closed the QMP connection")
        return json.loads(line)

    def command(self, name, **args):
        msg = {"execute": name}
        if args:
            msg["arguments"] = args
        self.file.write(json.dumps(msg).encode() + b"\n")
        self.file.flush()
        while True:
            reply = self._read()
            if "event" in reply:
                self.events.append(reply)
            elif "error" in reply:
                raise QmpError(f"{name}: {reply['error'].get('desc', reply['error'])}")
            elif "return" in reply:
                return reply["return"]

    def wait_event(self, name, match, deadline):
        while True:
            for i, ev in enumerate(self.events):
                if ev["event"] == name and match(ev.get("data", {})):
                    return self.events.pop(i)
            if time.monotonic() > deadline:
                raise QmpError(f"no {name} event before the deadline")
            self.events.append(self._read())


def target_node(uri, node_name):
    """blockdev-add arguments for an nbd:// or nbd+unix:// URI."""
    u = urllib.parse.urlparse(uri)
    export = urllib.parse.unquote(u.path.lstrip("/"))
    if not export:
        raise SystemExit(f"{uri}: the URI must name the volume, e.g. nbd://host:10809/vm01")
    if u.scheme == "nbd":
        server = {"type": "inet", "host": u.hostname or "localhost", "port": str(u.port or 10809)}
    elif u.scheme == "nbd+unix":
        sock = urllib.parse.parse_qs(u.query).get("socket")
        if not sock:
            raise SystemExit(f"{uri}: nbd+unix needs ?socket=PATH")
        server = {"type": "unix", "path": sock[0]}
    else:
        raise SystemExit(f"{uri}: use nbd:// or nbd+unix://")
    return export, {"driver": "raw", "node-name": node_name, "file": {"driver": "nbd", "server": server, "export": export}}


def bitmap_exists(qmp, node, bitmap):
    for n in qmp.command("query-named-block-nodes", flat=True):
        if n.get("node-name") == node:
            return any(b.get("name") == bitmap for b in n.get("dirty-bitmaps", []))
    raise QmpError(f"no block node named {node}")


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--qmp", required=True, help="path of qemu's QMP unix socket")
    p.add_argument("--node", required=True, help="node name of the disk to back up (a qcow2 node for a persistent bitmap)")
    p.add_argument("--bitmap", default="nbd-vault", help="name of the persistent dirty bitmap (default nbd-vault)")
    p.add_argument("--target", required=True, help="nbd://HOST:PORT/VOLUME (or nbd+unix:///VOLUME?socket=PATH) of the vault volume")
    mode = p.add_mutually_exclusive_group(required=True)
    mode.add_argument("--full", action="store_true", help="copy everything and start the bitmap")
    mode.add_argument("--incremental", action="store_true", help="copy only what the bitmap marks")
    p.add_argument("--snapshot", help="then run `nbd-vault snapshot VOLUME NAME`")
    p.add_argument("--nbd-vault", default="nbd-vault", help="how to run nbd-vault (default: nbd-vault)")
    p.add_argument("--timeout", type=float, default=3600, help="seconds to wait for the backup job")
    a = p.parse_args()

    job = f"nbdvault-{int(time.time())}"
    tgt = f"{job}-t"  # node names are at most 31 characters
    volume, node_args = target_node(a.target, tgt)
    qmp = Qmp(a.qmp, timeout=min(a.timeout, 600))
    started = time.monotonic()
    qmp.command("blockdev-add", **node_args)
    try:
        backup = {"job-id": job, "device": a.node, "target": tgt}
        if a.full:
            start_bitmap = {"node": a.node, "name": a.bitmap}
            if bitmap_exists(qmp, a.node, a.bitmap):
                bitmap_action = {"type": "block-dirty-bitmap-clear", "data": start_bitmap}
            else:
                bitmap_action = {"type": "block-dirty-bitmap-add", "data": {**start_bitmap, "persistent": True}}
            # One transaction: the bitmap records every write after the point the copy shows.
            qmp.command("transaction", actions=[bitmap_action, {"type": "blockdev-backup", "data": {**backup, "sync": "full"}}])
        else:
            if not bitmap_exists(qmp, a.node, a.bitmap):
                raise QmpError(f"node {a.node} has no bitmap {a.bitmap}: run a --full backup first")
            qmp.command("blockdev-backup", **backup, sync="incremental", bitmap=a.bitmap)
        ev = qmp.wait_event("BLOCK_JOB_COMPLETED", lambda d: d.get("device") == job, time.monotonic() + a.timeout)
        data = ev.get("data", {})
        if data.get("error"):
            if a.full:
                # The bitmap would claim a base that does not exist: drop it, the next run must be full.
                qmp.command("block-dirty-bitmap-remove", node=a.node, name=a.bitmap)
            raise QmpError(f"backup job failed: {data['error']}")
        kind = "full" if a.full else "incremental"
        print(f"{kind} backup of {a.node} to {a.target}: {data.get('offset', 0)} bytes in {time.monotonic() - started:.1f} s", flush=True)
    finally:
        qmp.command("blockdev-del", **{"node-name": tgt})  # closes (and flushes) the NBD connection
    if a.snapshot:
        cmd = shlex.split(a.nbd_vault) + ["snapshot", volume, a.snapshot]
        r = subprocess.run(cmd)
        if r.returncode != 0:
            raise SystemExit(f"{' '.join(cmd)} failed with status {r.returncode}")


if __name__ == "__main__":
    try:
        main()
    except (QmpError, OSError) as e:
        print(f"qemu-push-backup: {e}", file=sys.stderr)
        sys.exit(1)

// A realistic disk image for benchmarks: an ext4 filesystem built with mkfs.ext4 -d (no mount)
// from files under /usr, ~60 % full. Shared by the codec and vault benchmarks.
import { execFileSync } from 'node:child_process';
import { copyFileSync, lstatSync, mkdirSync, openSync as openFd, readdirSync, readSync, closeSync, rmSync } from 'node:fs';
import path from 'node:path';

const CHUNK_BYTES = 4 * 1024 * 1024;
const FILL_RATIO = 0.6;
const blocks = (bytes: number) => Math.ceil(bytes / 4096) * 4096 + 256;

export function buildDiskImage(dir: string, imageMiB: number): string {
  const staging = path.join(dir, 'staging');
  mkdirSync(staging);
  const budget = imageMiB * 1024 * 1024 * FILL_RATIO;
  let copied = 0;
  let entries = 0; // files and directories: the inode count mkfs needs
  const walk = (src: string, dst: string): void => {
    let names: string[];
    try {
      names = readdirSync(src).sort();
    } catch {
      return;
    }
    for (const name of names) {
      if (copied >= budget) return;
      const from = path.join(src, name);
      const to = path.join(dst, name);
      try {
        const st = lstatSync(from);
        if (st.isDirectory()) {
          mkdirSync(to);
          entries++;
          copied += 4096;
          walk(from, to);
        } else if (st.isFile() && copied + blocks(st.size) <= budget) {
          copyFileSync(from, to);
          copied += blocks(st.size); // what it occupies: whole 4 KiB blocks (+ an inode)
          entries++;
        }
      } catch {
        // unreadable: skip
      }
    }
  };
  for (const top of ['/usr/lib', '/usr/share', '/usr/bin', '/usr/include', '/usr/libexec', '/usr/sbin']) {
    const to = path.join(staging, top.slice(1).replace('/', '_'));
    mkdirSync(to);
    walk(top, to);
  }
  const image = path.join(dir, 'disk.ext4');
  execFileSync('mkfs.ext4', ['-q', '-F', '-b', '4096', '-N', String(Math.ceil(entries * 1.2) + 1024), '-d', staging, image, `${imageMiB}M`], { stdio: 'inherit' });
  rmSync(staging, { recursive: true, force: true });
  console.log(`image: ${imageMiB} MiB ext4, ${(copied / 2 ** 20).toFixed(0)} MiB of /usr files (${((100 * copied) / (imageMiB * 2 ** 20)).toFixed(0)} % full)`);
  return image;
}

export function readChunks(image: string): Buffer[] {
  const fd = openFd(image, 'r');
  const chunks: Buffer[] = [];
  try {
    for (;;) {
      const chunk = Buffer.allocUnsafeSlow(CHUNK_BYTES);
      const n = readSync(fd, chunk, 0, CHUNK_BYTES, null);
      if (n === 0) break;
      chunks.push(n === CHUNK_BYTES ? chunk : chunk.subarray(0, n));
    }
  } finally {
    closeSync(fd);
  }
  return chunks;
}

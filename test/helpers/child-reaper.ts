// Servers a test starts must never outlive it or keep it alive: a failed assertion that skips a
// stop() would otherwise hang the test file (and CI) on the child's open pipes.
import type { ChildProcess } from 'node:child_process';

const running = new Set<ChildProcess>();
process.on('exit', () => {
  for (const c of running) c.kill('SIGKILL');
});

/** SIGKILL `child` when the test process exits, and stop it (and its pipes) from holding the
 *  event loop open. Whoever waits for its exit must hold the loop open itself (a timer). */
export function reapOnExit(child: ChildProcess): void {
  running.add(child);
  child.once('exit', () => running.delete(child));
  child.unref();
  for (const s of [child.stdout, child.stderr]) (s as unknown as { unref?: () => void } | null)?.unref?.();
}

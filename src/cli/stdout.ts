// Standard output that its reader may close early (`nbd-vault snapshot list web01 | head -1`).
// Node reports the EPIPE as an 'error' event that nobody handles, a crash with a stack trace,
// possibly halfway through a prune. Here the output ends and the command's work goes on; only a
// command whose output *is* its work (export to -) fails, with a clear message.
import { VaultError } from '../errors';

let closed = false;
const waiting = new Set<() => void>();

/** Once, at startup. Errors other than EPIPE stay fatal, as before. */
export function watchStdout(): void {
  process.stdout.on('error', (err: NodeJS.ErrnoException) => {
    if (err.code !== 'EPIPE') throw err;
    closed = true;
    for (const wake of waiting) wake();
    waiting.clear();
  });
}

export function stdoutClosed(): boolean {
  return closed;
}

/** A line for people or scripts; dropped once the reader has gone. */
export function out(text: string): void {
  if (!closed) process.stdout.write(text.endsWith('\n') ? text : text + '\n');
}

const gone = () => new VaultError('ERR_IO', 'standard output was closed before all the data was written');

/** Data that must all arrive (export to -): waits for the pipe to drain, throws once it closed. */
export async function writeStdout(data: Buffer): Promise<void> {
  if (closed) throw gone();
  if (!process.stdout.write(data)) {
    await new Promise<void>((resolve) => {
      const wake = () => {
        waiting.delete(wake);
        process.stdout.off('drain', wake);
        resolve();
      };
      waiting.add(wake);
      process.stdout.once('drain', wake);
    });
  }
  if (closed) throw gone();
}

// A progress bar for long CLI work (import, export, verify, delete, gc, keys rotate): cli-progress,
// with rate and ETA, drawn on stderr only when stderr is a terminal; nothing at all in pipes and
// logs (so scripts see only the final result). NBD_VAULT_NO_PROGRESS turns it off on a terminal.
import { SingleBar } from 'cli-progress';
import { formatSize } from '../util/size';

export class Progress {
  private readonly bar: SingleBar | null;
  private readonly started = Date.now();
  private total: number;
  private running = false;

  constructor(label: string, total: number, private readonly unit: 'bytes' | 'objects' = 'bytes', stream: NodeJS.WriteStream = process.stderr) {
    this.total = total;
    const tty = Boolean(stream.isTTY) && !progressTurnedOff(process.env.NBD_VAULT_NO_PROGRESS);
    this.bar = tty
      ? new SingleBar({
          stream,
          format: `${label} [{bar}] {percentage}% {amount} {rate} ETA {eta_formatted}`,
          barsize: 30,
          hideCursor: true,
          clearOnComplete: false,
          etaBuffer: 50,
          fps: 10,
          noTTYOutput: false,
        })
      : null;
  }

  update(done: number, total = this.total): void {
    this.total = total;
    if (!this.bar) return;
    const payload = { amount: this.amount(done, total), rate: this.rate(done) };
    if (!this.running) {
      this.bar.start(Math.max(total, 1), done, payload);
      this.running = true;
    } else {
      this.bar.setTotal(Math.max(total, 1));
      this.bar.update(done, payload);
    }
  }

  done(): void {
    if (this.bar && this.running) this.bar.stop();
    this.running = false;
  }

  private amount(done: number, total: number): string {
    return this.unit === 'bytes' ? `${formatSize(done)}/${formatSize(total)}` : `${done}/${total}`;
  }

  private rate(done: number): string {
    const secs = Math.max(0.001, (Date.now() - this.started) / 1000);
    return this.unit === 'bytes' ? `${formatSize(done / secs)}/s` : `${Math.round(done / secs)}/s`;
  }
}

/** NBD_VAULT_NO_PROGRESS set to anything but "", 0, false or no. */
export function progressTurnedOff(value: string | undefined): boolean {
  return value !== undefined && !['', '0', 'false', 'no'].includes(value.trim().toLowerCase());
}

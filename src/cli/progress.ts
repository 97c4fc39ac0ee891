// A progress bar for long CLI work (import, export, verify, delete): drawn on stderr only when
// stderr is a terminal; silent in pipes and logs, so scripts see only the final result.

export class Progress {
  private readonly tty: boolean;
  private lastDraw = 0;
  private readonly start = Date.now();

  constructor(private readonly label: string, private total: number, private readonly unit: 'bytes' | 'objects' = 'bytes', stream: NodeJS.WriteStream = process.stderr) {
    this.tty = Boolean(stream.isTTY) && process.env.NBD_VAULT_NO_PROGRESS === undefined;
    this.stream = stream;
  }
  private readonly stream: NodeJS.WriteStream;

  update(done: number, total = this.total): void {
    this.total = total;
    if (!this.tty) return;
    const now = Date.now();
    if (now - this.lastDraw < 100 && done < total) return;
    this.lastDraw = now;
    const frac = total > 0 ? Math.min(1, done / total) : 1;
    const width = 30;
    const filled = Math.round(frac * width);
    const secs = Math.max(0.001, (now - this.start) / 1000);
    const rate = this.unit === 'bytes' ? `${(done / secs / 2 ** 20).toFixed(1)} MiB/s` : `${Math.round(done / secs)}/s`;
    const amount = this.unit === 'bytes' ? `${(done / 2 ** 20).toFixed(0)}/${(total / 2 ** 20).toFixed(0)} MiB` : `${done}/${total}`;
    this.stream.write(`\r${this.label} [${'#'.repeat(filled)}${'-'.repeat(width - filled)}] ${(frac * 100).toFixed(0).padStart(3)}% ${amount} ${rate}   `);
  }

  done(): void {
    if (this.tty) this.stream.write('\n');
  }
}

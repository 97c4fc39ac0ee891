// Shared memory a task's inputs are copied into for a worker, kept for the next task: no allocation
// per task (each fresh buffer cost page faults on first touch and V8 external memory toward its
// next full GC). At most one buffer per task in flight is ever made: a task takes one when it is
// dispatched and gives it back once the worker is done with it (replied, or never got it).
export class StagingBuffers {
  private readonly free: Buffer[] = [];

  constructor(readonly bytes: number) {}

  take(): Buffer {
    return this.free.pop() ?? Buffer.from(new SharedArrayBuffer(this.bytes));
  }

  give(buf: Buffer): void {
    this.free.push(buf);
  }
}

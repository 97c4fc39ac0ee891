// FaultyStore: fault injection for tests (in the spirit of nbdkit's error filter).
//
// Rules are data: per-operation error probability and kind, added latency, outage windows (by
// time or by call count), plus a script (`failNext(op, n, code)`) consumed before any rule.
// Randomness comes only from the injected rng (use seededRandom(seed)), time from the injected
// now/sleep, so a failing run replays exactly.
// A fault's phase says when it strikes:
//   'before' — the request never reaches the inner store (nothing happened);
//   'after'  — the inner operation ran and succeeded, then the reply is "lost" (outcome unknown to
//              the caller: the case RetryStore must read back for conditional puts). For list(),
//              'after' fails the iteration after the first item has been yielded.
// Injected errors are VaultErrors with the chosen code and a message starting `faulty:`.
// A fault aimed at 'get' (rule, outage or script) also strikes getRange (a ranged read is a GET);
// one aimed at 'getRange' strikes only ranged reads. Counters keep the two apart.
// Guarantees: with no rules, no script and `armed` true, it is a transparent decorator; every
// method is written out. Counters (`calls`, `injected`) let tests assert what happened.
import { VaultError, type VaultErrorCode } from '../errors';
import { childSegments, type ObjectInfo, type ObjectStore, type PutOptions, type StoredObject, type StoreLayer, type StoreProps } from './object-store';

export type StoreOp = 'get' | 'getRange' | 'head' | 'put' | 'delete' | 'deleteMany' | 'list';
export type FaultPhase = 'before' | 'after';
const ALL_OPS: readonly StoreOp[] = ['get', 'getRange', 'head', 'put', 'delete', 'deleteMany', 'list'];

export interface FaultRule {
  /** Operations this rule applies to (default: all). */
  readonly ops?: readonly StoreOp[];
  /** Chance per call, 0..1. */
  readonly probability: number;
  /** Default ERR_STORE_TRANSIENT. */
  readonly code?: VaultErrorCode;
  /** Default 'before'. */
  readonly phase?: FaultPhase;
}

export interface Outage {
  /** Time window [fromMs, toMs) relative to the store's creation (per `now`)... */
  readonly fromMs?: number;
  readonly toMs?: number;
  /** ...or call window [fromCall, toCall) over all operations (first call is 0). */
  readonly fromCall?: number;
  readonly toCall?: number;
  readonly ops?: readonly StoreOp[];
  /** Default ERR_STORE_TRANSIENT. */
  readonly code?: VaultErrorCode;
}

export interface FaultRules {
  readonly rules?: readonly FaultRule[];
  readonly outages?: readonly Outage[];
  /** Added latency per call: a fixed delay or uniform in [min, max]. */
  readonly latencyMs?: number | { readonly min: number; readonly max: number };
}

export interface FaultyOptions {
  readonly now?: () => number;
  readonly sleep?: (ms: number) => Promise<void>;
}

interface Scripted {
  op: StoreOp;
  remaining: number;
  code: VaultErrorCode;
  phase: FaultPhase;
}

export class FaultyStore implements ObjectStore {
  readonly name: string;
  readonly props: StoreProps;
  /** When false, no faults and no latency are injected. */
  armed = true;
  /** Calls per operation (attempts reaching this layer). */
  readonly calls: Record<StoreOp, number> = { get: 0, getRange: 0, head: 0, put: 0, delete: 0, deleteMany: 0, list: 0 };
  /** Faults injected per operation. */
  readonly injected: Record<StoreOp, number> = { get: 0, getRange: 0, head: 0, put: 0, delete: 0, deleteMany: 0, list: 0 };
  private readonly inner: ObjectStore;
  private rules: FaultRules;
  private readonly rng: () => number;
  private readonly now: () => number;
  private readonly sleep: (ms: number) => Promise<void>;
  private readonly t0: number;
  private totalCalls = 0;
  private script: Scripted[] = [];

  constructor(inner: ObjectStore, rules: FaultRules, rng: () => number, opts: FaultyOptions = {}) {
    checkRules(rules);
    if (typeof rng !== 'function') throw new VaultError('ERR_INVALID_ARGUMENT', 'faulty store: rng must be a function (use seededRandom(seed))');
    this.inner = inner;
    this.name = `faulty(${inner.name})`;
    this.props = inner.props;
    this.rules = rules;
    this.rng = rng;
    this.now = opts.now ?? Date.now;
    this.sleep = opts.sleep ?? ((ms) => new Promise((resolve) => setTimeout(resolve, ms)));
    this.t0 = this.now();
  }

  /** The next `n` calls of `op` fail with `code` (before any random rule is consulted). */
  failNext(op: StoreOp, n = 1, code: VaultErrorCode = 'ERR_STORE_TRANSIENT', phase: FaultPhase = 'before'): void {
    this.script.push({ op, remaining: n, code, phase });
  }

  setRules(rules: FaultRules): void {
    checkRules(rules);
    this.rules = rules;
  }

  get totalInjected(): number {
    return Object.values(this.injected).reduce((a, b) => a + b, 0);
  }

  async get(key: string, into?: Buffer): Promise<StoredObject> {
    const phase = await this.enter('get', key);
    const r = await this.inner.get(key, into);
    this.leave('get', key, phase);
    return r;
  }

  async getRange(key: string, offset: number, length: number): Promise<Buffer> {
    const phase = await this.enter('getRange', key);
    const r = await this.inner.getRange(key, offset, length);
    this.leave('getRange', key, phase);
    return r;
  }

  async head(key: string): Promise<ObjectInfo | null> {
    const phase = await this.enter('head', key);
    const r = await this.inner.head(key);
    this.leave('head', key, phase);
    return r;
  }

  async put(key: string, body: Buffer, opts?: PutOptions): Promise<{ etag: string }> {
    const phase = await this.enter('put', key);
    const r = await this.inner.put(key, body, opts);
    this.leave('put', key, phase);
    return r;
  }

  async delete(key: string): Promise<void> {
    const phase = await this.enter('delete', key);
    await this.inner.delete(key);
    this.leave('delete', key, phase);
  }

  async deleteMany(keys: readonly string[]): Promise<void> {
    const phase = await this.enter('deleteMany', keys[0] ?? '');
    await this.inner.deleteMany(keys);
    this.leave('deleteMany', keys[0] ?? '', phase);
  }

  async listChildren(prefix: string): Promise<string[]> {
    const phase = await this.enter('list', prefix);
    const segs = await childSegments(this.inner, prefix);
    this.leave('list', prefix, phase);
    return segs;
  }

  async *list(prefix: string): AsyncIterable<ObjectInfo> {
    const phase = await this.enter('list', prefix);
    let yielded = 0;
    for await (const info of this.inner.list(prefix)) {
      yield info;
      if (++yielded === 1) this.leave('list', prefix, phase);
    }
    if (yielded === 0) this.leave('list', prefix, phase);
  }

  close(): Promise<void> {
    return this.inner.close();
  }

  unwrap(): ObjectStore | null {
    return this.inner;
  }

  // ---- mechanism ----

  /** Counts the call, adds latency, throws a 'before' fault, or returns a pending 'after' fault. */
  private async enter(op: StoreOp, key: string): Promise<VaultErrorCode | null> {
    const call = this.totalCalls++;
    this.calls[op]++;
    if (!this.armed) return null;
    const lat = this.rules.latencyMs;
    if (lat !== undefined) {
      const ms = typeof lat === 'number' ? lat : lat.min + this.rng() * (lat.max - lat.min);
      if (ms > 0) await this.sleep(ms);
    }
    const fault = this.pick(op, call);
    if (!fault) return null;
    if (fault.phase === 'before') throw this.inject(op, key, fault.code, 'before');
    return fault.code;
  }

  private leave(op: StoreOp, key: string, pendingAfter: VaultErrorCode | null): void {
    if (pendingAfter) throw this.inject(op, key, pendingAfter, 'after');
  }

  private pick(op: StoreOp, call: number): { code: VaultErrorCode; phase: FaultPhase } | null {
    const s = this.script.find((x) => aims(x.op, op) && x.remaining > 0);
    if (s) {
      s.remaining--;
      this.script = this.script.filter((x) => x.remaining > 0);
      return { code: s.code, phase: s.phase };
    }
    const t = this.now() - this.t0;
    for (const o of this.rules.outages ?? []) {
      if (o.ops && !o.ops.some((x) => aims(x, op))) continue;
      const inTime = o.fromMs !== undefined || o.toMs !== undefined ? t >= (o.fromMs ?? 0) && t < (o.toMs ?? Infinity) : true;
      const inCalls = o.fromCall !== undefined || o.toCall !== undefined ? call >= (o.fromCall ?? 0) && call < (o.toCall ?? Infinity) : true;
      if (inTime && inCalls) return { code: o.code ?? 'ERR_STORE_TRANSIENT', phase: 'before' };
    }
    for (const r of this.rules.rules ?? []) {
      if (r.ops && !r.ops.some((x) => aims(x, op))) continue;
      if (this.rng() < r.probability) return { code: r.code ?? 'ERR_STORE_TRANSIENT', phase: r.phase ?? 'before' };
    }
    return null;
  }

  private inject(op: StoreOp, key: string, code: VaultErrorCode, phase: FaultPhase): VaultError {
    this.injected[op]++;
    return new VaultError(code, `faulty: injected ${code} on ${op} ${key} (${phase === 'after' ? 'after the operation ran' : 'operation not run'})`);
  }
}

/** Does a fault aimed at `target` strike a call of `op`? */
function aims(target: StoreOp, op: StoreOp): boolean {
  return target === op || (target === 'get' && op === 'getRange');
}

/** A StoreLayer for composeStore; the rules are checked now. */
export function faultyLayer(rules: FaultRules, rng: () => number, opts: FaultyOptions = {}): StoreLayer {
  checkRules(rules);
  return (inner) => new FaultyStore(inner, rules, rng, opts);
}

function checkRules(rules: FaultRules): void {
  const bad = (why: string): VaultError => new VaultError('ERR_INVALID_ARGUMENT', `faulty store: ${why}`);
  if (!rules || typeof rules !== 'object') throw bad('rules must be an object');
  for (const r of rules.rules ?? []) {
    if (!(r.probability >= 0 && r.probability <= 1)) throw bad(`probability must be in [0, 1], got ${r.probability}`);
    for (const op of r.ops ?? []) if (!ALL_OPS.includes(op)) throw bad(`unknown operation ${op}`);
    if (r.phase !== undefined && r.phase !== 'before' && r.phase !== 'after') throw bad(`unknown phase ${String(r.phase)}`);
  }
  for (const o of rules.outages ?? []) {
    const timed = o.fromMs !== undefined || o.toMs !== undefined;
    const counted = o.fromCall !== undefined || o.toCall !== undefined;
    if (!timed && !counted) throw bad('an outage needs fromMs/toMs or fromCall/toCall');
    for (const op of o.ops ?? []) if (!ALL_OPS.includes(op)) throw bad(`unknown operation ${op}`);
  }
  const lat = rules.latencyMs;
  if (lat !== undefined) {
    const ok = typeof lat === 'number' ? lat >= 0 : lat.min >= 0 && lat.max >= lat.min;
    if (!ok) throw bad('latencyMs must be >= 0 (or {min, max} with 0 <= min <= max)');
  }
}

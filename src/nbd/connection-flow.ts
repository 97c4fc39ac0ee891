// When one connection may parse another request, and when its socket is paused. Backpressure:
// parsing stops and the socket is paused while this connection's requests in flight plus what
// its unsent replies keep alive (reply-memory.ts) reach maxInFlightBytes (its budget), or its
// unsent replies alone reach MAX_UNSENT_REPLY_BYTES (a client that does not read its replies
// costs at most that, plus the kernel's buffers), or its requests in flight plus unsent replies
// reach MAX_IN_FLIGHT_REQUESTS; it resumes as requests finish and replies reach the kernel. With
// a process memory budget (serve --memory-limit), what the connection holds (requests in flight,
// unsent replies, the WRITE payload being read) plus the next request must also be covered by
// its share of that budget (budget-share.ts), checked between requests: while the budget has no
// room the connection waits its turn (FIFO with every other holder) without reading. Fairness
// between connections: fair-turns.ts.
import type { Socket } from 'node:net';
import type { MemoryBudget } from '../util/memory-budget';
import { BudgetShare } from './budget-share';
import { FairTurns } from './fair-turns';
import { ReplyMemory } from './reply-memory';
import { CONTENDED_MIN_PROGRESS_BYTES, CONTENDED_STALL_MS } from './reply-writer';
import type { RequestReader } from './request-reader';

/** Requests in flight plus unsent replies per connection, whatever their size (bounds floods
 *  of tiny requests and of replies that share one buffer). */
const MAX_IN_FLIGHT_REQUESTS = 1024;
/** Parsing stops while the replies waiting for the socket (beyond what the kernel took) hold
 *  this much: a client that does not read its replies costs this, not its whole in-flight
 *  budget, and a client that floods and reconnects makes us do that much work per round, not
 *  64 MiB of it. A client that reads keeps its pipeline: the kernel buffers and the requests
 *  in flight still hold up to maxInFlightBytes. */
const MAX_UNSENT_REPLY_BYTES = 8 * 1024 * 1024;
/** Input left unparsed at the end of a turn above which the socket is paused until the next. */
const TURN_PAUSE_BYTES = 1024 * 1024;

/** What the flow control reads of its connection, and what it asks of it. */
export interface FlowHost {
  /** the socket NBD is spoken on (the TLS one after STARTTLS) */
  socket(): Socket;
  /** the transmission parser (null before transmission) */
  reader(): RequestReader | null;
  /** the connection is closed or dropped */
  ended(): boolean;
  /** the client sent DISC: nothing after it is parsed */
  discReceived(): boolean;
  /** parse on: the budget has room again */
  pump(): void;
  /** parse on: a later turn has come */
  nextTurn(): void;
  /** drop the connection, with a warning */
  drop(why: string): void;
}

export class ConnectionFlow {
  private inFlightBytes = 0;
  private inFlightRequests = 0;
  private readonly replyMemory = new ReplyMemory();
  private readonly budget: BudgetShare;
  private readPaused = false;
  /** requests parsed whole so far (a payload watch tells a new payload from a stuck one) */
  private requestsParsed = 0;
  private payloadTimer: NodeJS.Timeout | null = null;
  /** requests and their bytes started in this turn; reset by the scheduled next turn */
  private readonly turns = new FairTurns();

  constructor(
    private readonly host: FlowHost,
    private readonly maxInFlightBytes: number,
    /** the process memory budget this connection's requests and replies also draw from */
    private readonly memoryBudget: MemoryBudget | undefined,
  ) {
    this.budget = new BudgetShare(memoryBudget, () => host.pump());
  }

  get requestsInFlight(): number {
    return this.inFlightRequests;
  }

  /** The socket is paused by us (not for the handshake's buffering). */
  get paused(): boolean {
    return this.readPaused;
  }

  /** Parsing waits: the socket is paused, or the connection waits for its next turn. */
  get waiting(): boolean {
    return this.readPaused || this.turns.waiting;
  }

  /** A request was parsed (DISC included). */
  requestParsed(): void {
    this.requestsParsed++;
  }

  /** A request holding `bytes` starts: it counts against the budgets and this turn. */
  requestStarted(bytes: number): void {
    this.inFlightBytes += bytes;
    this.inFlightRequests++;
    this.turns.count(bytes);
  }

  /** A request from requestStarted() is answered. */
  requestDone(bytes: number): void {
    this.inFlightBytes -= bytes;
    this.inFlightRequests--;
    this.trimBudget();
  }

  /** A reply queued on the socket: counted until the returned release runs (it was written). */
  holdReply(bufs: readonly Buffer[]): () => void {
    return this.replyMemory.hold(bufs);
  }

  mustStopParsing(): boolean {
    return this.mustPause() || this.turnUsedUp();
  }

  /** Parsing ran out of input or was `stopped`: yields a used-up turn, and pauses the socket
   *  when parsing must stop, resumes it when it may go on. */
  afterParsing(stopped: boolean): void {
    let stop = stopped || this.mustStopParsing();
    if (this.turnUsedUp()) {
      this.yieldTurn();
      // Stopped only for the turn: the socket keeps flowing (no pause/resume per turn) while
      // what waits unparsed stays small.
      if (!this.mustPause() && this.host.reader()!.pendingBytes < TURN_PAUSE_BYTES) stop = false;
    }
    if (stop) this.pause();
    else if (this.readPaused) {
      this.readPaused = false;
      this.host.socket().resume();
    }
    this.watchPayload();
  }

  /** Stops reading from the socket until parsing may go on. */
  pause(): void {
    if (this.readPaused) return;
    this.readPaused = true;
    this.host.socket().pause();
  }

  /** Reads on whatever held the socket (a closing connection reads on to the client's FIN). */
  readOn(): void {
    this.readPaused = false;
    this.host.socket().resume();
  }

  /** Other holders of the process memory budget wait for room (this connection's among it). */
  othersWaitForMemory(): boolean {
    return (this.memoryBudget?.stats().waiting ?? 0) > 0;
  }

  /** Something was given back: return what the budget share no longer needs. */
  trimBudget(): void {
    this.budget.trim(this.memoryHeld());
  }

  /** The connection ended: no more payload watch or turn. */
  stopTimers(): void {
    this.stopPayloadWatch();
    this.turns.cancel();
  }

  /** The connection is gone: its budget share goes back whole. */
  closeBudget(): void {
    this.budget.close();
  }

  /** Stop reading from the socket: done, or over the budget. */
  private mustPause(): boolean {
    return (
      this.host.discReceived() ||
      this.host.ended() ||
      this.inFlightBytes + this.replyMemory.heldBytes >= this.maxInFlightBytes ||
      this.replyMemory.heldBytes >= MAX_UNSENT_REPLY_BYTES ||
      this.inFlightRequests + this.replyMemory.unsentReplies >= MAX_IN_FLIGHT_REQUESTS ||
      !this.budgetCoversNext()
    );
  }

  /** The process budget covers what this connection holds plus the next request (checked
   *  between requests only: a WRITE payload was covered whole when its header was peeked, so a
   *  connection never waits for budget holding half a payload that only more reading frees). */
  private budgetCoversNext(): boolean {
    const reader = this.host.reader();
    if (!reader || reader.payloadInProgress > 0) return true;
    return this.budget.cover(this.memoryHeld() + (reader.peekLength() ?? 0));
  }

  /** What this connection's budget share covers: requests in flight, what its unsent replies
   *  keep alive, and the WRITE payload being read. (Input not yet parsed is socket buffering,
   *  bounded apart: a connection waiting for the budget must hold nothing it cannot give back
   *  by itself, or waiters could deadlock.) */
  private memoryHeld(): number {
    return this.inFlightBytes + this.replyMemory.heldBytes + (this.host.reader()?.payloadInProgress ?? 0);
  }

  /** A WRITE payload being read holds its whole length of the budget until it is in: one that
   *  stops coming (a client sending 1 KiB every 2 s) is given CONTENDED_STALL_MS to move
   *  CONTENDED_MIN_PROGRESS_BYTES while others wait for that memory, as unread replies are (it
   *  locked every client out, for good). A slow payload that moves goes on. */
  private watchPayload(): void {
    const reader = this.host.reader();
    if (!reader || reader.payloadInProgress === 0) {
      this.stopPayloadWatch();
      return;
    }
    if (this.payloadTimer) return;
    const parsed = this.requestsParsed;
    const received = reader.payloadReceived;
    const check = () => {
      this.payloadTimer = null;
      if (reader.payloadInProgress === 0 || this.host.ended()) return;
      // (not while we hold its socket paused: its requests in flight waiting on the store, say)
      const stuck = !this.readPaused && this.requestsParsed === parsed && reader.payloadReceived - received < CONTENDED_MIN_PROGRESS_BYTES;
      if (stuck && this.othersWaitForMemory()) return this.host.drop("client stopped sending a request's payload");
      this.watchPayload(); // it moved, or nobody waits: watch on from here
    };
    this.payloadTimer = setTimeout(check, CONTENDED_STALL_MS).unref();
  }

  private stopPayloadWatch(): void {
    if (this.payloadTimer) clearTimeout(this.payloadTimer);
    this.payloadTimer = null;
  }

  private turnUsedUp(): boolean {
    return this.turns.usedUp;
  }

  /** This turn's share is used up: go on in a later turn, after other connections and I/O. */
  private yieldTurn(): void {
    this.turns.yield(() => this.host.nextTurn());
  }
}

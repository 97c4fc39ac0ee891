// The life of one NBD connection as a table of named states (STYLE.md §4, after libnbd's
// generator). `enter(next)` is the only way to move, it refuses transitions the table does not
// allow (a protocol bug shows as "transition refused: A -> B", not as a hang) and logs each move
// at debug level.
import { BugError } from '../errors';
import type { Logger } from '../util/log';

export type ConnState =
  | 'greeting' // server sent NBDMAGIC/IHAVEOPT + flags; waiting for the 4-byte client flags
  | 'options' // option haggling: reading option headers and payloads, replying to each
  | 'transmission' // requests and replies; bad input in a synchronised stream gets an NBD error
  | 'closed' // ended cleanly (ABORT, DISC, EOF, shutdown); socket closed or closing
  | 'dead'; // unrecoverable: lost sync, protocol violation, timeout or socket error; only closes

export const CONN_TRANSITIONS: Readonly<Record<ConnState, readonly ConnState[]>> = {
  greeting: ['options', 'closed', 'dead'],
  options: ['transmission', 'closed', 'dead'],
  transmission: ['closed', 'dead'],
  closed: [],
  dead: [],
};

export function isTerminal(state: ConnState): boolean {
  return state === 'closed' || state === 'dead';
}

export class ConnStateMachine {
  private current: ConnState = 'greeting';

  constructor(private readonly logger: Logger) {}

  get state(): ConnState {
    return this.current;
  }

  canEnter(next: ConnState): boolean {
    return CONN_TRANSITIONS[this.current].includes(next);
  }

  /** Moves to `next`; throws BugError for a transition the table does not allow. */
  enter(next: ConnState, why?: string): void {
    if (!this.canEnter(next)) throw new BugError(`transition refused: ${this.current} -> ${next}`);
    this.logger.debug({ from: this.current, to: next, why }, 'transition');
    this.current = next;
  }
}

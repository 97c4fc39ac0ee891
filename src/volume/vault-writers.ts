// Who writes in this vault, as one process sees it: its own writer session (one heartbeat for all
// the leases it holds, started on first use and restarted if it ended) and watches of the other
// writers' sessions named by the leases it meets (docs/RECONNECT.md). The leases themselves are
// volume-lease.ts; the Vault hands these to each lease it acquires.
import type { ObjectStore } from '../store/object-store';
import type { Logger } from '../util/log';
import { WriterSession, observeSession, type SessionState, type SessionTiming } from './writer-session';

export class VaultWriters {
  private session: Promise<WriterSession> | null = null;
  /** Watches of other writers' sessions: 'dead' and 'gone' are final (a session never revives),
   *  so they are kept; 'live' is dropped once answered (it may have died since). */
  private readonly watches = new Map<string, Promise<SessionState>>();

  constructor(
    private readonly store: ObjectStore,
    private readonly logger: Logger,
    private readonly timing?: SessionTiming,
  ) {}

  /** The live writer session, a new one if the last has ended (its leases are lost). */
  async current(): Promise<WriterSession> {
    const current = this.session ? await this.session.catch(() => null) : null;
    if (current?.alive) return current;
    const p = WriterSession.start(this.store, this.logger, this.timing);
    this.session = p;
    p.catch(() => {
      if (this.session === p) this.session = null;
    });
    return p;
  }

  /** The state of another writer's session, watched once however many leases name it. */
  observe(sessionId: string): Promise<SessionState> {
    let w = this.watches.get(sessionId);
    if (!w) {
      w = observeSession(this.store, sessionId);
      this.watches.set(sessionId, w);
    }
    return w.then(
      (state) => {
        if (state === 'live' && this.watches.get(sessionId) === w) this.watches.delete(sessionId);
        return state;
      },
      (err) => {
        if (this.watches.get(sessionId) === w) this.watches.delete(sessionId);
        throw err;
      },
    );
  }

  watching(sessionId: string): boolean {
    return this.watches.has(sessionId);
  }

  /** Stop our session's heartbeat and delete it (after every engine has been closed). */
  async stop(): Promise<void> {
    const s = this.session;
    this.session = null;
    await (await s?.catch(() => null))?.stop();
  }
}

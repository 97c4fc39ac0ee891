// One request in transmission: refused (validation), or executed on the export; the reply
// written, and the request counted in the metrics. What a connection does with each request it
// has parsed and admitted; the connection keeps the flow control and the ending.
import { describeError } from '../errors';
import type { Logger } from '../util/log';
import { NO_METRICS, type MetricsSink } from '../util/metrics';
import { errorReply, executeRequestWithStatus, mustDropConnection, type ExecutionSession } from './command-executor';
import { NBD_CMD_NAMES, NBD_CMD_READ, NBD_CMD_WRITE, NBD_ERRNO_NAMES, NBD_ESHUTDOWN } from './constants';
import type { NbdRequest } from './request-reader';
import { validateRequest, type SessionFacts } from './request-validation';

/** What answering needs of its connection. */
export interface AnswerContext {
  readonly connId: number;
  readonly logger: Logger;
  readonly metrics?: MetricsSink;
  /** the server is stopping: requests from now on stay unanswered */
  shuttingDown(): boolean;
  writeReply(bufs: Buffer[]): void;
  /** the export cannot serve here any more: the connection ends */
  drop(why: string): void;
}

/** Answers `req`; resolves with the errno its reply carried (after the metrics counted it). */
export async function answerRequest(req: NbdRequest, session: SessionFacts & ExecutionSession, ctx: AnswerContext): Promise<number> {
  const started = process.hrtime.bigint();
  const errno = await answer(req, session, ctx);
  const seconds = Number(process.hrtime.bigint() - started) / 1e9;
  const moved = errno === 0 && (req.type === NBD_CMD_READ || req.type === NBD_CMD_WRITE) ? req.length : 0;
  (ctx.metrics ?? NO_METRICS).nbdRequest(session.exp.name, NBD_CMD_NAMES[req.type] ?? `cmd${req.type}`, NBD_ERRNO_NAMES[errno] ?? `errno${errno}`, moved, seconds);
  return errno;
}

async function answer(req: NbdRequest, session: SessionFacts & ExecutionSession, ctx: AnswerContext): Promise<number> {
  if (ctx.shuttingDown()) {
    // Not answered: the connection closes once what started before the shutdown is answered,
    // and a reconnecting client replays this request to the next server (an ESHUTDOWN reply
    // would be an I/O error in the guest).
    return NBD_ESHUTDOWN;
  }
  const errno = validateRequest(req, session);
  if (errno !== 0) {
    ctx.logger.debug({ conn: ctx.connId, cmd: req.type, flags: req.flags, offset: req.offset, length: req.length, errno }, 'request refused');
    ctx.writeReply(errorReply(req, session.structuredReplies, errno, 'request refused'));
    return errno;
  }
  try {
    const { reply, errno: result } = await executeRequestWithStatus(req, session);
    ctx.writeReply(reply);
    return result;
  } catch (err) {
    if (!mustDropConnection(err)) throw err;
    ctx.drop(`export cannot serve here any more: ${describeError(err)}`);
    return NBD_ESHUTDOWN;
  }
}

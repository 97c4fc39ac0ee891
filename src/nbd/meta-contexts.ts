// Metadata contexts (NBD "Metadata querying"): which contexts a LIST_/SET_META_CONTEXT query
// selects on an export, the ids SET hands out, and the BLOCK_STATUS reply, one chunk per
// selected context. Knows only the Export contract: base:allocation comes from blockStatus(),
// every other context (qemu:dirty-bitmap:*, qemu:allocation-depth, …) from the export's own list.
import type { Export } from './export';
import { BugError, VaultError } from '../errors';
import { BASE_ALLOCATION, NBD_CMD_FLAG_REQ_ONE, NBD_REPLY_FLAG_DONE, NBD_STATE_HOLE, NBD_STATE_ZERO } from './constants';
import { MAX_EXTENTS } from './limits';
import { encodeBlockStatus, type WireExtent } from './reply-framing';

export interface SelectedContext {
  readonly id: number;
  readonly name: string;
}

/** base:allocation keeps id 1 whatever else is selected; the others follow. */
export const BASE_ALLOCATION_CONTEXT_ID = 1;

/** Every context the export offers, base:allocation first. */
export async function offeredContexts(exp: Export): Promise<string[]> {
  const extra = exp.listMetaContexts ? await exp.listMetaContexts() : [];
  return [BASE_ALLOCATION, ...extra.filter((n) => n !== BASE_ALLOCATION)];
}

/**
 * The offered contexts the queries select, in offered order, each once.
 * LIST: no query lists everything, and a query ending in ':' lists every context it starts with
 * (a namespace like "base:" or "qemu:", or qemu's "qemu:dirty-bitmap:"). SET: exact names only,
 * no query selects nothing. A query that matches nothing is ignored, as the spec asks.
 */
export function matchContexts(offered: readonly string[], queries: readonly string[], listing: boolean): string[] {
  if (queries.length === 0) return listing ? [...offered] : [];
  return offered.filter((name) => queries.some((q) => q === name || (listing && q.endsWith(':') && name.startsWith(q))));
}

/** Ids for a SET selection: base:allocation 1, the others 2, 3, … in order. */
export function assignContextIds(names: readonly string[]): SelectedContext[] {
  let next = BASE_ALLOCATION_CONTEXT_ID + 1;
  return names.map((name) => ({ name, id: name === BASE_ALLOCATION ? BASE_ALLOCATION_CONTEXT_ID : next++ }));
}

interface StatusRequest {
  readonly handle: Buffer;
  readonly offset: number;
  readonly length: number;
  readonly flags: number;
}

/** The BLOCK_STATUS reply: one chunk per selected context, DONE on the last. Each chunk
 *  describes at most the requested length; REQ_ONE: exactly one extent per chunk. */
export async function blockStatusReply(exp: Export, contexts: readonly SelectedContext[], req: StatusRequest): Promise<Buffer[]> {
  if (contexts.length === 0) throw new BugError('BLOCK_STATUS reached the executor without a selected context');
  const limit = (req.flags & NBD_CMD_FLAG_REQ_ONE) !== 0 ? 1 : MAX_EXTENTS;
  const answers = await Promise.all(contexts.map((c) => contextExtents(exp, c.name, req.offset, req.length)));
  return contexts.map((c, k) => {
    const wire = clip(answers[k], req.length, limit, c.name);
    return encodeBlockStatus(k === contexts.length - 1 ? NBD_REPLY_FLAG_DONE : 0, req.handle, c.id, wire);
  });
}

async function contextExtents(exp: Export, name: string, offset: number, length: number): Promise<WireExtent[]> {
  if (name === BASE_ALLOCATION) {
    return (await exp.blockStatus(offset, length)).map((e) => ({ length: e.length, flags: (e.hole ? NBD_STATE_HOLE : 0) | (e.zero ? NBD_STATE_ZERO : 0) }));
  }
  // Selected during the handshake, so offered then; a snapshot deleted since is the export's to report.
  if (!exp.metaContextStatus) throw new VaultError('ERR_NOT_FOUND', `export "${exp.name}" offers no context "${name}"`);
  return exp.metaContextStatus(name, offset, length);
}

/** Merge equal neighbours, stop at `length` bytes and `limit` extents. */
function clip(extents: readonly WireExtent[], length: number, limit: number, name: string): WireExtent[] {
  if (extents.length === 0) throw new BugError(`context ${name} returned no extents`);
  const wire: WireExtent[] = [];
  let left = length; // never describe more than was asked for
  for (const e of extents) {
    if (left <= 0) break;
    if (!(e.length > 0)) throw new BugError(`context ${name} returned an extent of length ${e.length}`);
    const len = Math.min(e.length, left);
    const prev = wire[wire.length - 1];
    if (prev && prev.flags === e.flags) wire[wire.length - 1] = { length: prev.length + len, flags: e.flags };
    else if (wire.length >= limit) break;
    else wire.push({ length: len, flags: e.flags });
    left -= len;
  }
  return wire;
}

// The exports one client may reach: the provider seen through the access policy and the
// client's identity. An export the client may not use is indistinguishable from one that does
// not exist (not listed, "no export named"), so a stranger learns no names.
import type { Export, ExportProvider, OpenPurpose } from './export';
import type { ExportCaps } from './export';
import type { Logger } from '../util/log';
import { describeError, isVaultError } from '../errors';
import { capsFor, type ExportAccessPolicy } from './access';

export type OpenResult = { readonly exp: Export; readonly caps: ExportCaps } | { readonly exp: null; readonly failure: string };

export class ClientExports {
  /** PSK identity or certificate CN once TLS is up; null before (or without) authentication. */
  identity: string | null = null;

  constructor(
    private readonly provider: ExportProvider,
    private readonly logger: Logger,
    /** the server's policy now (a reload may replace it while a client negotiates) */
    private readonly policyNow: () => ExportAccessPolicy | undefined,
  ) {}

  private get policy(): ExportAccessPolicy | undefined {
    return this.policyNow();
  }

  async list(): Promise<Array<{ name: string; description: string }>> {
    const all = await this.provider.list();
    const policy = this.policy;
    return policy ? all.filter((e) => policy.accessTo(this.identity, e.name) !== 'none') : all;
  }

  /** Opens `name` ("" is the default export) with the caps this client gets. */
  async open(name: string, purpose: OpenPurpose = 'serve'): Promise<OpenResult> {
    const resolved = name === '' ? this.provider.defaultName : name;
    const access = this.policy ? this.policy.accessTo(this.identity, resolved) : 'rw';
    if (access === 'none') {
      this.logger.info({ exportName: resolved, identity: this.identity }, 'export refused by the access policy');
      return { exp: null, failure: `no export named "${name}"` };
    }
    try {
      // (a client that may only read needs no more of the export than reading: 'read')
      const exp = await this.provider.open(resolved, access === 'ro' && purpose === 'serve' ? 'read' : purpose);
      if (!exp) return { exp: null, failure: `no export named "${name}"` };
      return { exp, caps: capsFor(exp.caps, access) };
    } catch (err) {
      this.logger.warn({ exportName: resolved, err: describeError(err) }, 'export failed to open');
      // The client learns why in general terms; the details (hosts, objects) stay in the log.
      const failure = isVaultError(err, 'ERR_LEASE')
        ? `export "${resolved}" is being written by another server or command (a client may retry: it is served here once that writer stops or dies)`
        : isVaultError(err, 'ERR_STORE_TRANSIENT')
          ? `export "${resolved}" waits for its store to answer again (a client may retry)`
          : `export "${resolved}" cannot be opened (see the server log)`;
      return { exp: null, failure };
    }
  }

  /** ExportProvider.openWaitLeftMs of an export this client may open ("" is the default). */
  openWaitLeftMs(name: string): number | undefined {
    const resolved = name === '' ? this.provider.defaultName : name;
    if (this.policy?.accessTo(this.identity, resolved) === 'none') return undefined;
    return this.provider.openWaitLeftMs?.(resolved);
  }

  release(exp: Export): Promise<void> {
    return this.provider.release(exp);
  }
}

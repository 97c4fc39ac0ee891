// The "access" section of the config file: which TLS identity (PSK identity or client
// certificate CN) may see and open which exports, read-write or read-only.
//   "access": { "alice": { "rw": ["web01"], "ro": ["web01@*"] }, "backup": { "ro": ["*"] } }
// Names are exact or globs where * matches any run of characters (web01@* is every snapshot of
// web01). rw wins over ro. An identity not listed, and a client that did not authenticate, get
// nothing: they see no export at all.
import { VaultError } from '../errors';
import type { ExportAccess, ExportAccessPolicy } from '../nbd';

interface Grants {
  readonly rw: RegExp[];
  readonly ro: RegExp[];
}

export class ConfigAccessPolicy implements ExportAccessPolicy {
  private constructor(private readonly grants: ReadonlyMap<string, Grants>) {}

  /** Validates the section; errors name the file and the key. */
  static parse(section: unknown, path: string): ConfigAccessPolicy {
    const bad = (why: string) => new VaultError('ERR_INVALID_ARGUMENT', `config file ${path}: "access" ${why}`);
    if (typeof section !== 'object' || section === null || Array.isArray(section)) throw bad('must be an object of identity: { "rw": [...], "ro": [...] }');
    const grants = new Map<string, Grants>();
    for (const [identity, g] of Object.entries(section as Record<string, unknown>)) {
      if (typeof g !== 'object' || g === null || Array.isArray(g)) throw bad(`"${identity}" must be an object with "rw" and/or "ro" lists`);
      const out: Grants = { rw: [], ro: [] };
      for (const [k, list] of Object.entries(g as Record<string, unknown>)) {
        if (k !== 'rw' && k !== 'ro') throw bad(`"${identity}": unknown key "${k}" (use "rw" and "ro")`);
        if (!Array.isArray(list) || !list.every((n) => typeof n === 'string' && n !== '')) throw bad(`"${identity}"."${k}" must be a list of export names`);
        out[k].push(...(list as string[]).map(globToRegExp));
      }
      grants.set(identity, out);
    }
    return new ConfigAccessPolicy(grants);
  }

  /** The identities the section grants something to. */
  get identities(): string[] {
    return [...this.grants.keys()];
  }

  accessTo(identity: string | null, exportName: string): ExportAccess {
    const g = identity === null ? undefined : this.grants.get(identity);
    if (!g) return 'none';
    if (g.rw.some((re) => re.test(exportName))) return 'rw';
    if (g.ro.some((re) => re.test(exportName))) return 'ro';
    return 'none';
  }
}

function globToRegExp(glob: string): RegExp {
  return new RegExp('^' + glob.split('*').map((p) => p.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')).join('.*') + '$', 's');
}

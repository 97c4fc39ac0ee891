// Every setting of the CLI in one table: its flag, its NBD_VAULT_* environment variable, its
// config-file key and its default. Precedence: flag > environment > config file > default.
// A config file (--config FILE or $NBD_VAULT_CONFIG) is JSON with the camelCase keys below;
// an unknown key or a bad value fails at startup with a message naming it.
import { readFileSync } from 'node:fs';
import { availableParallelism, homedir } from 'node:os';
import { join } from 'node:path';
import { Option, type Command } from 'commander';
import { VaultError } from '../errors';
import { parseSize } from '../util/size';

/** int: a whole number; signed: one that may be negative (zstd's fast levels); count: a whole
 *  number of at least 1 (a concurrency, a thread count) */
type Kind = 'string' | 'size' | 'int' | 'signed' | 'count' | 'bool';

interface SettingSpec {
  readonly flag: string;
  readonly kind: Kind;
  readonly help: string;
  readonly def: string | number | boolean | undefined;
}

/**
 * Where local state lives unless told: a fixed place per user, never the working directory —
 * the highest root sequence seen per volume is what catches a store replaying an old root, and
 * a command run from another directory must find it. Root: /var/lib/nbd-vault; others:
 * $XDG_STATE_HOME/nbd-vault, else ~/.local/state/nbd-vault.
 */
export function defaultStateDir(env: NodeJS.ProcessEnv = process.env): string {
  if (process.getuid?.() === 0) return '/var/lib/nbd-vault';
  return join(env.XDG_STATE_HOME || join(homedir(), '.local', 'state'), 'nbd-vault');
}

export const SETTINGS = {
  store: { flag: '--store <url>', kind: 'string', help: 'object store: a directory, file:///dir, s3://bucket/prefix?endpoint=…, memory://', def: './data' },
  keys: { flag: '--keys <dir>', kind: 'string', help: 'directory holding the master key', def: './keys' },
  state: { flag: '--state <dir>', kind: 'string', help: 'local state directory (rollback detection, admin socket)', def: defaultStateDir() },
  listen: { flag: '--listen <host:port>', kind: 'string', help: 'TCP address to serve NBD on', def: '127.0.0.1:10809' },
  socket: { flag: '--socket <path>', kind: 'string', help: 'also serve NBD on this Unix socket', def: undefined },
  maxConnections: { flag: '--max-connections <n>', kind: 'count', help: 'most NBD connections past negotiation at once (negotiating ones are bounded apart: 128 in all, 32 per address)', def: 128 },
  defaultVolume: { flag: '--default-volume <name>', kind: 'string', help: 'volume served under the empty export name', def: undefined },
  dirtyLimit: { flag: '--dirty-limit <size>', kind: 'size', help: 'dirty data (written, not yet stored) per volume, within --memory-limit; sealed into a journal at half of it', def: '64M' },
  readCache: { flag: '--read-cache <size>', kind: 'size', help: 'read cache (decoded 128 KiB frames) per volume, plus up to 96 MiB for what streams read once, within --memory-limit (caches give way to writes and requests)', def: '768M' },
  memoryLimit: { flag: '--memory-limit <size>', kind: 'size', help: 'memory for the process (vault serving): up to a quarter (at most 512M) left to the runtime, a sixteenth held for sealing, the rest for the read caches, dirty data and in-flight NBD requests of all volumes and connections together (full: clients wait, never fail); --memory exports: their in-flight requests', def: '1G' },
  uploadConcurrency: { flag: '--upload-concurrency <n>', kind: 'count', help: 'parallel chunk uploads per volume', def: 16 },
  workers: { flag: '--workers <n>', kind: 'count', help: 'compression/encryption worker threads', def: availableParallelism() },
  zstdLevel: { flag: '--zstd-level <n>', kind: 'signed', help: 'zstd compression level (poorly compressible frames: the fastest level, or stored uncompressed when a sample shows they would not shrink by 1/8)', def: 3 },
  leaseTtl: { flag: '--lease-ttl <seconds>', kind: 'int', help: "a dead writer's volumes are taken over once its heartbeat stood still this long (heartbeat every ttl/2, at most every 5 s)", def: 10 },
  acceptRollback: { flag: '--accept-rollback', kind: 'bool', help: 'open a volume whose root is older than this machine has seen', def: false },
  snapshotEvery: { flag: '--snapshot-every <duration>', kind: 'string', help: 'snapshot the volumes this server writes on a schedule, e.g. 1h, 30m, 1d', def: undefined },
  prune: { flag: '--prune <policy>', kind: 'string', help: 'with --snapshot-every: prune the scheduled snapshots, e.g. "hourly=24,daily=7,weekly=4"', def: undefined },
  logLevel: { flag: '--log-level <level>', kind: 'string', help: 'fatal, error, warn, info, debug or silent', def: 'info' },
  tls: { flag: '--tls <mode>', kind: 'string', help: 'off, on (STARTTLS offered) or require (default: require when credentials are given, else off)', def: undefined },
  tlsCertificates: { flag: '--tls-certificates <dir>', kind: 'string', help: 'X.509 directory: ca-cert.pem, server-cert.pem, server-key.pem (qemu-nbd/nbdkit layout)', def: undefined },
  tlsPsk: { flag: '--tls-psk <file>', kind: 'string', help: 'TLS pre-shared keys, psktool format (identity:hexkey lines)', def: undefined },
  tlsVerifyPeer: { flag: '--tls-verify-peer', kind: 'bool', help: 'X.509: require a client certificate signed by ca-cert.pem', def: false },
  insecureNoTls: { flag: '--insecure-no-tls', kind: 'bool', help: 'allow serving without TLS on a non-loopback address', def: false },
  metrics: { flag: '--metrics <host:port>', kind: 'string', help: 'serve Prometheus metrics at http://HOST:PORT/metrics (a bare PORT: loopback); off by default', def: undefined },
  diskCache: { flag: '--disk-cache <dir>', kind: 'string', help: 'keep the sealed bytes of chunks, pages and journals read or written in this local directory (one server per directory), so a working set on S3 reads at local-disk speed; off by default', def: undefined },
  diskCacheSize: { flag: '--disk-cache-size <size>', kind: 'size', help: 'bound of --disk-cache on disk, its own metadata included', def: '10G' },
  logFormat: { flag: '--log-format <format>', kind: 'string', help: 'json, pretty, or auto: pretty on a terminal, JSON lines otherwise', def: 'auto' },
} as const satisfies Record<string, SettingSpec>;

export type SettingName = keyof typeof SETTINGS;

/** What every command that opens a vault takes. */
export const VAULT_SETTINGS = ['store', 'keys', 'state', 'workers', 'zstdLevel', 'acceptRollback', 'leaseTtl', 'logLevel', 'logFormat'] as const satisfies readonly SettingName[];

/** TLS and the guard against plaintext off loopback (every server command). */
export const TLS_SETTINGS = ['tls', 'tlsCertificates', 'tlsPsk', 'tlsVerifyPeer', 'insecureNoTls'] as const satisfies readonly SettingName[];

/** Config-file sections that are not settings (read by their own parsers, e.g. "access"). */
const CONFIG_SECTIONS = ['access'];

/** What `serve` takes. */
export const SERVE_VAULT_SETTINGS = [
  ...VAULT_SETTINGS,
  'listen',
  'socket',
  'maxConnections',
  'defaultVolume',
  'dirtyLimit',
  'readCache',
  'uploadConcurrency',
  'memoryLimit',
  ...TLS_SETTINGS,
  'snapshotEvery',
  'prune',
  'metrics',
  'diskCache',
  'diskCacheSize',
] as const satisfies readonly SettingName[];
export type Settings = {
  [K in SettingName]: (typeof SETTINGS)[K]['kind'] extends 'bool' ? boolean : (typeof SETTINGS)[K]['kind'] extends 'string' ? string : number;
};

export function envName(name: string): string {
  return 'NBD_VAULT_' + name.replace(/[A-Z]/g, (c) => '_' + c).toUpperCase();
}

/** Add the flags of these settings (and --config) to a command. */
export function addSettings(cmd: Command, names: readonly SettingName[]): Command {
  cmd.addOption(new Option('--config <file>', 'JSON config file (default: $NBD_VAULT_CONFIG)'));
  for (const n of names) {
    const s: SettingSpec = SETTINGS[n];
    const def = s.def === undefined || s.def === false ? '' : ` (default: ${s.def})`;
    cmd.addOption(new Option(s.flag, `${s.help}${def}; env ${envName(n)}`));
  }
  return cmd;
}

/** Resolve settings for a parsed command: flag > env > config file > default, validated. */
export function resolveSettings<N extends SettingName>(
  opts: Record<string, unknown>,
  names: readonly N[],
  env: NodeJS.ProcessEnv = process.env,
  /** command-specific defaults (e.g. one-shot commands log at 'warn') */
  defaults: Partial<Record<SettingName, string | number | boolean>> = {},
): Pick<Settings, N> & Partial<Settings> {
  const configPath = (opts.config as string | undefined) ?? env.NBD_VAULT_CONFIG;
  const file = configPath ? readConfigFile(configPath) : {};
  const out: Record<string, unknown> = {};
  for (const n of names) {
    const s: SettingSpec = SETTINGS[n];
    let raw: unknown;
    let from: string;
    if (opts[n] !== undefined) [raw, from] = [opts[n], `option ${s.flag.split(' ')[0]}`];
    else if (env[envName(n)] !== undefined && env[envName(n)] !== '') [raw, from] = [env[envName(n)], `$${envName(n)}`];
    else if (n in file) [raw, from] = [file[n], `"${n}" in ${configPath}`];
    else [raw, from] = [n in defaults ? defaults[n] : s.def, 'default'];
    out[n] = raw === undefined ? undefined : coerce(s.kind, raw, from);
    // (pino's own refusal of an unknown level was a runtime error, exit 1, in its words)
    if (n === 'logLevel' && out[n] !== undefined && !LOG_LEVELS.includes(String(out[n]))) {
      throw new VaultError('ERR_INVALID_ARGUMENT', `${from}: unknown log level ${JSON.stringify(out[n])} (use ${LOG_LEVELS.join(', ')})`);
    }
  }
  return out as Pick<Settings, N>;
}

/** A section of the config file (--config or $NBD_VAULT_CONFIG) that is not a setting, e.g.
 *  "access"; undefined without a config file or without that section. */
export function readConfigSection(opts: Record<string, unknown>, section: string, env: NodeJS.ProcessEnv = process.env): { value: unknown; path: string } | undefined {
  const configPath = (opts.config as string | undefined) ?? env.NBD_VAULT_CONFIG;
  if (!configPath) return undefined;
  const file = readConfigFile(configPath);
  return section in file ? { value: file[section], path: configPath } : undefined;
}

function readConfigFile(path: string): Record<string, unknown> {
  let doc: unknown;
  try {
    doc = JSON.parse(readFileSync(path, 'utf8'));
  } catch (err: any) {
    throw new VaultError('ERR_INVALID_ARGUMENT', `cannot read config file ${path}: ${err?.code === 'ENOENT' ? 'no such file' : err?.message}`);
  }
  if (typeof doc !== 'object' || doc === null || Array.isArray(doc)) throw new VaultError('ERR_INVALID_ARGUMENT', `config file ${path} must hold a JSON object`);
  for (const key of Object.keys(doc)) {
    if (!Object.hasOwn(SETTINGS, key) && !CONFIG_SECTIONS.includes(key)) throw new VaultError('ERR_INVALID_ARGUMENT', `config file ${path}: unknown setting "${key}" (known: ${Object.keys(SETTINGS).join(', ')})`);
  }
  return doc as Record<string, unknown>;
}

const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'];

function coerce(kind: Kind, raw: unknown, from: string): string | number | boolean {
  const bad = (why: string) => new VaultError('ERR_INVALID_ARGUMENT', `${from}: ${why}`);
  switch (kind) {
    case 'string':
      if (typeof raw !== 'string' || raw === '') throw bad('expected a non-empty string');
      return raw;
    case 'bool':
      if (typeof raw === 'boolean') return raw;
      if (raw === '1' || raw === 'true' || raw === 'yes') return true;
      if (raw === '0' || raw === 'false' || raw === 'no') return false;
      throw bad(`expected true or false, got ${JSON.stringify(raw)}`);
    case 'signed': {
      // (zstd's fast levels are negative: the codec checks the range)
      const v = typeof raw === 'number' ? raw : /^-?\d+$/.test(String(raw)) ? Number(raw) : NaN;
      if (!Number.isSafeInteger(v)) throw bad(`expected a whole number, got ${JSON.stringify(raw)}`);
      return v;
    }
    case 'int':
    case 'count': {
      const v = typeof raw === 'number' ? raw : /^\d+$/.test(String(raw)) ? Number(raw) : NaN;
      if (!Number.isSafeInteger(v) || v < 0) throw bad(`expected a whole number, got ${JSON.stringify(raw)}`);
      if (kind === 'count' && v < 1) throw bad(`expected at least 1, got ${JSON.stringify(raw)}`);
      return v;
    }
    case 'size':
      try {
        // a JSON number is a count of bytes, checked as the text form is (-1 and 0.5 started a server)
        return typeof raw === 'number' ? parseSize(Number.isSafeInteger(raw) && raw >= 0 ? String(raw) : `${raw} (a whole number of bytes)`) : parseSize(String(raw));
      } catch (err) {
        throw bad((err as Error).message);
      }
  }
}

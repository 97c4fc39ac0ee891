// One pino logger per process, one JSON line per event, to stderr (stdout is for command output).
// Levels: error = data or a client was affected; warn = degraded but handled (a retry, a refused
// client); info = lifecycle (listening, volume opened, flush of N chunks); debug = per request.
import pino from 'pino';

export type Logger = pino.Logger;

let root: Logger | null = null;

export function createLogger(level: string = process.env.NBD_VAULT_LOG_LEVEL ?? 'info'): Logger {
  return pino(
    {
      level,
      base: { pid: process.pid },
      // Belt and braces: these field names never reach a log line whatever a caller passes.
      redact: { paths: ['key', '*.key', 'passphrase', '*.passphrase', 'secretAccessKey', '*.secretAccessKey', 'credentials', '*.credentials'], censor: '[redacted]' },
    },
    pino.destination({ fd: 2, sync: true }),
  );
}

export function log(): Logger {
  if (!root) root = createLogger();
  return root;
}

export function setLogger(logger: Logger): void {
  root = logger;
}

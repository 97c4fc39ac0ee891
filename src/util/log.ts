// One pino logger per process, one line per event, to stderr (stdout is for command output).
// Format: JSON lines when stderr is not a terminal (pipes, files, journald, tests); on a terminal,
// human-readable lines (pino-pretty, in-process and synchronous: no worker thread, nothing lost
// on exit). `--log-format json|pretty` (NBD_VAULT_LOG_FORMAT) overrides the choice.
// Levels: error = data or a client was affected; warn = degraded but handled (a retry, a refused
// client); info = lifecycle (listening, volume opened, flush of N chunks); debug = per request.
import pino from 'pino';
import pretty from 'pino-pretty';
import { VaultError } from '../errors';

export type Logger = pino.Logger;
export type LogFormat = 'auto' | 'json' | 'pretty';
export const LOG_FORMATS: readonly LogFormat[] = ['auto', 'json', 'pretty'];

let root: Logger | null = null;

export function parseLogFormat(text: string): LogFormat {
  if (!(LOG_FORMATS as readonly string[]).includes(text)) throw new VaultError('ERR_INVALID_ARGUMENT', `log format must be json, pretty or auto, got "${text}"`);
  return text as LogFormat;
}

export function createLogger(level: string = process.env.NBD_VAULT_LOG_LEVEL ?? 'info', format: LogFormat = parseLogFormat(process.env.NBD_VAULT_LOG_FORMAT || 'auto')): Logger {
  const tty = Boolean(process.stderr.isTTY);
  const human = format === 'pretty' || (format === 'auto' && tty);
  const destination = human
    ? pretty({ destination: 2, sync: true, colorize: tty, singleLine: true, translateTime: 'SYS:HH:MM:ss.l', ignore: 'pid,hostname' })
    : pino.destination({ fd: 2, sync: true });
  return pino(
    {
      level,
      base: { pid: process.pid },
      // Belt and braces: these field names never reach a log line whatever a caller passes.
      redact: { paths: ['key', '*.key', 'passphrase', '*.passphrase', 'secretAccessKey', '*.secretAccessKey', 'credentials', '*.credentials'], censor: '[redacted]' },
    },
    destination,
  );
}

export function log(): Logger {
  if (!root) root = createLogger();
  return root;
}

export function setLogger(logger: Logger): void {
  root = logger;
}

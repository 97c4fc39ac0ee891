// Public surface of nbd/: the server and the URI helper. Everything else is internal.
export { startNbdServer, nbdUri, type NbdServerOptions, type NbdServerHandle, type NbdServerAddress } from './server';
export { loadTlsConfig, parsePskFile, type TlsCredentialOptions } from './tls-credentials';
export type { TlsMode, TlsServerConfig } from './tls';
export type { ExportAccess, ExportAccessPolicy } from './access';

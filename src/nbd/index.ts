// Public surface of nbd/: the server and the URI helper. Everything else is internal.
export { startNbdServer, nbdUri, type NbdServerOptions, type NbdServerHandle, type NbdServerAddress } from './server';

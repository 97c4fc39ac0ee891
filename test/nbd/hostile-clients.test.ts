// Hostile and broken clients over raw sockets against a memory export (the cases are in
// hostile-suite.ts; hostile-clients-vault.test.ts runs them against a vault volume).
import { startNbdServerProcess } from '../helpers/nbd-server';
import { MAX_CONNECTIONS, hostileClientSuite } from './hostile-suite';

hostileClientSuite({
  async start() {
    const srv = await startNbdServerProcess({
      memory: ['disk=64M'],
      extraArgs: ['--max-connections', String(MAX_CONNECTIONS), '--handshake-timeout', '2'],
    });
    return { port: srv.port, pid: srv.process.pid!, uri: srv.uri, alive: srv.alive, log: srv.log, stop: () => srv.stop() };
  },
});

// Hostile and greedy clients over raw sockets against a vault volume on the fs store (the cases
// are in hostile-suite.ts): the read path through the write cache, the read cache (16 MiB here,
// so reads spread over the seeded chunks miss) and the store.
import { makeTestVault, type TestVault } from '../helpers/vault-server';
import { MAX_CONNECTIONS, hostileClientSuite } from './hostile-suite';

let vault: TestVault | null = null;

hostileClientSuite({
  async start() {
    vault = await makeTestVault();
    await vault.cli('volume', 'create', 'disk', '--size', '64M');
    const srv = await vault.serve(['--max-connections', String(MAX_CONNECTIONS), '--handshake-timeout', '2', '--read-cache', '16M']);
    const child = srv.process;
    return {
      port: srv.port,
      pid: child.pid!,
      uri: srv.uri,
      alive: () => child.exitCode === null && child.signalCode === null,
      log: srv.log,
      stop: () => srv.stop(),
    };
  },
  async cleanup() {
    await vault?.cleanup();
  },
});

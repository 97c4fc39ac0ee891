// A TCP proxy for bench/store-outage.sh: LISTEN_PORT -> TARGET_PORT on 127.0.0.1. SIGUSR1
// toggles an outage: the listener closes and every open connection is dropped, so the client
// meets ECONNREFUSED, as with a store that went away; the next SIGUSR1 brings it back.
import net from 'node:net';

const [listenPort, targetPort] = process.argv.slice(2).map(Number);
const open = new Set();
let server = null;
const up = () => {
  server = net.createServer((client) => {
    const store = net.connect(targetPort, '127.0.0.1');
    open.add(client).add(store);
    const end = () => {
      client.destroy();
      store.destroy();
      open.delete(client);
      open.delete(store);
    };
    for (const s of [client, store]) s.on('error', end).on('close', end);
    client.pipe(store).pipe(client);
  });
  server.listen(listenPort, '127.0.0.1', () => console.log(new Date().toISOString(), 'up'));
};
process.on('SIGUSR1', () => {
  if (!server) return up();
  server.close();
  server = null;
  for (const s of open) s.destroy();
  open.clear();
  console.log(new Date().toISOString(), 'down');
});
setInterval(() => {}, 60_000); // alive while down (no listener, no socket)
up();

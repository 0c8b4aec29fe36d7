// TCP forwarder for the compose demo: listen on 0.0.0.0:FROM, connect to 127.0.0.1:TO.
//
// The demo IdP (tests/idp/server.js) listens on 127.0.0.1 only, and its issuer is
// http://127.0.0.1:9000/ENV_ID/as, which oidc-bff accepts over http only because it is
// loopback. Docker publishes ports to the container's network interface, not to its loopback,
// so this forwarder carries the published port to the IdP. oidc-bff shares the IdP's network
// namespace and reaches 127.0.0.1:9000 directly.
//
//   node loopback-forward.mjs 9001 9000
import * as net from 'node:net';

const [from, to] = process.argv.slice(2).map(Number);
if (!Number.isInteger(from) || !Number.isInteger(to)) {
  console.error('usage: node loopback-forward.mjs LISTEN_PORT TARGET_PORT');
  process.exit(1);
}

const server = net.createServer((client) => {
  const upstream = net.connect(to, '127.0.0.1');
  client.pipe(upstream).pipe(client);
  client.on('error', () => upstream.destroy());
  upstream.on('error', () => client.destroy());
});
server.on('error', (err) => {
  console.error(`loopback-forward: cannot listen on 0.0.0.0:${from}: ${err.message}`);
  process.exit(1);
});
server.listen(from, '0.0.0.0', () => {
  console.error(`loopback-forward: 0.0.0.0:${from} -> 127.0.0.1:${to}`);
});

// @stomp/stompjs (a STOMP client nobody here wrote) over WebSocket from Node, with the `ws`
// package as the WebSocket implementation.
// Usage: node stompjs_node.mjs ws://127.0.0.1:PORT/ws
import { Client } from '@stomp/stompjs';
import WebSocket from 'ws';

const url = process.argv[2];
const timeout = setTimeout(() => { console.log('FAIL stompjs: timed out'); process.exit(1); }, 15000);

const client = new Client({
  webSocketFactory: () => new WebSocket(url, ['v12.stomp', 'v11.stomp', 'v10.stomp']),
  reconnectDelay: 0,
  heartbeatIncoming: 1000,
  heartbeatOutgoing: 1000,
});
client.onStompError = (frame) => { console.log('FAIL stompjs: ERROR ' + frame.headers.message); process.exit(1); };
client.onConnect = (frame) => {
  if (frame.headers.version !== '1.2') {
    console.log('FAIL stompjs: version ' + frame.headers.version);
    process.exit(1);
  }
  const got = [];
  client.subscribe('/topic/stompjs.>', (message) => {
    got.push(message);
    if (got.length === 2) {
      const [a, b] = got;
      const okA = JSON.parse(a.body).hello === 'world' && a.headers.event === 'greeting';
      const okB = b.body === 'plain text';
      clearTimeout(timeout);
      client.deactivate();
      if (okA && okB) { console.log('ok   stompjs over WebSocket'); process.exit(0); }
      console.log('FAIL stompjs: ' + JSON.stringify(got.map((m) => [m.headers, m.body])));
      process.exit(1);
    }
  });
  client.publish({
    destination: '/topic/stompjs.a',
    body: JSON.stringify({ hello: 'world' }),
    headers: { 'content-type': 'application/json', event: 'greeting' },
  });
  client.publish({ destination: '/topic/stompjs.b', body: 'plain text' });
};
client.activate();

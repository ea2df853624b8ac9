// Browser tests: Debian's Chromium driven by playwright-core against a running Herald.
// The snippets of the reference design run unchanged in a page of Herald's own origin.
//
// Usage: node run.mjs http://127.0.0.1:PORT [check ...]
// Prints one line per check and exits non-zero when any fails.
import { chromium } from 'playwright-core';
import { fileURLToPath } from 'node:url';
import path from 'node:path';

const here = path.dirname(fileURLToPath(import.meta.url));
const base = process.argv[2];
const only = process.argv.slice(3);
if (!base) {
  console.error('usage: node run.mjs http://127.0.0.1:PORT [check ...]');
  process.exit(2);
}

const checks = {
  // EventSource on the heartbeat demo: ids 0, 1 and `heartbeat` events.
  async 'eventsource-heartbeat'(page) {
    return page.evaluate(() => new Promise((resolve, reject) => {
      const got = [];
      const eventSource = new EventSource('/api/v1/events');
      eventSource.addEventListener('heartbeat', (event) => {
        got.push({ id: event.lastEventId, data: event.data });
        if (got.length === 2) {
          eventSource.close();
          if (got[0].id === '0' && got[1].id === '1' && got[1].data.startsWith('Ping ')) resolve(got);
          else reject(new Error(JSON.stringify(got)));
        }
      });
      eventSource.onerror = (e) => reject(new Error('EventSource error'));
    }));
  },

  // EventSource on a topic: a REST publish arrives, with its type and id.
  async 'eventsource-topic'(page) {
    return page.evaluate(() => new Promise((resolve, reject) => {
      const eventSource = new EventSource('/api/v1/subscribe?topic=browser.>');
      eventSource.onopen = async () => {
        const r = await fetch('/api/v1/topics/browser.test/events', {
          method: 'POST',
          headers: { 'content-type': 'application/json' },
          body: JSON.stringify({ event: 'user-update', data: { userId: 123, status: 'online' } }),
        });
        if (r.status !== 201) reject(new Error('publish ' + r.status));
      };
      eventSource.addEventListener('user-update', (event) => {
        const data = JSON.parse(event.data);
        eventSource.close();
        if (data.userId === 123 && event.lastEventId) resolve({ id: event.lastEventId, data });
        else reject(new Error(event.data));
      });
    }));
  },

  // Notifications stream and the SseEmitter-style broadcast.
  async 'eventsource-broadcast'(page) {
    return page.evaluate(() => new Promise((resolve, reject) => {
      const eventSource = new EventSource('/api/v1/sse/subscribe');
      eventSource.onopen = () => fetch('/api/v1/sse/broadcast', {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ event: 'announcement', data: 'hello everyone' }),
      });
      eventSource.addEventListener('announcement', (event) => {
        eventSource.close();
        if (event.data === 'hello everyone') resolve(event.data);
        else reject(new Error(event.data));
      });
    }));
  },

  // The plain WebSocket chat: every message comes back as `Echo: <message>`.
  async 'websocket-chat'(page) {
    return page.evaluate((wsBase) => new Promise((resolve, reject) => {
      const socket = new WebSocket(wsBase + '/ws/chat');
      socket.onopen = () => socket.send(JSON.stringify({ type: 'message', content: 'Hello!' }));
      socket.onmessage = (event) => {
        socket.close();
        if (event.data === 'Echo: {"type":"message","content":"Hello!"}') resolve(event.data);
        else reject(new Error(event.data));
      };
      socket.onerror = () => reject(new Error('WebSocket error'));
    }), base.replace(/^http/, 'ws'));
  },

  // Herald's JSON WebSocket protocol.
  async 'websocket-json'(page) {
    return page.evaluate((wsBase) => new Promise((resolve, reject) => {
      const ws = new WebSocket(wsBase + '/api/v1/ws');
      ws.onopen = () => ws.send(JSON.stringify({ type: 'subscribe', topic: 'browser.ws', ref: 1 }));
      ws.onmessage = (m) => {
        const msg = JSON.parse(m.data);
        if (msg.type === 'subscribed') {
          ws.send(JSON.stringify({ type: 'publish', topic: 'browser.ws', data: { n: 1 }, ref: 2 }));
        } else if (msg.type === 'event') {
          ws.close();
          if (msg.data.n === 1 && msg.topic === 'browser.ws') resolve(msg);
          else reject(new Error(m.data));
        }
      };
    }), base.replace(/^http/, 'ws'));
  },
};

// SockJS + STOMP as Spring's `.withSockJS()` clients use it, over each SockJS transport.
// (The iframe-based transports load sockjs-client from the CDN URL in iframe.html, which this
// offline machine cannot reach; their server side, htmlfile, has protocol tests in Rust.)
for (const transport of ['websocket', 'xhr-streaming', 'xhr-polling', 'eventsource', 'jsonp-polling']) {
  checks[`sockjs-stomp-${transport}`] = async (page) => {
    await page.addScriptTag({ path: path.join(here, 'node_modules/sockjs-client/dist/sockjs.min.js') });
    await page.addScriptTag({ path: path.join(here, 'node_modules/@stomp/stompjs/bundles/stomp.umd.min.js') });
    return page.evaluate((transport) => new Promise((resolve, reject) => {
      const client = new StompJs.Client({
        webSocketFactory: () => new SockJS('/ws', null, { transports: [transport] }),
        reconnectDelay: 0,
      });
      client.onStompError = (f) => reject(new Error('STOMP ERROR ' + f.headers.message));
      client.onConnect = () => {
        client.subscribe('/topic/messages', (message) => {
          const msg = JSON.parse(message.body);
          client.deactivate();
          if (msg.content === 'Hello via ' + transport) resolve({ transport, msg });
          else reject(new Error(message.body));
        });
        client.publish({
          destination: '/app/chat.send',
          body: JSON.stringify({ sender: 'John', content: 'Hello via ' + transport, type: 'CHAT' }),
          headers: { 'content-type': 'application/json' },
        });
      };
      client.activate();
    }), transport);
  };
}

// The classic stomp.js API (`Stomp.over(socket)`), as older Spring tutorials write it.
checks['sockjs-stomp-classic'] = async (page) => {
  await page.addScriptTag({ path: path.join(here, 'node_modules/sockjs-client/dist/sockjs.min.js') });
  await page.addScriptTag({ path: path.join(here, 'node_modules/@stomp/stompjs/bundles/stomp.umd.min.js') });
  return page.evaluate(() => new Promise((resolve, reject) => {
    const socket = new SockJS('/ws');
    const stompClient = StompJs.Stomp.over(socket);
    stompClient.debug = () => {};
    stompClient.connect({}, () => {
      stompClient.subscribe('/topic/users', (m) => {
        const msg = JSON.parse(m.body);
        stompClient.disconnect();
        if (msg.sender === 'Jane') resolve(msg); else reject(new Error(m.body));
      });
      stompClient.send('/app/chat.join', { 'content-type': 'application/json' }, JSON.stringify({ sender: 'Jane', type: 'JOIN' }));
    }, (err) => reject(new Error(String(err))));
  }));
};

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync'],
});
let failed = 0;
try {
  for (const [name, check] of Object.entries(checks)) {
    if (only.length && !only.includes(name)) continue;
    const page = await browser.newPage();
    try {
      await page.goto(base + '/healthz');
      const result = await Promise.race([
        check(page),
        new Promise((_, reject) => setTimeout(() => reject(new Error('timed out after 15 s')), 15000)),
      ]);
      console.log(`ok   ${name} ${JSON.stringify(result).slice(0, 120)}`);
    } catch (e) {
      failed += 1;
      console.log(`FAIL ${name}: ${e.message}`);
    } finally {
      await page.close();
    }
  }
} finally {
  await browser.close();
}
process.exit(failed ? 1 : 0);

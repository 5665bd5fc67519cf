// bench/socketio/server.js - the Socket.IO 4 side of bench/compare-socketio.sh.
//
// The same service relay offers, written the idiomatic Socket.IO way: a client joins the room
// of its document, sends "operation" with an ack callback, and every other member of the room,
// on any process, receives {document_id, seq, user_id, session_id, payload} through
// @socket.io/redis-adapter (Redis pub/sub). WebSocket transport only, no per-message deflate, so
// both servers do the same work per message. seq is a per-document counter in this process
// (relay sequences through Redis; Socket.IO has no equivalent, which only favours Socket.IO).
//
// Usage: node server.js --port P --redis redis://127.0.0.1:RP
'use strict';
const http = require('http');
const { Server } = require('socket.io');
const { createAdapter } = require('@socket.io/redis-adapter');
const { createClient } = require('redis');

function arg(name, def) {
  const i = process.argv.indexOf(name);
  return i >= 0 ? process.argv[i + 1] : def;
}

async function main() {
  const port = Number(arg('--port', '3000'));
  const redisUrl = arg('--redis', 'redis://127.0.0.1:6379');
  const pub = createClient({ url: redisUrl });
  const sub = pub.duplicate();
  await Promise.all([pub.connect(), sub.connect()]);
  const httpServer = http.createServer();
  const io = new Server(httpServer, {
    transports: ['websocket'],
    perMessageDeflate: false,
    serveClient: false,
    maxHttpBufferSize: 1e6,
  });
  io.adapter(createAdapter(pub, sub));
  const seqs = new Map();
  io.on('connection', (socket) => {
    const doc = String(socket.handshake.query.doc || '');
    const user = String(socket.handshake.query.user || 'bench');
    socket.on('join_document', (cb) => {
      socket.join(doc);
      if (typeof cb === 'function') cb({ type: 'joined_document', document_id: doc });
    });
    socket.on('operation', (payload, cb) => {
      const seq = (seqs.get(doc) || 0) + 1;
      seqs.set(doc, seq);
      socket.to(doc).emit('operation', {
        document_id: doc, seq, user_id: user, session_id: socket.id, payload,
      });
      if (typeof cb === 'function') cb({ type: 'ack', seq });
    });
  });
  httpServer.listen(port, '127.0.0.1', () => {
    process.stdout.write(`listening ${port}\n`);
  });
  const stop = () => { io.close(); process.exit(0); };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
}

main().catch((e) => { console.error(e); process.exit(1); });

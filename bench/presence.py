#!/usr/bin/env python3
"""bench/presence.py - the presence-at-scale workload of bench/presence.sh.

S movers spread over the endpoints send a burst of M cursor moves each (padded to P bytes) into
one document, as fast as the node takes them. A fast reader reads everything. A slow reader on
another node has a small receive buffer and reads nothing until the burst is over, so it falls
behind the node's presence ring (256). It then drains what the node kept for it.

Reported:
- cursors sent;
- what the fast reader received;
- what the slow reader received and what `lagged` told it it missed;
- whether received + missed = sent for the slow reader;
- whether each mover's last cursor reached it (the latest cursor wins).

Python standard library only: a minimal RFC 6455 client, HS256 tokens and a msgpack reader for
the Binary broadcasts.
"""
import argparse
import base64
import hashlib
import hmac
import json
import os
import socket
import struct
import sys
import threading
import time


def b64url(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def token(secret, sub):
    head = b64url(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    body = b64url(json.dumps({"sub": sub, "exp": int(time.time()) + 3600}).encode())
    sig = hmac.new(secret.encode(), f"{head}.{body}".encode(), hashlib.sha256).digest()
    return f"{head}.{body}.{b64url(sig)}"


def unpack(buf, i=0):
    """Decodes one msgpack value at buf[i:]; returns (value, next index)."""
    b = buf[i]
    i += 1
    if b <= 0x7F:
        return b, i
    if b >= 0xE0:
        return b - 0x100, i
    if 0x80 <= b <= 0x8F or b in (0xDE, 0xDF):
        n = b & 0x0F if b <= 0x8F else struct.unpack_from(">H" if b == 0xDE else ">I", buf, i)[0]
        i += 0 if b <= 0x8F else (2 if b == 0xDE else 4)
        out = {}
        for _ in range(n):
            k, i = unpack(buf, i)
            v, i = unpack(buf, i)
            out[k] = v
        return out, i
    if 0x90 <= b <= 0x9F or b in (0xDC, 0xDD):
        n = b & 0x0F if b <= 0x9F else struct.unpack_from(">H" if b == 0xDC else ">I", buf, i)[0]
        i += 0 if b <= 0x9F else (2 if b == 0xDC else 4)
        out = []
        for _ in range(n):
            v, i = unpack(buf, i)
            out.append(v)
        return out, i
    if 0xA0 <= b <= 0xBF or b in (0xD9, 0xDA, 0xDB, 0xC4, 0xC5, 0xC6):
        if b <= 0xBF:
            n = b & 0x1F
        else:
            size = {0xD9: 1, 0xC4: 1, 0xDA: 2, 0xC5: 2, 0xDB: 4, 0xC6: 4}[b]
            n = int.from_bytes(buf[i:i + size], "big")
            i += size
        raw = bytes(buf[i:i + n])
        return (raw if b in (0xC4, 0xC5, 0xC6) else raw.decode()), i + n
    fixed = {0xC0: (None, 0), 0xC2: (False, 0), 0xC3: (True, 0)}
    if b in fixed:
        return fixed[b][0], i
    fmt = {0xCC: ">B", 0xCD: ">H", 0xCE: ">I", 0xCF: ">Q", 0xD0: ">b", 0xD1: ">h", 0xD2: ">i",
           0xD3: ">q", 0xCA: ">f", 0xCB: ">d"}[b]
    return struct.unpack_from(fmt, buf, i)[0], i + struct.calcsize(fmt)


class Conn:
    """A blocking WebSocket client connection (masked frames out, whole messages in)."""

    def __init__(self, host, port, path, rcvbuf=0):
        self.sock = socket.socket()
        if rcvbuf:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock.connect((host, port))
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall((f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
                           f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                           "Sec-WebSocket-Version: 13\r\n\r\n").encode())
        self.buf = b""
        while b"\r\n\r\n" not in self.buf:
            self.fill()
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        want = base64.b64encode(hashlib.sha1((key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11")
                                             .encode()).digest()).decode()
        if not head.startswith(b"HTTP/1.1 101") or want.encode() not in head:
            raise RuntimeError(f"upgrade refused: {head[:80]!r}")

    def fill(self):
        data = self.sock.recv(65536)
        if not data:
            raise RuntimeError("connection closed")
        self.buf += data

    def send_text(self, obj):
        payload = json.dumps(obj).encode()
        mask = os.urandom(4)
        n = len(payload)
        head = bytes([0x81]) + (bytes([0x80 | n]) if n < 126 else
                                bytes([0x80 | 126]) + struct.pack(">H", n) if n < 65536 else
                                bytes([0x80 | 127]) + struct.pack(">Q", n))
        masked = bytes(c ^ mask[i & 3] for i, c in enumerate(payload))
        self.sock.sendall(head + mask + masked)

    def recv(self, timeout):
        """The next data message as a dict (Text: JSON, Binary: msgpack), or None on timeout."""
        self.sock.settimeout(timeout)
        try:
            while True:
                while len(self.buf) < 2:
                    self.fill()
                op, n, at = self.buf[0] & 0x0F, self.buf[1] & 0x7F, 2
                if n == 126:
                    while len(self.buf) < 4:
                        self.fill()
                    n, at = struct.unpack_from(">H", self.buf, 2)[0], 4
                elif n == 127:
                    while len(self.buf) < 10:
                        self.fill()
                    n, at = struct.unpack_from(">Q", self.buf, 2)[0], 10
                while len(self.buf) < at + n:
                    self.fill()
                payload, self.buf = self.buf[at:at + n], self.buf[at + n:]
                if op == 1:
                    return json.loads(payload)
                if op == 2:
                    return unpack(payload)[0]
                if op == 8:
                    raise RuntimeError("closed by the node")
        except socket.timeout:
            return None

    def expect(self, kind, timeout=10):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            m = self.recv(max(0.01, deadline - time.monotonic()))
            if m and m.get("type") == kind:
                return m
            if m and m.get("type") == "error":
                raise RuntimeError(f"error reply: {m}")
        raise RuntimeError(f"no {kind} within {timeout} s")


def joined(ep, doc, secret, user, rcvbuf=0):
    host, port = ep.split(":")
    c = Conn(host, int(port), f"/ws/documents/{doc}", rcvbuf)
    c.send_text({"type": "authenticate", "token": token(secret, user)})
    c.expect("auth_result")
    c.send_text({"type": "join_document"})
    c.expect("joined_document")
    return c


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--endpoints", required=True, help="H:P[,H:P...] relay nodes")
    ap.add_argument("--secret", required=True, help="HS256 secret of the nodes")
    ap.add_argument("--movers", type=int, default=10, help="sessions moving cursors (10)")
    ap.add_argument("--moves", type=int, default=300, help="cursor moves per mover (300)")
    ap.add_argument("--pad", type=int, default=2000, help="cursor padding bytes (2000)")
    ap.add_argument("--doc", default="presence-bench", help="document id")
    o = ap.parse_args()
    eps = o.endpoints.split(",")
    movers = [joined(eps[i % len(eps)], o.doc, o.secret, f"mover-{i}") for i in range(o.movers)]
    fast = joined(eps[0], o.doc, o.secret, "fast-reader")
    slow = joined(eps[-1], o.doc, o.secret, "slow-reader", rcvbuf=4096)

    sent = o.movers * o.moves
    got = {"fast": 0}

    def read_fast():
        while got["fast"] < sent:
            m = fast.recv(30)
            if m is None:
                return
            if m.get("type") == "cursor":
                got["fast"] += 1

    reader = threading.Thread(target=read_fast)
    reader.start()
    t0 = time.monotonic()
    pad = "x" * o.pad
    for k in range(o.moves):
        for i, m in enumerate(movers):
            m.send_text({"type": "cursor", "cursor": {"m": i, "k": k, "pad": pad}})
    reader.join()
    burst_s = time.monotonic() - t0
    got_fast = got["fast"]
    last = {}

    # The slow reader drains: every mover's last cursor must arrive.
    got_slow = missed = 0
    while len([i for i in range(o.movers) if last.get(i) == o.moves - 1]) < o.movers:
        m = slow.recv(30)
        if m is None:
            break
        if m.get("type") == "cursor":
            got_slow += 1
            cur = m["cursor"]
            last[cur["m"]] = cur["k"]
        elif m.get("type") == "lagged" and m.get("channel") == "presence":
            missed += m["missed"]
    report = {
        "cursors_sent": sent,
        "fast_reader_received": got_fast,
        "slow_reader_received": got_slow,
        "slow_reader_missed": missed,
        "accounting_exact": got_slow + missed == sent,
        "latest_cursor_of_every_mover": all(last.get(i) == o.moves - 1 for i in range(o.movers)),
        "burst_s": round(burst_s, 3),
    }
    print(json.dumps(report))
    for c in movers + [fast, slow]:
        c.sock.close()
    ok = report["accounting_exact"] and report["latest_cursor_of_every_mover"] and \
        got_fast == sent and missed > 0
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""Attackers and the probe of tests/bench/attack.sh, on loopback only.

  attack.py probe PORT GOSSIP_PORT NODE SECONDS
      GET /api/v1/status from 127.0.0.1 every 20 ms (one connection each)
      and a memberlist ping to the agent's gossip port every 50 ms, for
      SECONDS; prints "status_p50 status_p99 ack_p50 ack_p99 lost" (ms;
      a status without a 200 within 10 s counts 10 s, a ping without an
      ack within 2 s counts 2 s and as lost).
  attack.py idle PORT COUNT SECONDS      COUNT silent connections
  attack.py slow PORT COUNT SECONDS      COUNT connections sending a request
                                         head one byte every 5 s
      both from 127.1.x.y, 10 per address, reconnecting 50 ms after the
      agent closes one; at most SECONDS.
  attack.py share PORT THREADS SECONDS   GET /share/v1/bundles in a loop,
                                         from 5 addresses (127.2.0.1-5)
  attack.py upload PORT TOKEN MIB SECONDS
      POST /api/v1/bundles with MIB MiB of junk (refused after the
      upload), one upload after another for SECONDS, paced to gigabit
      Ethernet (125 MB/s: the box's fastest link)
"""
import resource
import selectors
import socket
import sys
import threading
import time


SHARE_SOURCES = 5


def raise_nofile():
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def pct(values, p):
    if not values:
        return 0.0
    s = sorted(values)
    return s[min(len(s) - 1, round(p / 100 * (len(s) - 1)))]


def get(port, path, timeout=10.0, source=None):
    t0 = time.monotonic()
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout,
                                      source_address=(source, 0) if source else None) as s:
            s.settimeout(timeout)
            s.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
            out = b""
            while True:
                b = s.recv(65536)
                if not b:
                    break
                out += b
        return (time.monotonic() - t0) if out.startswith(b"HTTP/1.1 200") else None
    except OSError:
        return None


def fixstr(s):
    b = s.encode()
    assert len(b) < 32
    return bytes([0xA0 | len(b)]) + b


def ping_packet(seq, node):
    # memberlist ping: type 0, then {"SeqNo": seq, "Node": node} in msgpack
    return (bytes([0, 0x82]) + fixstr("SeqNo") + b"\xce" + seq.to_bytes(4, "big")
            + fixstr("Node") + fixstr(node))


def probe(port, gport, node, seconds):
    status, acks, lost = [], [], [0]
    end = time.monotonic() + seconds

    def pinger():
        u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        u.bind(("127.0.0.1", 0))
        seq = 1
        while time.monotonic() < end:
            seq += 1
            u.settimeout(0)
            try:
                while True:
                    u.recv(4096)  # stale acks
            except OSError:
                pass
            t0 = time.monotonic()
            u.sendto(ping_packet(seq, node), ("127.0.0.1", gport))
            u.settimeout(2.0)
            try:
                u.recv(4096)
                acks.append(time.monotonic() - t0)
            except OSError:
                acks.append(2.0)
                lost[0] += 1
            time.sleep(0.05)

    t = threading.Thread(target=pinger)
    t.start()
    while time.monotonic() < end:
        d = get(port, "/api/v1/status")
        status.append(10.0 if d is None else d)
        time.sleep(0.02)
    t.join()
    ms = lambda v: v * 1000
    print(f"{ms(pct(status, 50)):.2f} {ms(pct(status, 99)):.2f} "
          f"{ms(pct(acks, 50)):.2f} {ms(pct(acks, 99)):.2f} {lost[0]}")


def hold(port, count, seconds, slow):
    raise_nofile()
    sel = selectors.DefaultSelector()
    head = b"GET /api/v1/status HTTP/1.1\r\nHost: x\r\n"
    socks = {}
    retry = []
    end = time.monotonic() + seconds

    def connect(i):
        a = i // 10
        s = socket.socket()
        s.setblocking(False)
        try:
            s.bind((f"127.1.{a // 250}.{a % 250 + 1}", 0))
            s.connect_ex(("127.0.0.1", port))
        except OSError:
            s.close()
            retry.append((time.monotonic() + 0.05, i))
            return
        sel.register(s, selectors.EVENT_READ, i)
        socks[s] = 0

    def close(s, i):
        sel.unregister(s)
        socks.pop(s, None)
        s.close()
        retry.append((time.monotonic() + 0.05, i))

    for i in range(count):
        connect(i)
    next_byte = time.monotonic() + 5
    while time.monotonic() < end:
        for key, _ in sel.select(timeout=0.05):
            s = key.fileobj
            try:
                if not s.recv(4096):
                    close(s, key.data)
            except BlockingIOError:
                pass
            except OSError:
                close(s, key.data)
        now = time.monotonic()
        due = [r for r in retry if r[0] <= now]
        retry[:] = [r for r in retry if r[0] > now]
        for _, i in due:
            connect(i)
        if slow and now >= next_byte:
            next_byte = now + 5
            for s in list(socks):
                try:
                    s.send(head[socks[s] % len(head):socks[s] % len(head) + 1])
                    socks[s] += 1
                except OSError:
                    pass


def share(port, threads, seconds):
    end = time.monotonic() + seconds

    def loop(source):
        while time.monotonic() < end:
            get(port, "/share/v1/bundles", source=source)

    ts = [threading.Thread(target=loop, args=(f"127.2.0.{i % SHARE_SOURCES + 1}",))
          for i in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()


# The box's fastest link: an upload reaches it at most at gigabit Ethernet's
# rate (a Jetway box's NIC), not at loopback's several GB/s.
LINK_BYTES_PER_S = 1_000_000_000 // 8


def upload(port, token, mib, seconds):
    chunk = b"\x5a" * (1 << 20)
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        with socket.create_connection(("127.0.0.1", port)) as s:
            s.sendall((f"POST /api/v1/bundles HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n"
                       f"Content-Length: {mib << 20}\r\nConnection: close\r\n\r\n").encode())
            t0 = time.monotonic()
            for i in range(mib):
                s.sendall(chunk)
                ahead = t0 + (i + 1) * len(chunk) / LINK_BYTES_PER_S - time.monotonic()
                if ahead > 0:
                    time.sleep(ahead)
            s.settimeout(120)
            s.recv(4096)


def main(a):
    if a[0] == "probe":
        probe(int(a[1]), int(a[2]), a[3], float(a[4]))
    elif a[0] in ("idle", "slow"):
        hold(int(a[1]), int(a[2]), float(a[3]), a[0] == "slow")
    elif a[0] == "share":
        share(int(a[1]), int(a[2]), float(a[3]))
    elif a[0] == "upload":
        upload(int(a[1]), a[2], int(a[3]), float(a[4]))
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main(sys.argv[1:] or ["help"])

#!/usr/bin/env python3
"""egress_dns.py: a one-name DNS server for bench/egress.sh (the https benchmarks).

    python3 bench/egress_dns.py LISTEN_ADDR PORT NAME ANSWER_ADDR READYFILE

Answers UDP queries: NAME/A -> ANSWER_ADDR (TTL 3600), NAME/other types ->
no data, any other name -> NXDOMAIN.  Standard library only.
"""
import socket
import struct
import sys


def main():
    listen, port, name, answer, ready = sys.argv[1:6]
    want = name.lower().rstrip(".")
    rdata = socket.inet_aton(answer)
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((listen, int(port)))
    with open(ready, "w") as f:
        f.write("ready\n")
    while True:
        q, peer = s.recvfrom(4096)
        if len(q) < 12:
            continue
        qid, flags, qd = struct.unpack("!HHH", q[:6])
        if qd != 1 or flags & 0x8000:
            continue
        labels, i = [], 12
        while i < len(q) and q[i]:
            labels.append(q[i + 1:i + 1 + q[i]].decode("ascii", "replace"))
            i += 1 + q[i]
        if i + 5 > len(q):
            continue
        qtype = struct.unpack("!H", q[i + 1:i + 3])[0]
        question = q[12:i + 5]
        qname = ".".join(labels).lower()
        rd = flags & 0x0100
        if qname != want:
            s.sendto(struct.pack("!HHHHHH", qid, 0x8180 | rd | 3, 1, 0, 0, 0) + question, peer)
            continue
        if qtype == 1:
            rr = struct.pack("!HHHIH", 0xC00C, 1, 1, 3600, 4) + rdata
            s.sendto(struct.pack("!HHHHHH", qid, 0x8400 | rd | 0x80, 1, 1, 0, 0) + question + rr, peer)
        else:
            s.sendto(struct.pack("!HHHHHH", qid, 0x8400 | rd | 0x80, 1, 0, 0, 0) + question, peer)


if __name__ == "__main__":
    main()

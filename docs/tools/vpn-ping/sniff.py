"""Kernel-timestamped ICMP echo capture on one interface (no tcpdump here). argv: dev out"""
import socket, struct, sys, signal
dev, out = sys.argv[1], sys.argv[2]
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0003))
# classic BPF: ldb [9]; jeq #1 jt 0 jf 1; ret #96; ret #0   (raw IP on a TUN)
prog = [(0x30, 0, 0, 9), (0x15, 0, 1, 1), (0x06, 0, 0, 96), (0x06, 0, 0, 0)]
buf = b"".join(struct.pack("HBBI", *i) for i in prog)
import ctypes
b = ctypes.create_string_buffer(buf)
fprog = struct.pack("HL", len(prog), ctypes.addressof(b))
s.setsockopt(socket.SOL_SOCKET, 26, fprog)  # SO_ATTACH_FILTER
s.bind((dev, 0))
s.setsockopt(socket.SOL_SOCKET, 35, 1)  # SO_TIMESTAMPNS
f = open(out, "w", buffering=1)
signal.signal(signal.SIGTERM, lambda *a: (f.flush(), sys.exit(0)))
while True:
    data, anc, flags, addr = s.recvmsg(96, 64)
    ts = None
    for lvl, typ, d in anc:
        if lvl == socket.SOL_SOCKET and typ == 35:
            sec, ns = struct.unpack("qq", d[:16]); ts = sec + ns / 1e9
    if len(data) < 28 or data[9] != 1: continue
    ihl = (data[0] & 15) * 4
    typ = data[ihl]; seq = struct.unpack("!H", data[ihl + 6: ihl + 8])[0]
    if typ in (0, 8):
        f.write(f"{ts:.6f} {'request' if typ == 8 else 'reply'} {seq} {addr[2]}\n")

# helper 'early' instrumentation (outside the tree): per-node interactive frame times and
# 5 ms samples of every session's pacer / queues, to EARLY_TRACE_DIR/<label>-<pid>.txt
import os
import sys

_dir = os.environ.get("EARLY_TRACE_DIR")
if _dir and "node" in sys.argv and "run" in sys.argv:
    import fcntl
    import json
    import socket
    import struct
    import threading
    import time

    from accessfabric.node.streams import connection as C
    from accessfabric.wire.registry import TrafficClass

    rows = []
    cfg = next((a for a in sys.argv if a.endswith(".toml")), "node")
    name = os.path.basename(os.path.dirname(cfg)) + "-" + os.path.basename(cfg)
    path = f"{_dir}/{name}-{os.getpid()}.txt"
    done = [0]

    def _flush():
        n = len(rows)
        with open(path, "a") as f:
            for r in rows[done[0] : n]:
                f.write(json.dumps(r) + "\n")
        done[0] = n

    def _periodic():
        while True:
            time.sleep(1.0)
            try:
                _flush()
            except Exception:
                pass

    threading.Thread(target=_periodic, daemon=True).start()
    conns = []
    mono = time.monotonic

    def _q(conn):
        t = conn._transport
        s = conn.session
        p = s.pacer
        peer = (s.peer_node_id or "?")[:6]
        tw = outq = notsent = lowat = cwnd = -1
        sock = getattr(t, "_socket", None)
        tr = getattr(t, "_transport", None)
        try:
            if tr is not None:
                tw = tr.get_write_buffer_size()
            if sock is not None:
                fd = sock.fileno()
                outq = struct.unpack("i", fcntl.ioctl(fd, 0x5411, b"\0" * 4))[0]
                raw = sock.getsockopt(socket.IPPROTO_TCP, 11, 160)
                notsent = struct.unpack_from("=I", raw, 144)[0]
                cwnd = struct.unpack_from("=I", raw, 80)[0]
                lowat = getattr(t, "notsent_lowat", -1)
        except Exception:
            pass
        pw = None if p is None else p.window
        pin = None if p is None else p.inflight
        base = None if p is None else p._base
        qd = None if p is None else p._queueing
        return [
            peer,
            pw,
            pin,
            base,
            qd,
            tw,
            outq,
            notsent,
            lowat,
            cwnd,
            s.queued_bytes() if hasattr(s, "queued_bytes") else -1,
            conn.bytes_sent,
            conn.bytes_received,
            None if p is None else p.rate,
            None if p is None else p._floor,
            None if p is None else p.probes,
            None if s._pressure_cap is None else s._pressure_cap.rate,
            None if s._pressure_cap is None else s._pressure_cap.level,
        ]

    state = {"started": False, "due": 0.0}

    def _sample(loop):
        now = mono()
        lag = now - state["due"]
        out = []
        for c in list(conns):
            if c._transport is None:
                continue
            try:
                out.append(_q(c))
            except Exception as e:
                out.append(repr(e))
        try:
            with open("/proc/self/schedstat") as f:
                ss = f.read().split()
            cpu_ns, wait_ns = int(ss[0]), int(ss[1])
        except Exception:
            cpu_ns = wait_ns = -1
        try:
            with open("/proc/stat") as f:
                cl = f.readline().split()
            idle = int(cl[4]) + int(cl[5])
            total = sum(int(x) for x in cl[1:9])
        except Exception:
            idle = total = -1
        rows.append(["S", now, lag, out, cpu_ns, wait_ns, idle, total])
        state["due"] = now + 0.005
        loop.call_later(0.005, _sample, loop)

    orig_init = C.SessionConnection.__init__

    def __init__(self, *a, **k):
        orig_init(self, *a, **k)
        conns.append(self)
        if not state["started"]:
            state["started"] = True
            state["due"] = mono()
            self._loop.call_soon(_sample, self._loop)

    C.SessionConnection.__init__ = __init__
    orig_dispatch = C.SessionConnection._dispatch

    def _dispatch(self, events):
        for e in events:
            if type(e).__name__ == "DataReceived":
                st = self._streams.get(e.stream_id)
                if st is not None and st.traffic_class == TrafficClass.INTERACTIVE:
                    rows.append(["R", mono(), e.stream_id, len(e.data), _q(self)])
        return orig_dispatch(self, events)

    C.SessionConnection._dispatch = _dispatch
    orig_write = C.SessionConnection._write

    def _write(self, stream, data):
        if stream.traffic_class == TrafficClass.INTERACTIVE:
            t0 = mono()
            orig_write(self, stream, data)
            rows.append(["W", t0, mono(), stream.stream_id, len(data), _q(self)])
            return
        return orig_write(self, stream, data)

    C.SessionConnection._write = _write
if _dir and "demo" in sys.argv:
    import json

    import accessfabric.demo.run as R
    import accessfabric.demo.traffic as T

    orig_rt = T.run_traffic

    async def run_traffic(fleet, procs, duration):
        res = await orig_rt(fleet, procs, duration)
        with open(f"{_dir}/echoes.json", "w") as f:
            json.dump(
                {
                    "started": res.started,
                    "killed_at": res.killed_at,
                    "sent": res.sent_at,
                    "rtt": res.rtts,
                    "answered": res.answered_at,
                    "ids": {n: fleet.ids[n] for n in fleet.ids},
                    "labels": {fleet.ids[n]: fleet.label(fleet.ids[n]) for n in fleet.ids},
                    "chunks": res.chunk_at,
                },
                f,
            )
        return res

    T.run_traffic = run_traffic
    R.run_traffic = run_traffic
if os.environ.get("EARLY_SESSION") and "demo" in sys.argv:
    import accessfabric.demo.fleet as F

    _orig_config = F._config

    def _config(name, fleet, control, token):
        path = _orig_config(name, fleet, control, token)
        path.write_text(
            path.read_text() + "[session]\n" + os.environ["EARLY_SESSION"].replace(";", "\n") + "\n"
        )
        return path

    F._config = _config
if _dir and "demo" in sys.argv:
    import threading as _th
    import time as _tm

    def _procs():
        out = open(f"{_dir}/procs.txt", "w")
        while True:
            now = _tm.monotonic()
            row = [now]
            for pid in os.listdir("/proc"):
                if not pid.isdigit():
                    continue
                try:
                    cpu = 0
                    for tid in os.listdir(f"/proc/{pid}/task"):
                        with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                            cpu += int(f.read().split()[0])
                    with open(f"/proc/{pid}/cmdline", "rb") as f:
                        cmd = f.read().replace(b"\0", b" ")[:120].decode(errors="replace")
                    if not cmd:
                        with open(f"/proc/{pid}/comm") as f:
                            cmd = "[" + f.read().strip() + "]"
                except OSError:
                    continue
                row.append((int(pid), cpu, cmd))
            out.write(json.dumps(row) + "\n")
            out.flush()
            _tm.sleep(0.1)

    _th.Thread(target=_procs, daemon=True).start()

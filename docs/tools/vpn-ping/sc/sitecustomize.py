# helper 'ping': record the largest session receive window in node processes (/tmp/png/win/<pid>)
import os, sys, threading, time
if "node" in sys.argv or "vpn" in sys.argv or any("accessfabric" in a for a in sys.argv):
    try:
        from accessfabric.session import flow
        seen = {"max": 0, "grows": 0}
        orig = flow.ReceiveWindow._maybe_grow
        def _maybe_grow(self, now, rtt, room, _orig=orig):
            before = self.window
            _orig(self, now, rtt, room)
            if self.max_window >= 32 << 20:  # the session window (max 64 MiB)
                if self.window > before:
                    seen["grows"] += 1
                seen["max"] = max(seen["max"], self.window)
        flow.ReceiveWindow._maybe_grow = _maybe_grow
        os.makedirs("/tmp/png/win", exist_ok=True)
        path = f"/tmp/png/win/{os.getpid()}"
        def dump():
            while True:
                time.sleep(0.5)
                with open(path, "w") as f:
                    f.write(f"{' '.join(sys.argv[1:4])} max={seen['max']} grows={seen['grows']}\n")
        threading.Thread(target=dump, daemon=True).start()
    except Exception as e:  # noqa
        pass

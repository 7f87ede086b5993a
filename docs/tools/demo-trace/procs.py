import json
import re
import sys

d = sys.argv[1]
B = float(sys.argv[2]) if len(sys.argv) > 2 else 0.5
E = json.load(open(f"{d}/echoes.json"))
st = E["started"]
rows = [json.loads(l) for l in open(f"{d}/procs.txt")]


def label(cmd):
    if "demo.echo client" in cmd:
        return "echo-cli"
    if "demo.echo serve" in cmd:
        return "echo-srv"
    if "http.server" in cmd:
        return "http"
    if " demo" in cmd and "accessfabric demo" in cmd:
        return "demo"
    m = re.search(r"demo-[^/]+/([a-z0-9-]+)\.toml", cmd)
    if m and "node run" in cmd:
        return m.group(1)
    if "control" in cmd and "accessfabric" in cmd and "demo-" in cmd:
        return "control"
    if "accessfabric-demo" in cmd:
        return "demo-other"
    if cmd.startswith("[ksoftirqd") or cmd.startswith("[kworker"):
        return "kernel"
    return "OTHER"


t = st - 2 * B
idx = 0
labels = [
    "demo",
    "laptop",
    "entry",
    "relay-1",
    "relay-2",
    "home",
    "http",
    "echo-cli",
    "echo-srv",
    "control",
    "kernel",
    "OTHER",
]
print("t      " + " ".join(f"{l[:8]:>8}" for l in labels))
while t < st + 6:
    a = [r for r in rows if t <= r[0] < t + B]
    if len(a) >= 2:
        first = {p: (c, cmd) for p, c, cmd in a[0][1:]}
        tot = {}
        for p, c, cmd in a[-1][1:]:
            c0 = first.get(p, (0, cmd))[0] if p in first else 0
            tot[label(cmd)] = tot.get(label(cmd), 0) + (c - c0)
        dt = a[-1][0] - a[0][0]
        print(
            f"{t - st:5.2f} " + " ".join(f"{tot.get(l, 0) / 1e9 / dt * 100:7.0f}%" for l in labels)
        )
    t += B

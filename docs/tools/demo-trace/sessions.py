import glob
import json
import os
import sys

d = sys.argv[1]
B = float(sys.argv[2]) if len(sys.argv) > 2 else 0.5
E = json.load(open(f"{d}/echoes.json"))
lab = E["labels"]
st = E["started"]
killed = E["killed_at"]
name_of = {n: lab[i] for n, i in E["ids"].items()}


def pl(peer):
    for i, l in lab.items():
        if i.startswith(peer):
            return l
    return peer


S = {}
for f in glob.glob(f"{d}/*.toml-*.txt"):
    n = name_of.get(os.path.basename(f).split("-", 3)[-1].split(".toml")[0])
    S[n] = [json.loads(l) for l in open(f) if l.startswith('["S"')]
# links: sender node -> peer (bulk direction home->relay->entry->laptop)
links = [
    ("home", "relay-a"),
    ("relay-a", "entry"),
    ("entry", "laptop"),
    ("home", "relay-b"),
    ("relay-b", "entry"),
]


def conn(r, peer):
    for c in r[3]:
        if isinstance(c, list) and pl(c[0]) == peer:
            return c


t = st - B
hdr = "t     idle% " + " ".join(
    f"{a[:5]}>{b[:5]}: MB/s win/infl  oq  sq  qd(ms)".rjust(56) for a, b in links[:3]
)
print(hdr)
while t < st + 15:
    cols = []
    idle = None
    for a, b in links[:3] if t < (killed or 1e18) else links[2:]:
        rs = [r for r in S.get(a, []) if t <= r[1] < t + B]
        cs = [(r[1], conn(r, b)) for r in rs]
        cs = [(x, c) for x, c in cs if c]
        if idle is None and len(rs) > 1 and rs[0][7] > 0:
            idle = (rs[-1][6] - rs[0][6]) / (rs[-1][7] - rs[0][7]) * 100
        if len(cs) > 1:
            rate = (cs[-1][1][11] - cs[0][1][11]) / (cs[-1][0] - cs[0][0]) / 1e6
            c = cs[-1][1]
            w = "-" if c[1] is None else f"{c[1] / 1024:.0f}"
            mx = max(x[1][2] or 0 for x in cs) / 1024
            oq = max(x[1][6] for x in cs) / 1024
            sq = max(x[1][10] for x in cs) / 1024
            qd = "-" if c[4] is None else f"{c[4] * 1e3:.2f}"
            cols.append(
                f"{rate:6.0f} {w:>5}/{mx:5.0f} {oq:5.0f} {sq:5.0f} {qd:>5} b{(c[3] or 0) * 1e3:.2f} f{(c[14] or 0) * 1e3:.1f} p{c[15]} c{'-' if c[16] is None else int(c[16] / 1e6)}/{c[17]}"
            )
        else:
            cols.append("")
    ec = [r for s, r in zip(E["sent"], E["rtt"]) if t <= s < t + B]
    p50 = sorted(ec)[len(ec) // 2] * 1e3 if ec else 0
    print(
        f"{t - st:5.2f} {idle or 0:4.0f} "
        + " ".join(f"{c:>56}" for c in cols)
        + f"  slow {sum(r > 0.01 for r in ec):2d}/{len(ec):2d} p50 {p50:5.2f}"
        + ("  KILL" if killed and t <= killed < t + B else "")
    )
    t += B

import bisect
import glob
import json
import os
import statistics
import sys

# per echo: for reply hops, oq at sender's W vs delay to receiver's R
for d in sys.argv[1:]:
    E = json.load(open(f"{d}/echoes.json"))
    lab = E["labels"]
    st = E["started"]
    killed = E["killed_at"] or 1e18
    name_of = {n: lab[i] for n, i in E["ids"].items()}

    def pl(peer):
        for i, l in lab.items():
            if i.startswith(peer):
                return l
        return peer

    ev = []
    for f in glob.glob(f"{d}/*.toml-*.txt"):
        n = name_of.get(os.path.basename(f).split("-", 3)[-1].split(".toml")[0])
        for l in open(f):
            r = json.loads(l)
            if r[0] == "R":
                ev.append((r[1], n, "R", pl(r[4][0]), r[4]))
            elif r[0] == "W":
                ev.append((r[1], n, "W", pl(r[5][0]), r[5]))
    ev.sort(key=lambda x: x[0])
    ts = [e[0] for e in ev]
    relay = "relay-a"
    SEQ = [
        ("laptop", "W", "entry"),
        ("entry", "R", "laptop"),
        ("entry", "W", relay),
        (relay, "R", "entry"),
        (relay, "W", "home"),
        ("home", "R", relay),
        ("home", "W", relay),
        (relay, "R", "home"),
        (relay, "W", "entry"),
        ("entry", "R", relay),
        ("entry", "W", "laptop"),
        ("laptop", "R", "entry"),
    ]
    pts = {6: [], 8: [], 10: []}
    for s, rtt, a in zip(E["sent"], E["rtt"], E["answered"]):
        if a >= killed:
            continue
        i = bisect.bisect_left(ts, s)
        j = bisect.bisect_right(ts, a)
        k = 0
        got = []
        for e in ev[i:j]:
            if k < len(SEQ) and (e[1], e[2], e[3]) == SEQ[k]:
                got.append(e)
                k += 1
        if k < len(SEQ):
            continue
        for w in (6, 8, 10):
            oq = got[w][4][6] / 1024
            tb = got[w][4][5] / 1024
            pts[w].append((oq + tb, (got[w + 1][0] - got[w][0]) * 1e3, s - st))
    print(d)
    for w, ps in pts.items():
        name = f"{SEQ[w][0]}->{SEQ[w + 1][0]}"
        for lo, hi in ((0, 64), (64, 256), (256, 512), (512, 1024), (1024, 99999)):
            sel = [p[1] for p in ps if lo <= p[0] < hi]
            if sel:
                print(
                    f"  {name:16} queue {lo:5}-{hi:5}K n={len(sel):3} delay mean {statistics.mean(sel):5.2f} p90 {sorted(sel)[int(0.9 * len(sel))]:5.2f} ms"
                )

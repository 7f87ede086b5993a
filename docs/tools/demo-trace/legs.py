import bisect
import glob
import json
import os
import statistics
import sys

d = sys.argv[1]
EARLY = float(sys.argv[2]) if len(sys.argv) > 2 else 2.0
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
samples = {}
for f in glob.glob(f"{d}/*.toml-*.txt"):
    n = name_of.get(os.path.basename(f).split("-", 3)[-1].split(".toml")[0])
    for l in open(f):
        r = json.loads(l)
        if r[0] == "R":
            ev.append((r[1], n, "R", pl(r[4][0]), r[4]))
        elif r[0] == "W":
            ev.append((r[1], n, "W", pl(r[5][0]), r[5]))
        elif r[0] == "S":
            samples.setdefault(n, []).append(r)
ev.sort(key=lambda x: x[0])
ts = [e[0] for e in ev]
# route: relay on primary
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
NAMES = [
    "c>lapW",
    "lapW>entR",
    "entR>entW",
    "entW>relR",
    "relR>relW",
    "relW>homR",
    "homR>homW",
    "homW>relR",
    "relR>relW'",
    "relW>entR",
    "entR>entW'",
    "entW>lapR",
    "lapR>c",
]
res = {"early": [], "late": []}
for s, rtt, a in zip(E["sent"], E["rtt"], E["answered"]):
    if a >= killed and s < killed + 1.0:
        continue
    if s >= killed:
        continue  # before the kill only (route via relay-a)
    i = bisect.bisect_left(ts, s)
    j = bisect.bisect_right(ts, a)
    k = 0
    times = [s]
    for e in ev[i:j]:
        if k < len(SEQ) and (e[1], e[2], e[3]) == SEQ[k]:
            times.append(e[0])
            k += 1
    if k < len(SEQ):
        continue
    times.append(a)
    segs = [(times[x + 1] - times[x]) * 1e3 for x in range(len(times) - 1)]
    res["early" if s - st < EARLY else "late"].append((s - st, rtt * 1e3, segs))
for key in res:
    rows = res[key]
    if not rows:
        continue
    print(key, len(rows), "echoes; slow", sum(r[1] > 10 for r in rows))
    print("  seg        " + " ".join(f"{n:>10}" for n in NAMES))
    for label, sel in (("mean all", rows), ("mean slow", [r for r in rows if r[1] > 10])):
        if not sel:
            continue
        print(
            f"  {label:10} "
            + " ".join(f"{statistics.mean(r[2][x] for r in sel):10.2f}" for x in range(len(NAMES)))
        )
    print(
        f"  {'p90 all':10} "
        + " ".join(
            f"{sorted(r[2][x] for r in rows)[int(0.9 * len(rows))]:10.2f}"
            for x in range(len(NAMES))
        )
    )
# loop lag per node: early vs late
for n, rs in samples.items():
    e = [r[2] * 1e3 for r in rs if st <= r[1] < st + 2]
    l = [r[2] * 1e3 for r in rs if st + 2 <= r[1] < killed]
    if e and l:
        print(
            f"lag {n:8} early mean {statistics.mean(e):.2f} p90 {sorted(e)[int(0.9 * len(e))]:.2f} max {max(e):.1f} | late mean {statistics.mean(l):.2f} p90 {sorted(l)[int(0.9 * len(l))]:.2f} max {max(l):.1f}"
        )

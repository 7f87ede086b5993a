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
S = {}
for f in glob.glob(f"{d}/*.toml-*.txt"):
    n = name_of.get(os.path.basename(f).split("-", 3)[-1].split(".toml")[0])
    S[n] = [json.loads(l) for l in open(f) if l.startswith('["S"')]
order = ["laptop", "entry", "relay-a", "relay-b", "home"]
print("t      " + " ".join(f"{n:>16}" for n in order) + "   bulkMB/s  echoes>10/all  p50")
t = st - 2 * B

ch = E["chunks"]
while t < st + 8:
    cols = []
    for n in order:
        rs = [r for r in S.get(n, []) if t <= r[1] < t + B and len(r) > 4]
        if len(rs) > 1:
            cpu = (rs[-1][4] - rs[0][4]) / 1e9 / (rs[-1][1] - rs[0][1])
            wait = (rs[-1][5] - rs[0][5]) / 1e9 / (rs[-1][1] - rs[0][1])
            cols.append(f"{cpu * 100:5.0f}%/w{wait * 100:4.0f}%")
        else:
            cols.append(" " * 16)
    nch = sum(1 for c in ch if t <= c < t + B)
    ec = [r for s, r in zip(E["sent"], E["rtt"]) if t <= s < t + B]
    p50 = sorted(ec)[len(ec) // 2] * 1e3 if ec else 0
    print(
        f"{t - st:5.2f} "
        + " ".join(f"{c:>16}" for c in cols)
        + f"   {nch / B:7.0f}   {sum(r > 0.01 for r in ec):3d}/{len(ec):3d}  {p50:5.2f}"
        + ("  KILL" if killed and t <= killed < t + B else "")
    )
    t += B

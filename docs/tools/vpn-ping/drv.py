"""Driver: vpn_tunnel(prefix=png), N rounds of iperf3 TCP + 400 pings; --ss samples the carrier sockets."""
import argparse, json, re, subprocess, sys, threading, time
from accessfabric.bench.vpn import vpn_tunnel

ap = argparse.ArgumentParser()
ap.add_argument("--rounds", type=int, default=1)
ap.add_argument("--seconds", type=float, default=8)
ap.add_argument("--ss", action="store_true")
ap.add_argument("--out", default="/tmp/png/out.jsonl")
ap.add_argument("--tag", default="")
a = ap.parse_args()

def q(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(len(xs) * p))] if xs else float("nan")

def sampler(topo, stop, rows):
    cmds = {h: ["ip", "netns", "exec", topo.ns(h), "ss", "-tmiHn", "( sport = :7443 or dport = :7443 )"] for h in ("client", "exit")}
    while not stop.is_set():
        t = time.time()
        row = {"t": t}
        for h, c in cmds.items():
            out = subprocess.run(c, capture_output=True, text=True).stdout
            # first line: state recvq sendq ...
            m = re.search(r"ESTAB\s+(\d+)\s+(\d+)", out)
            sk = re.search(r"skmem:\(([^)]*)\)", out)
            nu = re.search(r"notsent:(\d+)", out)
            uw = re.search(r"unacked:(\d+)", out)
            row[h] = [int(m.group(1)), int(m.group(2))] if m else None
            row[h + "_sk"] = sk.group(1) if sk else None
            row[h + "_notsent"] = int(nu.group(1)) if nu else 0
        rows.append(row)
        time.sleep(0.05)

def node_cpu(topo):
    out = {}
    tick = __import__("os").sysconf("SC_CLK_TCK")
    for h in ("client", "exit"):
        pids = subprocess.run(["ip", "netns", "pids", topo.ns(h)], capture_output=True, text=True).stdout.split()
        total = 0.0
        for pid in pids:
            try:
                cmd = open(f"/proc/{pid}/cmdline").read()
                if "vpn" not in cmd:
                    continue
                st = open(f"/proc/{pid}/stat").read()
                f = st[st.rfind(")") + 2:].split()
                total += (int(f[11]) + int(f[12])) / tick
            except OSError:
                pass
        out[h] = total
    return out

with vpn_tunnel(prefix="png") as tun:
    topo = tun.topo
    for h in ("server",):
        topo.popen(h, ["iperf3", "-s", "-p", "5202"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(0.5)
    for r in range(a.rounds):
        load = open("/proc/loadavg").read().split()[0]
        rows = []; stop = threading.Event()
        th = threading.Thread(target=sampler, args=(topo, stop, rows)) if a.ss else None
        cpu0 = node_cpu(topo); t0 = time.time()
        flow = subprocess.Popen([*tun.client_run, "iperf3", "-c", tun.server, "-t", str(a.seconds + 1), "-p", "5202", "-J"], stdout=subprocess.PIPE, text=True)
        time.sleep(0.5)
        if th: th.start()
        count = int(a.seconds / 0.02)
        out = subprocess.run([*tun.client_run, "ping", "-c", str(count), "-i", "0.02", "-W", "1", tun.server], capture_output=True, text=True).stdout
        stop.set()
        if th: th.join()
        res = json.loads(flow.communicate()[0])
        cpu1 = node_cpu(topo)
        mbit = res["end"]["sum_received"]["bits_per_second"] / 1e6
        rtts = [float(x.split("time=")[1].split()[0]) for x in out.splitlines() if "time=" in x]
        rec = {"tag": a.tag, "load": load, "t": time.strftime("%H:%M:%S", time.gmtime()), "mbit": round(mbit), "n": len(rtts),
               "p50": q(rtts, .5), "p90": q(rtts, .9), "p99": q(rtts, .99)}
        gib = res["end"]["sum_received"]["bytes"] / (1 << 30)
        rec["cpu_s_per_gib"] = {h: round((cpu1[h] - cpu0[h]) / gib, 2) for h in cpu0}
        rec["gib"] = round(gib, 2)
        cst = tun.status("client"); rec["client_dropped"] = cst.get("dropped")
        if rows:
            for h in ("client", "exit"):
                vals = [x[h] for x in rows if x[h]]
                rec[h + "_recvq"] = [q([v[0] for v in vals], p) for p in (.5, .9, .99)]
                rec[h + "_sendq"] = [q([v[1] for v in vals], p) for p in (.5, .9, .99)]
                rec[h + "_notsent"] = [q([x[h + "_notsent"] for x in rows], p) for p in (.5, .9, .99)]
            rec["samples"] = len(rows)
            ahead = [x["client"][1] + x["exit"][0] for x in rows if x["client"] and x["exit"]]
            rec["ahead"] = [q(ahead, p) for p in (.5, .9, .99)]
            rec["sk_example"] = [rows[len(rows)//2].get("client_sk"), rows[len(rows)//2].get("exit_sk")]
        print(json.dumps(rec), flush=True)
        with open(a.out, "a") as f: f.write(json.dumps(rec) + "\n")
        time.sleep(1)

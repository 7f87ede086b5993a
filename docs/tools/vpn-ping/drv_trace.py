"""ping-under-iperf3 driver (helper 'ping'): legs by tcpdump on both TUNs.
usage: PYTHONPATH=<tree>/src python drv.py LABEL [--rounds N] [--seconds S] [--trace] [--own-session]"""
import argparse, json, os, re, subprocess, sys, time, statistics
from accessfabric.bench.vpn import vpn_tunnel

ap = argparse.ArgumentParser()
ap.add_argument("label"); ap.add_argument("--rounds", type=int, default=1)
ap.add_argument("--seconds", type=float, default=8.0); ap.add_argument("--trace", action="store_true")
ap.add_argument("--own-session", action="store_true"); ap.add_argument("--ss", action="store_true")
a = ap.parse_args()

def pct(xs, p):
    xs = sorted(xs); return xs[min(len(xs) - 1, int(len(xs) * p))] if xs else float("nan")

def tun_of(topo, host):
    out = topo.run(host, ["ip", "-o", "link"]).stdout
    return re.search(r"\d+: (af\w*)[:@]", out).group(1)

def dump(topo, host, dev, path):
    return subprocess.Popen(["ip", "netns", "exec", topo.ns(host), "/usr/bin/python3", "/tmp/png/sniff.py", dev, path])

def parse_dump(path):
    # line: 1765.123456 IP a > b: ICMP echo request, id X, seq N, length L
    out = {}
    for line in open(path):
        t, kind, seq, _ = line.split()
        out.setdefault((kind, int(seq)), float(t))
    return out

if os.environ.get("PING_TRACE_DIR"):
    os.environ["PYTHONPATH"] = "/tmp/ping/sc:" + os.environ["PYTHONPATH"]
with vpn_tunnel(prefix="png") as tun:
    topo = tun.topo; q = subprocess.DEVNULL
    topo.popen("server", ["iperf3", "-s", "-p", "5202"], stdout=q, stderr=q)
    time.sleep(0.5)
    devs = {h: tun_of(topo, h) for h in ("client", "exit")}
    for r in range(a.rounds):
        load = open("/proc/loadavg").read().split()[0]
        dumps = []
        if a.trace:
            for h in ("client", "exit"):
                p = f"/tmp/png/tr-{a.label}-{r}-{h}.txt"; dumps.append((h, p, dump(topo, h, devs[h], p)))
            time.sleep(0.5)
        samples = []
        if a.ss:
            import threading
            stop = threading.Event()
            def sample():
                while not stop.is_set():
                    row = []
                    for h in ("client", "exit"):
                        o = topo.run(h, ["ss", "-tnH", "state", "established", "( sport = :7443 or dport = :7443 )"]).stdout.split()
                        row.append((int(o[0]), int(o[1])) if len(o) >= 2 else (0, 0))
                    samples.append(row); time.sleep(0.05)
            th = threading.Thread(target=sample); th.start()
        flow = subprocess.Popen([*tun.client_run, "iperf3", "-c", tun.server, "-t", str(a.seconds + 1),
                                 "-p", "5202", "-J"], stdout=subprocess.PIPE, stderr=q, text=True)
        time.sleep(0.5)
        count = int(a.seconds / 0.02)
        out = subprocess.run([*tun.client_run, "ping", "-D", "-c", str(count), "-i", "0.02", "-W", "1", tun.server],
                             capture_output=True, text=True, start_new_session=a.own_session).stdout
        res = json.loads(flow.communicate()[0])
        if a.ss:
            stop.set(); th.join()
        mbit = res["end"]["sum_received"]["bits_per_second"] / 1e6
        rt = {}
        for line in out.splitlines():
            m = re.match(r"\[([\d.]+)\].*icmp_seq=(\d+).*time=([\d.]+)", line)
            if m: rt[int(m.group(2))] = (float(m.group(1)), float(m.group(3)))
        rtts = [v[1] for v in rt.values()]
        row = dict(label=a.label, round=r, load=load, mbit=round(mbit), n=len(rtts),
                   p50=round(pct(rtts, .5), 2), p90=round(pct(rtts, .9), 2), p99=round(pct(rtts, .99), 2),
                   p99_150=round(sorted(rtts)[-2] if len(rtts) > 150 else float('nan'), 2))
        if samples:
            ahead = [c[1] + x[0] for c, x in samples]  # client Send-Q + exit Recv-Q
            row["ahead_MB"] = [round(pct(ahead, p) / 1e6, 2) for p in (.5, .9, .99)]
            row["cl_sendq_MB"] = [round(pct([c[1] for c, x in samples], p) / 1e6, 2) for p in (.5, .9, .99)]
            row["x_recvq_MB"] = [round(pct([x[0] for c, x in samples], p) / 1e6, 2) for p in (.5, .9, .99)]
            row["ahead_ms_p50_p90"] = [round(pct(ahead, p) / (mbit / 8 * 1e6) * 1e3, 2) for p in (.5, .9)]
        if a.trace:
            time.sleep(0.3)
            for h, p, proc in dumps: proc.terminate(); proc.wait()
            c = parse_dump(f"/tmp/png/tr-{a.label}-{r}-client.txt"); x = parse_dump(f"/tmp/png/tr-{a.label}-{r}-exit.txt")
            legs = {k: [] for k in ("send", "fwd", "turn", "ret", "out")}
            for seq, (recv, rtt) in rt.items():
                try:
                    t0 = recv - rtt / 1e3; t1 = c[("request", seq)]; t2 = x[("request", seq)]
                    t3 = x[("reply", seq)]; t4 = c[("reply", seq)]
                except KeyError: continue
                for k, v in zip(legs, (t1 - t0, t2 - t1, t3 - t2, t4 - t3, recv - t4)): legs[k].append(v * 1e3)
            row["legs"] = {k: [round(pct(v, p), 2) for p in (.5, .9, .99)] for k, v in legs.items()}
            # which leg dominates in the worst 2% pings
            worst = sorted(rt, key=lambda s: -rt[s][1])[: max(1, len(rt) // 50)]
            row["worst"] = []
            for seq in worst[:4]:
                try:
                    recv, rtt = rt[seq]; t0 = recv - rtt / 1e3
                    row["worst"].append([round(rtt, 2)] + [round(v * 1e3, 2) for v in (c[("request", seq)] - t0, x[("request", seq)] - c[("request", seq)], x[("reply", seq)] - x[("request", seq)], c[("reply", seq)] - x[("reply", seq)], recv - c[("reply", seq)])])
                except KeyError: pass
        print(json.dumps(row), flush=True)
        time.sleep(1.0)

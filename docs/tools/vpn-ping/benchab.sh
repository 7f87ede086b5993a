#!/bin/bash
# usage: benchab.sh OUT PAIRS: bench vpn --quick alternating A (/tmp/png-a) and D (/tmp/png-d)
out=$1; pairs=$2
cd /work/main
for i in $(seq 1 $pairs); do for t in A D; do
  src=/tmp/png-$(echo $t | tr AD ad)/src
  l0=$(cut -d' ' -f1 /proc/loadavg); t0=$(date -u +%H:%M:%S)
  PYTHONPATH=$src timeout 400 .venv/bin/python -m accessfabric bench vpn --quick --json > /tmp/png/bv-$t-$i.json 2>/tmp/png/bv-$t-$i.err
  l1=$(cut -d' ' -f1 /proc/loadavg)
  python3 - "$t" "$t0" "$l0" "$l1" /tmp/png/bv-$t-$i.json >> $out <<'PY'
import json,sys
t,t0,l0,l1,p=sys.argv[1:]
r=json.load(open(p)); f={x['metric']:x for x in r['results']}
g=lambda m: f[m]['value'] if m in f else float('nan')
b=lambda m: f[m].get('baseline_value') if m in f else float('nan')
print(json.dumps(dict(tag=t,t=t0,load=f"{l0}-{l1}",tcp=round(g('TUN VPN offloads on, iperf3 TCP Mbit/s')),tcp_under=round(b('TUN VPN offloads on, iperf3 TCP Mbit/s')),udp=round(g('TUN VPN offloads on, iperf3 UDP 1400 B Mbit/s')),ping_p99=g('TUN VPN offloads on, ping p99 under iperf3 TCP'),tcp_off=round(g('TUN VPN offloads off, iperf3 TCP Mbit/s')))))
PY
done; done

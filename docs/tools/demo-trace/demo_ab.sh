#!/bin/bash
# usage: demo_ab.sh OUT PAIRS SRC_A SRC_B   (PYTHONPATH for A and B)
out=$1; pairs=$2; A=$3; B=$4
cd /tmp
for i in $(seq 1 $pairs); do
  for v in A B; do
    if [ $v = A ]; then src=$A; else src=$B; fi
    l0=$(cut -d' ' -f1 /proc/loadavg)
    PYTHONPATH=$src /work/main/.venv/bin/python -m accessfabric demo --json > /tmp/demo-ab.json 2>/dev/null
    l1=$(cut -d' ' -f1 /proc/loadavg)
    python3 -c "
import json; d=json.load(open('/tmp/demo-ab.json')); b=d['bulk']; i=d['interactive']
slow=i.get('over_10ms', [])
early=sum(1 for e in slow if e['at_s']<2.0 and not e['failover']); fo=sum(1 for e in slow if e['failover'])
print('$i $v load $l0-$l1 bulk %.0f p50 %.2f p99 %.2f steady %s slow %d early %d failover %d ok %s' % (b['mbit_s'], i['p50_ms'], i['p99_ms'], i.get('p99_outside_failover_ms'), i.get('over_10ms_count', len(slow)), early, fo, d['ok']))" >> $out
  done
done

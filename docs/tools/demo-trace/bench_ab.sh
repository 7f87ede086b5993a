#!/bin/bash
# usage: bench_ab.sh OUT PAIRS SUITE SRC_A SRC_B
out=$1; pairs=$2; suite=$3; A=$4; B=$5
cd /tmp
for i in $(seq 1 $pairs); do
  for v in A B; do
    if [ $v = A ]; then src=$A; else src=$B; fi
    l0=$(cut -d' ' -f1 /proc/loadavg)
    PYTHONPATH=$src /work/main/.venv/bin/python -m accessfabric bench $suite --quick --json > /tmp/bench-ab.json 2>/dev/null
    l1=$(cut -d' ' -f1 /proc/loadavg)
    python3 -c "
import json; d=json.load(open('/tmp/bench-ab.json'))
parts=[]
for r in d['results']:
    m=r['metric']
    if '$suite'=='carrier' and r.get('baseline_metric','').startswith('raw asyncio tls'):
        parts.append('%s %.0f/%.0f=%.3f' % (m.replace('fabric ','').replace(' MB/s',''), r['value'], r['baseline_value'], r['ratio']))
    elif '$suite'=='hol':
        parts.append('%s %.3g (base %s %.3g)' % (m, r['value'], r.get('baseline_metric'), r.get('baseline_value') or 0))
print('$i $v load $l0-$l1 ' + ' | '.join(parts))" >> $out
  done
done

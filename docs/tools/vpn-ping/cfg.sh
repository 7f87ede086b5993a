#!/bin/bash
# usage: cfg.sh OUT REPS "tag:ENV=V ENV2=V" ... ; each config a fresh tunnel, driver args from $DRV
out=$1; reps=$2; shift 2
cd /work/main
for i in $(seq 1 $reps); do
  for spec in "$@"; do
    tag=${spec%%:*}; envs=${spec#*:}
    src=${SRC:-/work/wt/ping/src}
    case $tag in A*) src=/tmp/png-a/src;; C*) src=/tmp/png-c/src;; B*) src=/tmp/png-b/src;; D*) src=/tmp/png-d/src;; esac
    env $envs PYTHONPATH=$src timeout 300 .venv/bin/python /tmp/png/drv.py --tag $tag --out $out $DRV 2>>$out.err | tail -n +1 >/dev/null
  done
done

#!/usr/bin/env bash
# Runs statemesh jepsen over every workload on the given backends and
# prints a verdict table; exits 1 if any run was invalid, 2 if any was
# unknown (and none invalid). Used by make jepsen-ci and make jepsen.
#
#   suite.sh BINARY STORE TIME_LIMIT INTERVAL NODES BACKEND=NEMESES...
#
# Each run's stderr is appended to STORE/stderr.log; for a run that is
# not valid it is also printed, with the end of every node's log, so
# that a CI log says why.
set -uo pipefail
bin=$1 store=$2 limit=$3 interval=$4 nodes=$5
shift 5
workloads=${WORKLOADS:-counter set register durability convergence}
rows=() worst=0
errf=$(mktemp) mark=$(mktemp)
trap 'rm -f "$errf" "$mark"' EXIT
mkdir -p "$store"
for spec in "$@"; do
  backend=${spec%%=*} nemeses=${spec#*=}
  for w in $workloads; do
    echo "== jepsen: $w on $backend, nemeses $nemeses, $limit"
    start=$(date +%s)
    touch "$mark"
    "$bin" jepsen --backend "$backend" --workload "$w" --nemesis "$nemeses" \
      --time-limit "$limit" --interval "$interval" --nodes "$nodes" --store "$store" 2>"$errf"
    rc=$?
    took=$(( $(date +%s) - start ))
    cat "$errf" >>"$store/stderr.log"
    case $rc in
      0) verdict=valid ;;
      1) verdict=INVALID; worst=1 ;;
      *) verdict=UNKNOWN; [ $worst -eq 0 ] && worst=2 ;;
    esac
    if [ "$rc" -ne 0 ]; then
      echo "== jepsen: $w on $backend: exit $rc; its stderr (last 40 lines):"
      tail -n 40 "$errf"
      for log in $(find "$store" -path '*/logs/*.log' -newer "$mark" 2>/dev/null); do
        echo "== $log (last 25 lines):"
        tail -n 25 "$log"
      done
    fi
    rows+=("$(printf '%-12s %-7s %-8s %4ss  %s' "$w" "$backend" "$verdict" "$took" "$nemeses")")
  done
done
echo
echo "== jepsen verdicts (reports: $store/<test>/latest/index.html)"
printf '%-12s %-7s %-8s %5s  %s\n' workload backend verdict time nemeses
printf '%s\n' "${rows[@]}"
exit $worst

#!/usr/bin/env bash
# Runs statemesh jepsen over every workload on the given backends and
# prints a verdict table; exits 1 if any run was invalid, 2 if any was
# unknown (and none invalid). Used by make jepsen-ci and make jepsen.
#
#   suite.sh BINARY STORE TIME_LIMIT INTERVAL NODES BACKEND=NEMESES...
#
# Each run's stderr is appended to STORE/stderr.log; for a run that is
# not valid it is also printed, with the end of every node's log, so
# that a CI log says why. A run whose cluster never started (no fault
# injected, no verdict) is tried once more, and its row says so; any
# other failure, and an invalid or unknown verdict, is never retried.
set -uo pipefail
bin=$1 store=$2 limit=$3 interval=$4 nodes=$5
shift 5
workloads=${WORKLOADS:-counter set register durability convergence}
rows=() worst=0

# show_failure prints the run's stderr and the end of every node log
# written since the run began.
show_failure() {
  tail -n 40 "$errf"
  for log in $(find "$store" -path '*/logs/*.log' -newer "$mark" 2>/dev/null); do
    echo "== $log (last 25 lines):"
    tail -n 25 "$log"
  done
}

errf=$(mktemp) mark=$(mktemp)
trap 'rm -f "$errf" "$mark"' EXIT
mkdir -p "$store"
for spec in "$@"; do
  backend=${spec%%=*} nemeses=${spec#*=}
  for w in $workloads; do
    echo "== jepsen: $w on $backend, nemeses $nemeses, $limit"
    start=$(date +%s)
    touch "$mark"
    note=""
    for attempt in 1 2; do
      "$bin" jepsen --backend "$backend" --workload "$w" --nemesis "$nemeses" \
        --time-limit "$limit" --interval "$interval" --nodes "$nodes" --store "$store" 2>"$errf"
      rc=$?
      cat "$errf" >>"$store/stderr.log"
      # A run that could not happen (the cluster did not start, ...) has
      # no verdict: it is tried once more, and the table says so.
      if [ "$rc" -eq 2 ] && [ "$attempt" -eq 1 ] && grep -q 'the cluster did not start' "$errf"; then
        echo "== jepsen: $w on $backend: the cluster did not start; trying once more. Its stderr (last 40 lines):"
        show_failure
        touch "$mark"
        note=" (run again: the first cluster did not start)"
        continue
      fi
      break
    done
    took=$(( $(date +%s) - start ))
    case $rc in
      0) verdict=valid ;;
      1) verdict=INVALID; worst=1 ;;
      *) verdict=UNKNOWN; [ $worst -eq 0 ] && worst=2 ;;
    esac
    if [ "$rc" -ne 0 ]; then
      echo "== jepsen: $w on $backend: exit $rc; its stderr (last 40 lines):"
      show_failure
    fi
    rows+=("$(printf '%-12s %-7s %-8s %4ss  %s%s' "$w" "$backend" "$verdict" "$took" "$nemeses" "$note")")
  done
done
echo
echo "== jepsen verdicts (reports: $store/<test>/latest/index.html)"
printf '%-12s %-7s %-8s %5s  %s\n' workload backend verdict time nemeses
printf '%s\n' "${rows[@]}"
exit $worst

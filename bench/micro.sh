#!/usr/bin/env bash
# Runs the crdt and deltas micro-benchmarks 6 times each and records the medians
# (benchstat, pinned) in bench/results/micro.md, with the raw output in
# bench/results/micro.txt.
set -euo pipefail
cd "$(dirname "$0")/.."
BENCHSTAT=golang.org/x/perf/cmd/benchstat@v0.0.0-20260908200009-22c9c6c9d4da
GOBIN=$(go env GOPATH)/bin
test -x "$GOBIN/benchstat" || go install "$BENCHSTAT"
mkdir -p bench/results
echo "running crdt and deltas micro-benchmarks (6 runs each, about two minutes)..." >&2
go test -run '^$' -bench . -benchmem -count 6 ./crdt/ ./deltas/ | tee bench/results/micro.txt >&2
{
  echo "# crdt and deltas micro-benchmarks"
  echo
  echo "- Command: \`make bench-micro\` (\`go test -run '^\$' -bench . -benchmem -count 6 ./crdt/ ./deltas/\`, medians by benchstat)"
  echo "- Machine: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(nproc) cores, $(go version | cut -d' ' -f3-)"
  echo "- Date: $(date -u +%Y-%m-%d)"
  echo "- Raw output: micro.txt. wire-B/op: bytes of the encoded delta; extract-B / group-B: encoded size of the extracted part / of the whole delta-group."
  echo
  echo '```'
  "$GOBIN/benchstat" bench/results/micro.txt
  echo '```'
} > bench/results/micro.md
echo "wrote bench/results/micro.md" >&2

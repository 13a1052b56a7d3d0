# statemesh: build, test, verify, benchmark.
#
# Tools are pinned here and installed with `go install` into $(GOBIN); the
# protobuf compiler comes from Debian's protobuf-compiler (make tools-apt).

GO            ?= go
GOBIN         ?= $(shell $(GO) env GOPATH)/bin
STATICCHECK   := honnef.co/go/tools/cmd/staticcheck@v0.8.2
PROTOC_GEN_GO := google.golang.org/protobuf/cmd/protoc-gen-go@v1.36.12
PROTOC_GEN_GO_GRPC := google.golang.org/grpc/cmd/protoc-gen-go-grpc@v1.6.2
# protocol/third_party holds other projects' .proto files that protoc reads
# (google/api for the examples' annotations) but whose Go code is theirs.
PROTOS        := $(shell find protocol -name '*.proto' -not -path 'protocol/third_party/*')
# Pure packages (no I/O, no goroutines) and the concurrent ones whose
# tests are quick: always run with -race.
RACE_PKGS     := ./crdt/... ./deltas/... ./internal/... ./eventlog/... ./mesh/... ./consensus/... ./sdk/... ./proxy/... ./tck/...
# An execution count, not a duration: on Go 1.26 a duration-based
# -fuzztime can fail spuriously with "context deadline exceeded" when it
# expires while a worker is busy (go.dev/issue/75804, fixed in Go 1.27).
FUZZTIME      ?= 30000x

.PHONY: jepsen jepsen-ci tools-netns tck
.PHONY: all build test test-race fuzz verify bench bench-sync bench-micro bench-convergence bench-mesh bench-consensus bench-proxy bench-startup proto examples-proto tools tools-apt tools-etcd tools-redis demo clean

all: build

build:
	$(GO) build -o bin/statemesh ./cmd/statemesh

## test: every unit test (short sim runs of every jepsen workload among
## them); then again under the race detector where quick; then the
## deliberately broken build the jepsen checkers must catch.
## The jepsen package's sim runs go last and alone: their heavy loopback
## traffic takes ephemeral ports, which races the tests that pick a "free"
## port and bind it a moment later.
test:
	$(GO) test -count=1 $$($(GO) list ./... | grep -v '/jepsen$$')
	$(GO) test -count=1 -race $(RACE_PKGS)
	$(GO) test -count=1 ./jepsen/
	$(GO) test -count=1 -tags jepsen_broken_ack -run '^TestBroken' ./jepsen/

## fuzz: a short run of every decoder's and peer handler's fuzz target.
fuzz:
	$(GO) test -run='^$$' -fuzz='^FuzzDecode$$' -fuzztime=$(FUZZTIME) ./crdt/
	$(GO) test -run='^$$' -fuzz='^FuzzDecodeMessage$$' -fuzztime=$(FUZZTIME) ./deltas/
	$(GO) test -run='^$$' -fuzz='^FuzzDecodeIdentity$$' -fuzztime=$(FUZZTIME) ./eventlog/
	$(GO) test -run='^$$' -fuzz='^FuzzDecodeJournalRecords$$' -fuzztime=$(FUZZTIME) ./eventlog/
	$(GO) test -run='^$$' -fuzz='^FuzzShardRestore$$' -fuzztime=$(FUZZTIME) ./eventlog/
	$(GO) test -run='^$$' -fuzz='^FuzzStateMachineEntry$$' -fuzztime=$(FUZZTIME) ./consensus/
	$(GO) test -run='^$$' -fuzz='^FuzzStreams$$' -fuzztime=$(FUZZTIME) ./sdk/
	$(GO) test -run='^$$' -fuzz='^FuzzPeerSync$$' -fuzztime=$(FUZZTIME) ./mesh/
	$(GO) test -run='^$$' -fuzz='^FuzzPeerWrite$$' -fuzztime=$(FUZZTIME) ./mesh/

## verify: formatting, vet, staticcheck, tidy go.mod, generated code current.
verify: tools
	@out=$$(gofmt -l $$(find . -name '*.go' -not -path './.git/*')); \
	  if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	$(GOBIN)/staticcheck ./...
	@cp go.mod /tmp/statemesh.go.mod.bak; cp go.sum /tmp/statemesh.go.sum.bak; \
	  $(GO) mod tidy; \
	  if ! diff -q go.mod /tmp/statemesh.go.mod.bak >/dev/null || ! diff -q go.sum /tmp/statemesh.go.sum.bak >/dev/null; then \
	    echo "go.mod/go.sum not tidy (run go mod tidy)"; cp /tmp/statemesh.go.mod.bak go.mod; cp /tmp/statemesh.go.sum.bak go.sum; exit 1; fi

tools:
	@test -x $(GOBIN)/staticcheck || $(GO) install $(STATICCHECK)
	@test -x $(GOBIN)/protoc-gen-go || $(GO) install $(PROTOC_GEN_GO)
	@test -x $(GOBIN)/protoc-gen-go-grpc || $(GO) install $(PROTOC_GEN_GO_GRPC)

tools-apt:
	@command -v protoc >/dev/null || (apt-get update -qq && apt-get install -y -qq protobuf-compiler)

# etcd is the baseline of bench-consensus only (Debian's etcd-server, 3.4):
# not needed by make test nor CI.
tools-etcd:
	@command -v etcd >/dev/null || (apt-get update -qq && apt-get install -y -qq etcd-server)

# redis-server is the baseline of bench-proxy only (Debian's redis-server;
# the benchmark starts its own on loopback, not the system service): not
# needed by make test nor CI.
tools-redis:
	@command -v redis-server >/dev/null || (apt-get update -qq && apt-get install -y -qq redis-server)

## proto: regenerate the committed Go code from protocol/*.proto.
proto: tools tools-apt
	$(GO) install $(PROTOC_GEN_GO)
	$(GO) install $(PROTOC_GEN_GO_GRPC)
	PATH=$(GOBIN):$$PATH protoc -I protocol --go_out=. --go_opt=module=github.com/statemesh/statemesh \
	  --go-grpc_out=. --go-grpc_opt=module=github.com/statemesh/statemesh $(PROTOS)

EXAMPLE_PROTOS := $(shell find examples -name '*.proto')

## examples-proto: regenerate the examples' Go code (their .proto files
## import statemesh/entity_key.proto from protocol/ and
## google/api/annotations.proto from protocol/third_party/, whose Go code is
## genproto's).
examples-proto: tools tools-apt
	$(GO) install $(PROTOC_GEN_GO)
	$(GO) install $(PROTOC_GEN_GO_GRPC)
	PATH=$(GOBIN):$$PATH protoc -I protocol -I protocol/third_party -I examples --go_out=. --go_opt=module=github.com/statemesh/statemesh \
	  --go-grpc_out=. --go-grpc_opt=module=github.com/statemesh/statemesh $(EXAMPLE_PROTOS)

## bench: every benchmark; results land in bench/results/.
bench: bench-sync bench-micro bench-convergence bench-mesh bench-consensus bench-proxy bench-startup

bench-sync: build
	./bin/statemesh bench sync

bench-micro:
	./bench/micro.sh

bench-convergence: build
	./bin/statemesh bench convergence

bench-mesh: build
	./bin/statemesh bench mesh

bench-consensus: build tools-etcd
	./bin/statemesh bench consensus

bench-proxy: build tools-redis
	./bin/statemesh bench proxy

bench-startup: build
	./bin/statemesh bench startup

## tck: the SDK conformance suite, verbose; against another language's
## function with TCK_FUNCTION=HOST:PORT (tck/README.md). make test runs it
## against the Go SDK.
tck:
	$(GO) test -count=1 -v -run 'TestTCK$$' ./tck/ $(if $(TCK_FUNCTION),-tck.function=$(TCK_FUNCTION))

# The jepsen harness's netns backend: network namespaces (iproute2) and
# partitions (iptables inside them).
tools-netns:
	@command -v ip >/dev/null && command -v iptables >/dev/null || \
	  (apt-get update -qq && apt-get install -y -qq iproute2 iptables)

JEPSEN_STORE ?= store

## jepsen-ci: short runs of every workload under every nemesis each
## backend supports: in one process (sim), on real processes on loopback
## (local) and in network namespaces (netns); each run 10-20 s of faults,
## the whole target about 6 minutes.
jepsen-ci: build tools-netns
	@mkdir -p $(JEPSEN_STORE)
	./jepsen/scripts/suite.sh ./bin/statemesh $(JEPSEN_STORE) 24s 1s 3 \
	  sim=all netns=all
	./jepsen/scripts/suite.sh ./bin/statemesh $(JEPSEN_STORE) 10s 1.2s 3 local=all

## jepsen: the long suite, every nemesis each backend supports, 5 nodes.
jepsen: build tools-netns
	@mkdir -p $(JEPSEN_STORE)
	./jepsen/scripts/suite.sh ./bin/statemesh $(JEPSEN_STORE) 120s 5s 5 sim=all local=all netns=all

## demo: the example functions and a local 3-node mesh, until Ctrl-C.
demo: build
	./bin/statemesh demo

clean:
	rm -rf bin

// Package proxybench is `statemesh bench proxy` and `statemesh bench
// startup`: the request path through a node's proxy to a user function,
// measured against Redis, and a node's cold start.
//
// The proxy benchmark runs a 3-node mesh with the example functions
// (examples/counter, examples/register) in this process, as `statemesh
// demo` does (StartMesh), and drives it with consensusbench's closed-loop
// load generator: each Target is one request, acknowledged. Counter
// increments with LOCAL consistency go through the nodes' gRPC and
// HTTP/JSON endpoints; the baseline is a redis-server child process
// doing INCR on the same keys, spoken to in RESP by hand (resp.go), so no
// Redis client becomes a dependency. The register's Set (event-sourced,
// through Raft) is measured alone, with no baseline.
//
// Two reference systems (Floor) measure gRPC alone on the same machine
// in the same run: a bare Counter server (one hop), and a bare relay to
// a bare function server (two hops, as the proxy's path). They are the
// floor under statemesh-grpc's cost, and show how much of the gap to
// Redis is the transport the product is built on.
//
// The startup benchmark (Startup) times `statemesh node` child processes
// from exec to their first successful Increment through the proxy.
package proxybench

// System names of the proxy benchmark.
const (
	SystemGRPC     = "statemesh-grpc"
	SystemHTTP     = "statemesh-http"
	SystemRedis    = "redis"
	SystemRegister = "register-grpc"
	SystemCart     = "cart-grpc"
	// The floors (floor.go): gRPC alone, one hop and two.
	SystemEcho  = "grpc-echo"
	SystemRelay = "grpc-relay"
)

// Method paths of the example functions, as the proxy serves them over
// gRPC and, as POST routes, over HTTP/JSON.
const (
	MethodIncrement   = "/statemesh.examples.counter.Counter/Increment"
	MethodRegisterSet = "/statemesh.examples.register.Register/Set"
	MethodCartAdd     = "/statemesh.examples.cart.Cart/AddItem"
)

// TargetRatio is the target: statemesh through gRPC does at least this
// fraction of Redis's INCR throughput.
const TargetRatio = 1.0 / 3

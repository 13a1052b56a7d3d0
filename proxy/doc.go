// Package proxy is statemesh's sidecar: it discovers the user function's
// services and entities, serves those services to the outside over gRPC
// and HTTP/JSON, and routes every call to the entity's model.
//
// # Lifecycle
//
// New dials the function and calls Discovery.Discover with this proxy's
// protocol version and models, retrying with backoff until the function
// answers or the context ends (the function may start after its
// sidecar). It refuses a function of another major protocol version and
// an invalid spec (ErrVersion, ErrSpec, naming the service), and reports
// the reason to the function (Discovery.ReportError). The spec's
// FileDescriptorSet is built with protodesc.NewFiles, outside the global
// registry; every entity's service must be in it, and every method of an
// event-sourced, value or CRDT entity must take an input with exactly one
// (statemesh.entity_key) field.
//
// The consensus Host needs the proxy's handlers before it starts, and the
// handlers need the spec, so node wires the three in this order:
//
//	p, _ := proxy.New(ctx, cfg)                   // discovery
//	ccfg.Handlers = p.Handlers()                  // one per event-sourced entity type
//	host, _ := consensus.Start(ctx, ccfg)
//	p.SetBackends(host, meshNode)
//	p.Start(grpcListener, httpListener)
//	defer p.Close()
//
// # Serving
//
// The external gRPC server has no registered user services: a
// grpc.UnknownServiceHandler decodes each request with dynamicpb as the
// method's input type, and the standard health service and server
// reflection (v1 and v1alpha, over the discovered files) sit beside it.
// The HTTP/JSON side is connectrpc.com/vanguard: REST routes from the
// methods' google.api.http annotations, and POST /{package.Service}/{Method}
// with a JSON body for every unary method (the Connect protocol's unary
// form; a plain JSON POST is accepted as such). Vanguard transcodes both
// to gRPC and calls the gRPC server in-process, so one code path serves
// every protocol. Bodies are limited to Config.MaxRequestBytes;
// malformed JSON is 400, an unknown route 404.
//
// Server-streaming methods of CRDT entities (streamed commands, such as
// the sets example's Watch) and of actions are served over gRPC as server
// streams, and over HTTP as server-sent events (sse.go): Content-Type
// text/event-stream, each message one "data: <JSON>\n\n" event, flushed,
// on the paths of their google.api.http bindings (templates of literal
// and {field} segments, the fields bound into the request; GET query
// parameters bind top-level fields) and at the POST fallback with a plain
// JSON body. Those requests are matched before vanguard, which cannot
// stream REST (it answers 415 for a server stream that is not
// google.api.HttpBody). An error before the first event is an ordinary
// JSON error; after it, an "event: error" ends the stream.
// Client-streaming and bidirectional methods of actions are served over
// gRPC only: over HTTP, whatever the request's form, they are 501
// (ErrNotSupported; vanguard alone would answer 415 or fail obscurely).
// Other streaming methods are Unimplemented.
//
// # Routing
//
//   - Actions: ActionProtocol.HandleUnary; server-streaming methods
//     ActionProtocol.HandleStreamedOut, each ActionResponse one message to
//     the caller (forwards followed, side effects run as for a unary
//     reply; a response with no reply only runs its side effects), a
//     Failure ending the call with its code. A streamed action has no
//     CommandTimeout: it ends when the function ends it, the caller goes
//     away or the proxy closes.
//     Client-streaming methods use ActionProtocol.HandleStreamedIn and
//     bidirectional ones HandleStreamed (action_streamed.go): a first
//     message naming the method, with the metadata, then one message per
//     caller message, relayed one at a time (gRPC flow control bounds
//     what is in flight); the response, or each one, is handled as above.
//     Either side ending, failing or going away ends the other's call.
//   - Event-sourced entities: consensus.Host.Command with the entity
//     (persistence id, entity id). On the shard leader the Host calls the
//     proxy's Handler, which runs the command on the entity's
//     EventSourced.Handle stream: opened on first use with the snapshot
//     and events of the Command's state, reused while the state the Host
//     passes is the one the stream has seen (same sequence number, and the
//     events the stream last emitted are the ones persisted), reopened
//     otherwise, and closed after the entity's passivation timeout. The
//     reply's events and snapshot go into the Effect; its client action
//     and side effects are the Effect's reply.
//   - Value entities: read the value (linearizably), bring the entity's
//     ValueEntity.Handle stream to its version, run the command, and write
//     the reply's state action with the version read; a conflict re-runs
//     the command on the new state (Config.ValueRetries times).
//   - CRDT entities: served from this node's replica (the mesh store).
//     Read the local state; if it is not what the entity's Crdt.Handle
//     stream last saw, send the difference as a `changed` delta (or,
//     when no delta can say it, reopen the stream with the state); run
//     the command; apply the reply's delta through the CRDT's delta
//     mutators in a mesh.Mutator (this node's replica id, its HLC for LWW
//     registers) with the reply's write consistency, or delete. What the
//     function last saw is the state it was given plus its own reply's
//     delta, so that delta is never sent back to it (if the replica pruned
//     a removed replica in between, the delta was made on differently
//     marked state and that sum would be wrong: the stream is reopened
//     with the state for the next command instead). GCounter, PNCounter,
//     GSet, ORSet, LWWRegister, the enable-wins flag, Vote and ORMap are
//     routed. An ORMap's values may be ORSets, flags and ORMaps (the
//     causal types the mesh's map nests); other values are refused
//     (Unimplemented). See crdt_map.go for how keys and types map.
//   - Streamed CRDT commands: the Command has streamed set; a reply with
//     streamed set keeps the call open (its client action, if any, is
//     the first message), and every CrdtStreamedMessage for the command
//     id is forwarded until end_stream. One goroutine per entity stream
//     receives the function's messages and hands each to its command
//     (a client more than 64 messages behind is dropped with
//     ResourceExhausted). From the first streamed command on, the proxy
//     watches the key (CRDTStore.Watch) and pushes each newly merged
//     state (other nodes' writes, other commands) as a `changed` delta,
//     so the SDK's OnChange fires; the stream is not passivated while a
//     streamed command is open. When the client goes away the function
//     gets a StreamCancelled, and its CrdtStreamCancelledResponse's state
//     action and side effects are applied. A deleted entity ends its
//     streamed commands normally; a failed entity stream ends them with
//     Unavailable (the client may call again), as does a unary command
//     on the same entity that gives up (its context ended) and so
//     closes the stream.
//
// A reply is checked against the method's output type; a Forward is
// dispatched in-process to the named method (whose output type must be
// the caller's); side effects run after the reply is decided, synchronous
// ones before it is released (their failure fails the call), the others
// in the background. Chains of forwards and side effects are bounded by
// Config.MaxForwardDepth.
//
// # Errors
//
// errors.go holds the one table from consensus, mesh and proxy errors to
// gRPC codes and HTTP statuses. A function's Failure keeps its own gRPC
// code and message, also through consensus (a *consensus.Rejection carries
// them, across nodes too). A misbehaving function
// (bytes that do not decode, a reply of the wrong type, a dropped
// stream) fails the command with Internal, persists nothing, and closes
// the entity's stream; the proxy goes on.
package proxy

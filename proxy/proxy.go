package proxy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"runtime"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/encoding"
	_ "google.golang.org/grpc/encoding/proto" // registers the codec frameCodec wraps
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/mem"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/reflection"
	reflectionv1 "google.golang.org/grpc/reflection/grpc_reflection_v1"
	reflectionv1alpha "google.golang.org/grpc/reflection/grpc_reflection_v1alpha"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/types/dynamicpb"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/statemesh/statemesh/consensus"
	"github.com/statemesh/statemesh/protocol/functionpb"
)

// Proxy is one sidecar: it knows the function's spec and serves its
// services to the outside over gRPC and HTTP/JSON.
type Proxy struct {
	cfg    Config
	conn   *grpc.ClientConn
	model  *model
	action functionpb.ActionProtocolClient
	esFn   functionpb.EventSourcedClient
	valFn  functionpb.ValueEntityClient
	crdtFn functionpb.CrdtClient

	grpcSrv *grpc.Server
	health  *health.Server
	httpH   http.Handler

	es     *registry[*esStream]
	values *registry[*valueStream]
	crdts  *registry[*crdtStream]

	// ctx owns everything that outlives one request: entity streams and
	// asynchronous side effects. Close cancels it.
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup // asynchronous side effects and servers

	mu struct {
		sync.Mutex
		consensus ESHost
		mesh      CRDTStore
		started   bool
		closed    bool
		httpSrv   *http.Server
		grpcAddr  net.Addr
		httpAddr  net.Addr
	}
}

// New dials the function, discovers its spec (retrying until the function
// answers or ctx ends) and builds the servers. It serves nothing until
// Start. Config.Consensus and Config.Mesh may be nil here and be given
// with SetBackends before Start: node starts its consensus Host with
// Handlers, which needs the spec.
func New(ctx context.Context, cfg Config) (*Proxy, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	opts := cfg.DialOptions
	if len(opts) == 0 {
		opts = []grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}
	}
	opts = append(opts, grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(cfg.MaxRequestBytes), grpc.MaxCallSendMsgSize(cfg.MaxRequestBytes)))
	conn, err := grpc.NewClient(cfg.FunctionAddr, opts...)
	if err != nil {
		return nil, fmt.Errorf("proxy: dialing the function at %s: %w", cfg.FunctionAddr, err)
	}
	spec, err := discover(ctx, cfg, functionpb.NewDiscoveryClient(conn))
	if err != nil {
		conn.Close()
		return nil, err
	}
	m, err := buildModel(spec, cfg.PassivationTimeout)
	if err != nil {
		// Tell the function why, where its developer looks (best effort).
		rctx, cancel := context.WithTimeout(ctx, cfg.DiscoveryTimeout)
		_, _ = functionpb.NewDiscoveryClient(conn).ReportError(rctx, &functionpb.UserFunctionError{Message: err.Error()})
		cancel()
		conn.Close()
		return nil, err
	}
	p := &Proxy{cfg: cfg, conn: conn, model: m,
		action: functionpb.NewActionProtocolClient(conn),
		esFn:   functionpb.NewEventSourcedClient(conn),
		valFn:  functionpb.NewValueEntityClient(conn),
		crdtFn: functionpb.NewCrdtClient(conn),
	}
	p.ctx, p.cancel = context.WithCancel(context.Background())
	p.es = newRegistry[*esStream]()
	p.values = newRegistry[*valueStream]()
	p.crdts = newRegistry[*crdtStream]()
	p.mu.consensus, p.mu.mesh = cfg.Consensus, cfg.Mesh
	p.grpcSrv = grpc.NewServer(
		grpc.UnknownServiceHandler(p.handleGRPC),
		grpc.ForceServerCodecV2(frameCodec{encoding.GetCodecV2(protoCodecName)}),
		grpc.MaxRecvMsgSize(cfg.MaxRequestBytes),
		grpc.MaxSendMsgSize(cfg.MaxRequestBytes),
		// Every client call is an RPC of its own: a fixed set of
		// workers runs them instead of a new goroutine (and stack) per
		// call. gRPC marks the option experimental; it changes no
		// behaviour, and a busy worker set falls back to goroutines.
		grpc.NumStreamWorkers(uint32(runtime.GOMAXPROCS(0))),
	)
	p.health = health.NewServer()
	healthpb.RegisterHealthServer(p.grpcSrv, p.health)
	for _, s := range m.order {
		p.health.SetServingStatus(string(s.desc.FullName()), healthpb.HealthCheckResponse_SERVING)
	}
	ropts := reflection.ServerOptions{Services: p, DescriptorResolver: resolver{m.files}, ExtensionResolver: extResolver{m.types}}
	reflectionv1.RegisterServerReflectionServer(p.grpcSrv, reflection.NewServerV1(ropts))
	reflectionv1alpha.RegisterServerReflectionServer(p.grpcSrv, reflection.NewServer(ropts))
	if p.httpH, err = p.newHTTPHandler(); err != nil {
		p.cancel()
		conn.Close()
		return nil, err
	}
	cfg.Logger.Info("proxy: discovered the function", "function", cfg.FunctionAddr, "services", len(m.order),
		"runtime", spec.GetServiceInfo().GetServiceRuntime(), "library", spec.GetServiceInfo().GetSupportLibraryName())
	return p, nil
}

// Handlers returns a consensus handler for every event-sourced entity type
// (persistence id) of the spec, for consensus.Config.Handlers.
func (p *Proxy) Handlers() map[string]consensus.Handler {
	out := map[string]consensus.Handler{}
	for _, s := range p.model.order {
		if s.model == functionpb.Model_MODEL_EVENT_SOURCED {
			out[s.persistenceID] = esHandler{p: p, entityType: s.persistenceID}
		}
	}
	return out
}

// SetBackends gives the proxy its consensus Host and mesh store when they
// were not in Config (nil leaves one as it is). Call it before Start.
func (p *Proxy) SetBackends(es ESHost, crdts CRDTStore) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if es != nil {
		p.mu.consensus = es
	}
	if crdts != nil {
		p.mu.mesh = crdts
	}
}

// Start serves the external gRPC API on grpcLis and the HTTP/JSON API on
// httpLis (either may be nil) until Close. It refuses to start while a
// backend the spec needs is missing.
func (p *Proxy) Start(grpcLis, httpLis net.Listener) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	switch {
	case p.mu.closed:
		return ErrClosed
	case p.mu.started:
		return errors.New("proxy: already started")
	}
	for _, s := range p.model.order {
		switch s.model {
		case functionpb.Model_MODEL_EVENT_SOURCED, functionpb.Model_MODEL_VALUE:
			if p.mu.consensus == nil {
				return fmt.Errorf("proxy: service %s needs Config.Consensus", s.desc.FullName())
			}
		case functionpb.Model_MODEL_CRDT:
			if p.mu.mesh == nil {
				return fmt.Errorf("proxy: service %s needs Config.Mesh", s.desc.FullName())
			}
		}
	}
	p.mu.started = true
	if grpcLis != nil {
		p.mu.grpcAddr = grpcLis.Addr()
		p.wg.Go(func() {
			if err := p.grpcSrv.Serve(grpcLis); err != nil {
				p.cfg.Logger.Error("proxy: gRPC server stopped", "err", err)
			}
		})
	}
	if httpLis != nil {
		p.mu.httpAddr = httpLis.Addr()
		srv := &http.Server{Handler: p.httpH, ReadHeaderTimeout: 10 * time.Second}
		p.mu.httpSrv = srv
		p.wg.Go(func() {
			if err := srv.Serve(httpLis); err != nil && !errors.Is(err, http.ErrServerClosed) {
				p.cfg.Logger.Error("proxy: HTTP server stopped", "err", err)
			}
		})
	}
	return nil
}

// GRPCAddr and HTTPAddr return where Start serves (nil if not serving).
func (p *Proxy) GRPCAddr() net.Addr {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.mu.grpcAddr
}

// HTTPAddr: see GRPCAddr.
func (p *Proxy) HTTPAddr() net.Addr {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.mu.httpAddr
}

// GRPCServer is the external gRPC server (for callers that serve it
// themselves); HTTPHandler is the HTTP/JSON handler.
func (p *Proxy) GRPCServer() *grpc.Server { return p.grpcSrv }

// HTTPHandler: see GRPCServer.
func (p *Proxy) HTTPHandler() http.Handler { return p.httpH }

// Close stops the servers, closes every entity stream and the connection
// to the function, and waits for asynchronous side effects.
func (p *Proxy) Close() error {
	p.mu.Lock()
	if p.mu.closed {
		p.mu.Unlock()
		return nil
	}
	p.mu.closed = true
	httpSrv := p.mu.httpSrv
	p.mu.Unlock()
	p.health.Shutdown()
	p.cancel()
	if httpSrv != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		_ = httpSrv.Shutdown(ctx)
		cancel()
		_ = httpSrv.Close()
	}
	p.grpcSrv.Stop()
	p.es.closeAll()
	p.values.closeAll()
	p.crdts.closeAll()
	p.wg.Wait()
	return p.conn.Close()
}

func (p *Proxy) backends() (ESHost, CRDTStore) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.mu.consensus, p.mu.mesh
}

// GetServiceInfo lists the served services, discovered ones included,
// for server reflection.
func (p *Proxy) GetServiceInfo() map[string]grpc.ServiceInfo {
	out := p.grpcSrv.GetServiceInfo()
	for _, s := range p.model.order {
		var info grpc.ServiceInfo
		mds := s.desc.Methods()
		for i := range mds.Len() {
			md := mds.Get(i)
			info.Methods = append(info.Methods, grpc.MethodInfo{Name: string(md.Name()),
				IsClientStream: md.IsStreamingClient(), IsServerStream: md.IsStreamingServer()})
		}
		out[string(s.desc.FullName())] = info
	}
	return out
}

// resolver finds descriptors in the discovered files, then in the
// binary's own (health, reflection).
type resolver struct{ files *protoregistry.Files }

func (r resolver) FindFileByPath(path string) (protoreflect.FileDescriptor, error) {
	if fd, err := r.files.FindFileByPath(path); err == nil {
		return fd, nil
	}
	return protoregistry.GlobalFiles.FindFileByPath(path)
}

func (r resolver) FindDescriptorByName(name protoreflect.FullName) (protoreflect.Descriptor, error) {
	if d, err := r.files.FindDescriptorByName(name); err == nil {
		return d, nil
	}
	return protoregistry.GlobalFiles.FindDescriptorByName(name)
}

// extResolver adds RangeExtensionsByMessage (over the binary's types) to
// the discovered types, as the reflection server wants.
type extResolver struct{ *dynamicpb.Types }

func (extResolver) RangeExtensionsByMessage(message protoreflect.FullName, f func(protoreflect.ExtensionType) bool) {
	protoregistry.GlobalTypes.RangeExtensionsByMessage(message, f)
}

// lookup finds the method of a gRPC path "/pkg.Service/Method".
func (p *Proxy) lookup(fullMethod string) *method {
	svc, name, ok := strings.Cut(strings.TrimPrefix(fullMethod, "/"), "/")
	if !ok {
		return nil
	}
	return p.method(svc, name)
}

func (p *Proxy) method(svc, name string) *method {
	s := p.model.services[protoreflect.FullName(svc)]
	if s == nil {
		return nil
	}
	return s.methods[name]
}

// handleGRPC serves every discovered method (grpc.UnknownServiceHandler).
func (p *Proxy) handleGRPC(_ any, ss grpc.ServerStream) error {
	full, _ := grpc.MethodFromServerStream(ss)
	m := p.lookup(full)
	if m == nil {
		return status.Errorf(codes.Unimplemented, "unknown service or method %s", full)
	}
	if clientStreamedAction(m) {
		if err := p.streamInAction(ss, m); err != nil {
			return p.callStatus("proxy: streamed command failed", full, err).Err()
		}
		return nil
	}
	streamed := streamedMethod(m)
	if (m.desc.IsStreamingClient() || m.desc.IsStreamingServer()) && !streamed {
		return status.Errorf(codes.Unimplemented, "streaming method %s is not supported (only server-streaming methods of CRDT entities, and streaming methods of actions, are)", full)
	}
	// Receive the bytes and decode them here, so that a malformed
	// request is the client's error (InvalidArgument), not Internal.
	var f rawFrame
	if err := ss.RecvMsg(&f); err != nil {
		return err
	}
	in := dynamicpb.NewMessage(m.desc.Input())
	if err := (proto.UnmarshalOptions{Resolver: p.model.types}).Unmarshal(f.b, in); err != nil {
		return status.Errorf(codes.InvalidArgument, "decoding %s: %v", m.desc.Input().FullName(), err)
	}
	ctx := ss.Context()
	if streamed {
		err := p.stream(ctx, m, in, incomingMetadata(ctx), func(out proto.Message) error { return ss.SendMsg(out) })
		if err != nil {
			return p.callStatus("proxy: streamed command failed", full, err).Err()
		}
		return nil
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, p.cfg.CommandTimeout)
		defer cancel()
	}
	out, err := p.invoke(ctx, m, in, incomingMetadata(ctx), 0)
	if err != nil {
		return p.callStatus("proxy: command failed", full, err).Err()
	}
	return ss.SendMsg(out)
}

// callStatus is the status a call of method that failed with err ends
// with; errors that are the proxy's or the function's fault (Internal,
// Unknown) are logged with msg.
func (p *Proxy) callStatus(msg, method string, err error) *status.Status {
	st := toStatus(err)
	if st.Code() == codes.Internal || st.Code() == codes.Unknown {
		p.cfg.Logger.Warn(msg, "method", method, "err", err)
	}
	return st
}

// incomingMetadata flattens a gRPC call's metadata for the function.
func incomingMetadata(ctx context.Context) map[string]string {
	md, _ := metadata.FromIncomingContext(ctx)
	return flattenMetadata(md)
}

// flattenMetadata keeps the first value of each key of gRPC metadata or
// HTTP headers, lower-cased, leaving out transport and protocol headers
// (pseudo-headers, grpc-*, connect-*, binary -bin values, content and
// connection headers).
func flattenMetadata(md map[string][]string) map[string]string {
	out := map[string]string{}
	for k, vs := range md {
		k = strings.ToLower(k)
		if len(vs) == 0 || strings.HasPrefix(k, ":") || strings.HasPrefix(k, "grpc-") ||
			strings.HasPrefix(k, "connect-") || strings.HasSuffix(k, "-bin") {
			continue
		}
		switch k {
		case "content-type", "content-length", "content-encoding", "user-agent", "te", "authority",
			"accept", "accept-encoding", "connection", "host":
			continue
		}
		out[k] = vs[0]
	}
	return out
}

// invoke runs one call of m with its decoded input and returns the
// output. depth counts forwards and side effects.
func (p *Proxy) invoke(ctx context.Context, m *method, in proto.Message, meta map[string]string, depth int) (proto.Message, error) {
	env, err := actionCommand(m, in, meta)
	if err != nil {
		return nil, err
	}
	var (
		ca      *functionpb.ClientAction
		effects []*functionpb.SideEffect
	)
	switch m.svc.model {
	case functionpb.Model_MODEL_ACTION:
		ca, effects, err = p.runAction(ctx, env)
	case functionpb.Model_MODEL_EVENT_SOURCED, functionpb.Model_MODEL_VALUE:
		id, kerr := entityID(m.key, in.ProtoReflect())
		if kerr != nil {
			return nil, kerr
		}
		host, _ := p.backends()
		if host == nil {
			return nil, fmt.Errorf("%w: no consensus host", ErrNotSupported)
		}
		if m.svc.model == functionpb.Model_MODEL_VALUE {
			ca, effects, err = p.runValue(ctx, host, m, id, env)
		} else {
			ca, effects, err = p.runEventSourced(ctx, host, m, id, env)
		}
	case functionpb.Model_MODEL_CRDT:
		id, kerr := entityID(m.key, in.ProtoReflect())
		if kerr != nil {
			return nil, kerr
		}
		_, store := p.backends()
		if store == nil {
			return nil, fmt.Errorf("%w: no CRDT store", ErrNotSupported)
		}
		ca, effects, err = p.runCRDT(ctx, store, m, id, env)
	default:
		return nil, fmt.Errorf("%w: %v entities (service %s) are not routed", ErrNotSupported, m.svc.model, m.svc.desc.FullName())
	}
	if err != nil {
		return nil, err
	}
	return p.finish(ctx, m, ca, effects, meta, depth)
}

// actionCommand is the command to the function that calls m with in.
func actionCommand(m *method, in proto.Message, meta map[string]string) (*functionpb.ActionCommand, error) {
	payload, err := anypb.New(in)
	if err != nil {
		return nil, fmt.Errorf("%w: encoding the request: %v", ErrBadRequest, err)
	}
	return &functionpb.ActionCommand{ServiceName: string(m.svc.desc.FullName()), Name: string(m.desc.Name()),
		Payload: payload, Metadata: meta}, nil
}

// finish turns a ClientAction into the method's output, following a
// forward, then runs the side effects: synchronous ones before the reply
// is released (their failure fails the call), asynchronous ones after, in
// the background.
func (p *Proxy) finish(ctx context.Context, m *method, ca *functionpb.ClientAction, effects []*functionpb.SideEffect, meta map[string]string, depth int) (proto.Message, error) {
	var out proto.Message
	switch a := ca.GetAction().(type) {
	case nil:
		out = dynamicpb.NewMessage(m.desc.Output())
	case *functionpb.ClientAction_Reply:
		msg, err := p.decodeAny(m.desc.Output(), a.Reply.GetPayload())
		if err != nil {
			return nil, fmt.Errorf("%w: reply of %s: %v", ErrFunction, m.fullMethod(), err)
		}
		out = msg
	case *functionpb.ClientAction_Failure:
		return nil, &failureError{code: failureCode(a.Failure.GetGrpcStatusCode()), desc: a.Failure.GetDescription()}
	case *functionpb.ClientAction_Forward:
		f := a.Forward
		target := p.method(f.GetServiceName(), f.GetCommandName())
		switch {
		case target == nil:
			return nil, fmt.Errorf("%w: %s forwards to unknown method %s/%s", ErrFunction, m.fullMethod(), f.GetServiceName(), f.GetCommandName())
		case target.desc.Output().FullName() != m.desc.Output().FullName():
			return nil, fmt.Errorf("%w: %s forwards to %s, which returns %s, not %s", ErrFunction, m.fullMethod(), target.fullMethod(),
				target.desc.Output().FullName(), m.desc.Output().FullName())
		case depth >= p.cfg.MaxForwardDepth:
			return nil, fmt.Errorf("%w: forwards nested deeper than %d at %s", ErrFunction, p.cfg.MaxForwardDepth, target.fullMethod())
		}
		in, err := p.decodeAny(target.desc.Input(), f.GetPayload())
		if err != nil {
			return nil, fmt.Errorf("%w: forward from %s to %s: %v", ErrFunction, m.fullMethod(), target.fullMethod(), err)
		}
		fo, err := p.invoke(ctx, target, in, meta, depth+1)
		if err != nil {
			return nil, err
		}
		out = fo
	}
	for _, se := range effects {
		if se.GetSynchronous() {
			if err := p.sideEffect(ctx, m, se, meta, depth); err != nil {
				return nil, err
			}
		}
	}
	for _, se := range effects {
		if !se.GetSynchronous() {
			p.background(func() {
				ctx, cancel := context.WithTimeout(p.ctx, p.cfg.CommandTimeout)
				defer cancel()
				if err := p.sideEffect(ctx, m, se, meta, depth); err != nil {
					p.cfg.Logger.Warn("proxy: asynchronous side effect failed", "from", m.fullMethod(),
						"to", se.GetServiceName()+"/"+se.GetCommandName(), "err", err)
				}
			})
		}
	}
	return out, nil
}

// background runs f in a goroutine that Close waits for; after Close it
// does not run f.
func (p *Proxy) background(f func()) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.mu.closed {
		p.cfg.Logger.Warn("proxy: closing, asynchronous side effect dropped")
		return
	}
	p.wg.Go(f)
}

func (p *Proxy) sideEffect(ctx context.Context, from *method, se *functionpb.SideEffect, meta map[string]string, depth int) error {
	target := p.method(se.GetServiceName(), se.GetCommandName())
	if target == nil {
		return fmt.Errorf("%w: %s has a side effect on unknown method %s/%s", ErrFunction, from.fullMethod(), se.GetServiceName(), se.GetCommandName())
	}
	if depth >= p.cfg.MaxForwardDepth {
		return fmt.Errorf("%w: side effects nested deeper than %d at %s", ErrFunction, p.cfg.MaxForwardDepth, target.fullMethod())
	}
	in, err := p.decodeAny(target.desc.Input(), se.GetPayload())
	if err != nil {
		return fmt.Errorf("%w: side effect of %s on %s: %v", ErrFunction, from.fullMethod(), target.fullMethod(), err)
	}
	_, err = p.invoke(ctx, target, in, meta, depth+1)
	return err
}

// decodeAny decodes a function's Any as a message of type want; an absent
// Any is the empty message.
func (p *Proxy) decodeAny(want protoreflect.MessageDescriptor, a *anypb.Any) (proto.Message, error) {
	msg := dynamicpb.NewMessage(want)
	if a == nil {
		return msg, nil
	}
	if got := a.GetTypeUrl()[strings.LastIndexByte(a.GetTypeUrl(), '/')+1:]; got != string(want.FullName()) {
		return nil, fmt.Errorf("payload has type %q, want %s", a.GetTypeUrl(), want.FullName())
	}
	if err := (proto.UnmarshalOptions{Resolver: p.model.types}).Unmarshal(a.GetValue(), msg); err != nil {
		return nil, fmt.Errorf("payload of type %s does not decode: %v", want.FullName(), err)
	}
	return msg, nil
}

// runAction calls an action's unary handler.
func (p *Proxy) runAction(ctx context.Context, env *functionpb.ActionCommand) (*functionpb.ClientAction, []*functionpb.SideEffect, error) {
	resp, err := p.action.HandleUnary(ctx, env)
	if err != nil {
		return nil, nil, functionCallError(err)
	}
	ca, effects := actionResult(resp)
	return ca, effects, nil
}

// actionResult is an action's response as a ClientAction (with no action
// if the response has none) and side effects.
func actionResult(resp *functionpb.ActionResponse) (*functionpb.ClientAction, []*functionpb.SideEffect) {
	ca := &functionpb.ClientAction{}
	switch r := resp.GetResponse().(type) {
	case *functionpb.ActionResponse_Reply:
		ca.Action = &functionpb.ClientAction_Reply{Reply: r.Reply}
	case *functionpb.ActionResponse_Forward:
		ca.Action = &functionpb.ClientAction_Forward{Forward: r.Forward}
	case *functionpb.ActionResponse_Failure:
		ca.Action = &functionpb.ClientAction_Failure{Failure: r.Failure}
	}
	return ca, resp.GetSideEffects()
}

// stream runs a call of a streamed method (see streamedMethod), sending
// each of its messages with send, until the method ends it, it fails, or
// ctx ends.
func (p *Proxy) stream(ctx context.Context, m *method, in proto.Message, meta map[string]string, send func(proto.Message) error) error {
	if m.svc.model == functionpb.Model_MODEL_ACTION {
		return p.streamAction(ctx, m, in, meta, send)
	}
	_, store := p.backends()
	if store == nil {
		return fmt.Errorf("%w: no CRDT store", ErrNotSupported)
	}
	return p.streamCRDT(ctx, store, m, in, meta, send)
}

// streamAction runs a call of a server-streaming action method with
// ActionProtocol.HandleStreamedOut. Each response the function streams is
// one message to the caller, handled as a unary action's reply is
// (forwards followed, side effects run; a response with no reply runs its
// side effects and sends nothing); a Failure ends the call with its code.
// The call has no CommandTimeout (it lasts as long as the method streams);
// it ends when the caller goes away or the proxy closes.
func (p *Proxy) streamAction(ctx context.Context, m *method, in proto.Message, meta map[string]string, send func(proto.Message) error) error {
	env, err := actionCommand(m, in, meta)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	defer context.AfterFunc(p.ctx, cancel)()
	s, err := p.action.HandleStreamedOut(ctx, env)
	if err != nil {
		return functionCallError(err)
	}
	return p.emitResponses(ctx, m, s, nil, meta, send)
}

// emitResponses emits each ActionResponse the function streams on fs (see
// emit) until it ends the stream (nil), fails (see streamInError, with
// the relay of a client-streamed call, else nil) or sending fails.
func (p *Proxy) emitResponses(ctx context.Context, m *method, fs grpc.ClientStream, relayed <-chan error, meta map[string]string, send func(proto.Message) error) error {
	for {
		resp := &functionpb.ActionResponse{}
		err := fs.RecvMsg(resp)
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return p.streamInError(err, relayed)
		}
		ca, effects := actionResult(resp)
		if err := p.emit(ctx, m, ca, effects, meta, send); err != nil {
			return err
		}
	}
}

// functionCallError classifies an error of a call to the function: the
// caller's own cancellation and deadline keep their code, an unreachable
// function is Unavailable, anything else is the function's fault.
func functionCallError(err error) error {
	switch status.Code(err) {
	case codes.Canceled, codes.DeadlineExceeded, codes.Unavailable:
		return err
	}
	return fmt.Errorf("%w: %v", ErrFunction, err)
}

const protoCodecName = "proto"

// rawFrame receives a request's bytes undecoded (see frameCodec).
type rawFrame struct{ b []byte }

// frameCodec is gRPC's proto codec that also passes a rawFrame through
// as bytes.
type frameCodec struct{ base encoding.CodecV2 }

func (c frameCodec) Marshal(v any) (mem.BufferSlice, error) {
	if f, ok := v.(*rawFrame); ok {
		return mem.BufferSlice{mem.SliceBuffer(f.b)}, nil
	}
	return c.base.Marshal(v)
}

func (c frameCodec) Unmarshal(data mem.BufferSlice, v any) error {
	if f, ok := v.(*rawFrame); ok {
		f.b = data.Materialize()
		return nil
	}
	return c.base.Unmarshal(data, v)
}

func (frameCodec) Name() string { return protoCodecName }

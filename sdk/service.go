package sdk

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"runtime"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protodesc"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/types/descriptorpb"
	"google.golang.org/protobuf/types/known/emptypb"

	"github.com/statemesh/statemesh/protocol/functionpb"
)

// Protocol version this SDK speaks. A proxy with another major version is
// refused at discovery.
const (
	ProtocolMajorVersion = 1
	ProtocolMinorVersion = 0
)

// Support library identification sent in ServiceInfo.
const (
	LibraryName    = "statemesh-go-sdk"
	LibraryVersion = "0.1.0"
)

// Sentinel errors, wrapped with %w.
var (
	// ErrInvalidRegistration: a Register* call got a nil descriptor, a nil
	// factory, or a service that is already registered.
	ErrInvalidRegistration = errors.New("sdk: invalid registration")
	// ErrStopped: Serve was called after Stop.
	ErrStopped = errors.New("sdk: service stopped")
)

// Option configures a Service.
type Option func(*Service)

// WithLogger sets the logger (default: discard).
func WithLogger(l *slog.Logger) Option {
	return func(s *Service) {
		if l != nil {
			s.logger = l
		}
	}
}

// WithServiceName sets the function's name reported in ServiceInfo.
func WithServiceName(name string) Option { return func(s *Service) { s.name = name } }

// WithServiceVersion sets the function's version reported in ServiceInfo.
func WithServiceVersion(v string) Option { return func(s *Service) { s.version = v } }

// EntityOption configures one registered entity.
type EntityOption func(*entityConfig)

type entityConfig struct {
	persistenceID string
	passivation   time.Duration
	snapshotEvery int64
}

// WithPersistenceID names the entity's stored state (default: the fully
// qualified service name).
func WithPersistenceID(id string) EntityOption {
	return func(c *entityConfig) { c.persistenceID = id }
}

// WithPassivationTimeout sets how long an idle entity stays in memory
// (default 0: the proxy's default).
func WithPassivationTimeout(d time.Duration) EntityOption {
	return func(c *entityConfig) { c.passivation = d }
}

// SnapshotEvery makes an event-sourced entity's reply carry a snapshot
// whenever its event sequence crosses a multiple of n (n <= 0: never, the
// default). Ignored by the other models.
func SnapshotEvery(n int64) EntityOption {
	return func(c *entityConfig) { c.snapshotEvery = n }
}

// entityReg is one registered service, whatever its model.
type entityReg struct {
	model   functionpb.Model
	sd      protoreflect.ServiceDescriptor
	cfg     entityConfig
	methods map[string]protoreflect.MethodDescriptor

	esFactory    func(entityID string) EventSourcedEntity
	valueFactory func(entityID string) ValueEntity
	crdtFactory  func(entityID string) CrdtEntity
	action       ActionHandlers
}

// method returns the descriptor of the named method or a NotFound error.
func (r *entityReg) method(name string) (protoreflect.MethodDescriptor, error) {
	md, ok := r.methods[name]
	if !ok {
		return nil, status.Errorf(codes.NotFound, "sdk: service %s has no method %q", r.sd.FullName(), name)
	}
	return md, nil
}

// Service is a statemesh user function: the registered entities and the
// gRPC server that speaks the function protocol to the proxy.
//
// Register entities before Serve (or before registering the Service on a
// grpc.Server); registrations made later are seen by new discoveries and
// streams only.
type Service struct {
	logger  *slog.Logger
	name    string
	version string

	mu struct {
		sync.RWMutex
		entities map[string]*entityReg // by full service name
		order    []string              // registration order, for discovery
		files    *protoregistry.Files  // the registered services' files and imports
		srv      *grpc.Server
		stopped  bool
	}
}

// New returns a Service with no entities.
func New(opts ...Option) *Service {
	s := &Service{logger: slog.New(slog.DiscardHandler)}
	for _, o := range opts {
		o(s)
	}
	s.mu.entities = make(map[string]*entityReg)
	s.mu.files = new(protoregistry.Files)
	return s
}

// RegisterEventSourced registers an event-sourced entity serving sd; factory
// creates the in-memory entity for an entity id.
func (s *Service) RegisterEventSourced(sd protoreflect.ServiceDescriptor, factory func(entityID string) EventSourcedEntity, opts ...EntityOption) error {
	if factory == nil {
		return fmt.Errorf("%w: nil factory", ErrInvalidRegistration)
	}
	return s.register(&entityReg{model: functionpb.Model_MODEL_EVENT_SOURCED, sd: sd, esFactory: factory}, opts)
}

// RegisterValue registers a value entity serving sd.
func (s *Service) RegisterValue(sd protoreflect.ServiceDescriptor, factory func(entityID string) ValueEntity, opts ...EntityOption) error {
	if factory == nil {
		return fmt.Errorf("%w: nil factory", ErrInvalidRegistration)
	}
	return s.register(&entityReg{model: functionpb.Model_MODEL_VALUE, sd: sd, valueFactory: factory}, opts)
}

// RegisterCrdt registers a CRDT entity serving sd.
func (s *Service) RegisterCrdt(sd protoreflect.ServiceDescriptor, factory func(entityID string) CrdtEntity, opts ...EntityOption) error {
	if factory == nil {
		return fmt.Errorf("%w: nil factory", ErrInvalidRegistration)
	}
	return s.register(&entityReg{model: functionpb.Model_MODEL_CRDT, sd: sd, crdtFactory: factory}, opts)
}

// RegisterAction registers a stateless action serving sd's unary methods.
func (s *Service) RegisterAction(sd protoreflect.ServiceDescriptor, handler ActionHandler, opts ...EntityOption) error {
	if handler == nil {
		return fmt.Errorf("%w: nil handler", ErrInvalidRegistration)
	}
	return s.RegisterActionHandlers(sd, ActionHandlers{Unary: handler}, opts...)
}

// RegisterActionHandlers registers a stateless action serving sd's unary
// methods with h.Unary, its server-streaming ones with h.StreamedOut, its
// client-streaming ones with h.StreamedIn and its bidirectional ones with
// h.Streamed. At least one handler must be set.
func (s *Service) RegisterActionHandlers(sd protoreflect.ServiceDescriptor, h ActionHandlers, opts ...EntityOption) error {
	if h.Unary == nil && h.StreamedOut == nil && h.StreamedIn == nil && h.Streamed == nil {
		return fmt.Errorf("%w: no action handler", ErrInvalidRegistration)
	}
	return s.register(&entityReg{model: functionpb.Model_MODEL_ACTION, sd: sd, action: h}, opts)
}

func (s *Service) register(r *entityReg, opts []EntityOption) error {
	if r.sd == nil {
		return fmt.Errorf("%w: nil service descriptor", ErrInvalidRegistration)
	}
	for _, o := range opts {
		o(&r.cfg)
	}
	if r.cfg.persistenceID == "" {
		r.cfg.persistenceID = string(r.sd.FullName())
	}
	if r.cfg.passivation < 0 {
		return fmt.Errorf("%w: negative passivation timeout", ErrInvalidRegistration)
	}
	r.methods = make(map[string]protoreflect.MethodDescriptor)
	ms := r.sd.Methods()
	for i := 0; i < ms.Len(); i++ {
		r.methods[string(ms.Get(i).Name())] = ms.Get(i)
	}
	name := string(r.sd.FullName())
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, dup := s.mu.entities[name]; dup {
		return fmt.Errorf("%w: service %s registered twice", ErrInvalidRegistration, name)
	}
	for _, fd := range transitiveFiles([]protoreflect.FileDescriptor{r.sd.ParentFile()}) {
		if _, err := s.mu.files.FindFileByPath(fd.Path()); err == nil {
			continue
		}
		if err := s.mu.files.RegisterFile(fd); err != nil {
			return fmt.Errorf("%w: %v", ErrInvalidRegistration, err)
		}
	}
	s.mu.entities[name] = r
	s.mu.order = append(s.mu.order, name)
	return nil
}

// entity returns the registration of a service with the given model.
func (s *Service) entity(serviceName string, model functionpb.Model) (*entityReg, error) {
	s.mu.RLock()
	r, ok := s.mu.entities[serviceName]
	s.mu.RUnlock()
	if !ok {
		return nil, status.Errorf(codes.NotFound, "sdk: no entity serves %q", serviceName)
	}
	if r.model != model {
		return nil, status.Errorf(codes.InvalidArgument, "sdk: service %q is a %s entity, not %s", serviceName, r.model, model)
	}
	return r, nil
}

// resolver returns the types used to decode Any payloads whose type is not
// fixed by a method (events, snapshots, value states).
func (s *Service) resolver() *resolver {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return &resolver{files: s.mu.files}
}

// transitiveFiles returns the files and all their imports, each once,
// dependencies before the files that import them.
func transitiveFiles(roots []protoreflect.FileDescriptor) []protoreflect.FileDescriptor {
	seen := make(map[string]bool)
	var out []protoreflect.FileDescriptor
	var visit func(fd protoreflect.FileDescriptor)
	visit = func(fd protoreflect.FileDescriptor) {
		if seen[fd.Path()] {
			return
		}
		seen[fd.Path()] = true
		imps := fd.Imports()
		for i := 0; i < imps.Len(); i++ {
			visit(imps.Get(i).FileDescriptor)
		}
		out = append(out, fd)
	}
	for _, fd := range roots {
		visit(fd)
	}
	return out
}

// Register registers the function protocol's services on gs.
func (s *Service) Register(gs grpc.ServiceRegistrar) {
	functionpb.RegisterDiscoveryServer(gs, discoveryServer{s: s})
	functionpb.RegisterEventSourcedServer(gs, esServer{s: s})
	functionpb.RegisterValueEntityServer(gs, valueServer{s: s})
	functionpb.RegisterCrdtServer(gs, crdtServer{s: s})
	functionpb.RegisterActionProtocolServer(gs, actionServer{s: s})
}

// Serve serves the function protocol on lis until Stop. It returns nil
// after Stop.
func (s *Service) Serve(lis net.Listener) error {
	s.mu.Lock()
	if s.mu.stopped {
		s.mu.Unlock()
		return ErrStopped
	}
	if s.mu.srv == nil {
		s.mu.srv = grpc.NewServer()
		s.Register(s.mu.srv)
	}
	srv := s.mu.srv
	s.mu.Unlock()
	err := srv.Serve(lis)
	if errors.Is(err, grpc.ErrServerStopped) {
		return nil
	}
	return err
}

// Stop stops the server started by Serve, closing its listeners and
// entity streams (the proxy keeps entity streams open, so a graceful stop
// would wait for it).
func (s *Service) Stop() {
	s.mu.Lock()
	s.mu.stopped = true
	srv := s.mu.srv
	s.mu.Unlock()
	if srv != nil {
		srv.Stop()
	}
}

type discoveryServer struct {
	functionpb.UnimplementedDiscoveryServer
	s *Service
}

// Discover answers the proxy with the registered entities and the
// descriptors of their services.
func (d discoveryServer) Discover(_ context.Context, info *functionpb.ProxyInfo) (*functionpb.EntitySpec, error) {
	s := d.s
	if info.GetProtocolMajorVersion() != ProtocolMajorVersion {
		return nil, status.Errorf(codes.FailedPrecondition,
			"sdk: proxy speaks function protocol %d.%d, this function (%s %s) speaks %d.%d: major versions differ",
			info.GetProtocolMajorVersion(), info.GetProtocolMinorVersion(), LibraryName, LibraryVersion,
			ProtocolMajorVersion, ProtocolMinorVersion)
	}
	s.logger.Info("sdk: discovery", "proxy", info.GetProxyName(), "proxy_version", info.GetProxyVersion(),
		"protocol", fmt.Sprintf("%d.%d", info.GetProtocolMajorVersion(), info.GetProtocolMinorVersion()))
	s.mu.RLock()
	regs := make([]*entityReg, 0, len(s.mu.order))
	for _, n := range s.mu.order {
		regs = append(regs, s.mu.entities[n])
	}
	s.mu.RUnlock()

	spec := &functionpb.EntitySpec{
		ServiceInfo: &functionpb.ServiceInfo{
			ServiceName:           s.name,
			ServiceVersion:        s.version,
			ServiceRuntime:        runtime.Version(),
			SupportLibraryName:    LibraryName,
			SupportLibraryVersion: LibraryVersion,
			ProtocolMajorVersion:  ProtocolMajorVersion,
			ProtocolMinorVersion:  ProtocolMinorVersion,
		},
	}
	supported := make(map[string]bool, len(info.GetSupportedModels()))
	for _, m := range info.GetSupportedModels() {
		supported[m] = true
	}
	roots := make([]protoreflect.FileDescriptor, 0, len(regs))
	for _, r := range regs {
		if len(supported) > 0 && !supported[r.model.String()] {
			s.logger.Warn("sdk: the proxy does not support an entity's model",
				"service", string(r.sd.FullName()), "model", r.model.String(), "supported", info.GetSupportedModels())
		}
		roots = append(roots, r.sd.ParentFile())
		spec.Entities = append(spec.Entities, &functionpb.Entity{
			Model:                r.model,
			ServiceName:          string(r.sd.FullName()),
			PersistenceId:        r.cfg.persistenceID,
			PassivationTimeoutMs: r.cfg.passivation.Milliseconds(),
		})
	}
	set := &descriptorpb.FileDescriptorSet{}
	for _, fd := range transitiveFiles(roots) {
		set.File = append(set.File, protodesc.ToFileDescriptorProto(fd))
	}
	b, err := proto.Marshal(set)
	if err != nil {
		return nil, status.Errorf(codes.Internal, "sdk: encoding descriptors: %v", err)
	}
	spec.Proto = b
	return spec, nil
}

// ReportError logs an error the proxy found in the spec or in a reply.
func (d discoveryServer) ReportError(_ context.Context, e *functionpb.UserFunctionError) (*emptypb.Empty, error) {
	d.s.logger.Error("sdk: proxy reported an error", "message", e.GetMessage())
	return &emptypb.Empty{}, nil
}

// recvAll is the receive loop shared by the entity streams: it hands each
// message to step and sends what step returns, in order; a non-nil stop
// error ends the stream (after the messages are sent).
func recvAll[In, Out any](recv func() (*In, error), send func(*Out) error, step func(*In) ([]*Out, error)) error {
	for {
		in, err := recv()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
		outs, stop := step(in)
		for _, out := range outs {
			if err := send(out); err != nil {
				return err
			}
		}
		if stop != nil {
			return stop
		}
	}
}

// one wraps a single step result.
func one[Out any](out *Out, stop error) ([]*Out, error) {
	if out == nil {
		return nil, stop
	}
	return []*Out{out}, stop
}

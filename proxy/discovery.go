package proxy

import (
	"context"
	"fmt"
	"time"

	_ "google.golang.org/genproto/googleapis/api/annotations" // google.api.http options in discovered descriptors
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protodesc"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/types/descriptorpb"
	"google.golang.org/protobuf/types/dynamicpb"

	"github.com/statemesh/statemesh/protocol/functionpb"
	"github.com/statemesh/statemesh/protocol/statemeshpb"
)

// supportedModels are the models this proxy routes (sent in ProxyInfo).
var supportedModels = []functionpb.Model{
	functionpb.Model_MODEL_CRDT,
	functionpb.Model_MODEL_EVENT_SOURCED,
	functionpb.Model_MODEL_VALUE,
	functionpb.Model_MODEL_ACTION,
}

// discover calls Discovery.Discover until the function answers or ctx
// ends, retrying with exponential backoff (the function may start after
// its sidecar). A function that answers with an error is retried too: it
// may still be starting; a version mismatch it reports is in the last
// error returned when ctx ends.
func discover(ctx context.Context, cfg Config, client functionpb.DiscoveryClient) (*functionpb.EntitySpec, error) {
	info := &functionpb.ProxyInfo{
		ProtocolMajorVersion: ProtocolMajorVersion,
		ProtocolMinorVersion: ProtocolMinorVersion,
		ProxyName:            cfg.ProxyName,
		ProxyVersion:         fmt.Sprintf("%d.%d", ProtocolMajorVersion, ProtocolMinorVersion),
	}
	for _, m := range supportedModels {
		info.SupportedModels = append(info.SupportedModels, m.String())
	}
	delay := cfg.DiscoveryRetry
	for attempt := 1; ; attempt++ {
		cctx, cancel := context.WithTimeout(ctx, cfg.DiscoveryTimeout)
		spec, err := client.Discover(cctx, info)
		cancel()
		if err == nil {
			return spec, nil
		}
		switch status.Code(err) {
		case codes.FailedPrecondition, codes.InvalidArgument, codes.Unimplemented:
			// The function answered and refused: retrying will not help
			// (a function refuses a proxy of another major version).
			return nil, fmt.Errorf("%w: the function at %s refused discovery: %v", ErrVersion, cfg.FunctionAddr, err)
		}
		cfg.Logger.Info("proxy: discovery failed, retrying", "function", cfg.FunctionAddr, "attempt", attempt, "err", err)
		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, fmt.Errorf("proxy: discovering the function at %s: %w (last error: %v)", cfg.FunctionAddr, ctx.Err(), err)
		case <-t.C:
		}
		delay = min(2*delay, cfg.DiscoveryMaxRetry)
	}
}

// model is what the proxy knows of a discovered spec.
type model struct {
	files    *protoregistry.Files
	types    *dynamicpb.Types
	services map[protoreflect.FullName]*service
	// order lists services as the spec does (deterministic serving).
	order []*service
	info  *functionpb.ServiceInfo
}

// service is one of the function's services.
type service struct {
	desc          protoreflect.ServiceDescriptor
	model         functionpb.Model
	persistenceID string
	passivation   time.Duration
	methods       map[string]*method
}

// method is one method of a service.
type method struct {
	svc  *service
	desc protoreflect.MethodDescriptor
	// key is the input's entity key field (nil for actions).
	key protoreflect.FieldDescriptor
}

// fullMethod is the gRPC path of m, "/pkg.Service/Method".
func (m *method) fullMethod() string {
	return "/" + string(m.svc.desc.FullName()) + "/" + string(m.desc.Name())
}

// buildModel checks a spec and builds its descriptors. Errors wrap
// ErrSpec or ErrVersion and name the offending service.
func buildModel(spec *functionpb.EntitySpec, passivation time.Duration) (*model, error) {
	if si := spec.GetServiceInfo(); si != nil && si.ProtocolMajorVersion != 0 && si.ProtocolMajorVersion != ProtocolMajorVersion {
		return nil, fmt.Errorf("%w: the function (%s %s) speaks protocol %d.%d, this proxy %d.%d",
			ErrVersion, si.SupportLibraryName, si.SupportLibraryVersion,
			si.ProtocolMajorVersion, si.ProtocolMinorVersion, ProtocolMajorVersion, ProtocolMinorVersion)
	}
	var set descriptorpb.FileDescriptorSet
	// Options decode against the global registry: the google.api.http and
	// statemesh.entity_key extensions are linked into this binary.
	if err := proto.Unmarshal(spec.GetProto(), &set); err != nil {
		return nil, fmt.Errorf("%w: the descriptor set does not decode: %v", ErrSpec, err)
	}
	files, err := protodesc.NewFiles(&set)
	if err != nil {
		return nil, fmt.Errorf("%w: the descriptor set is not valid: %v", ErrSpec, err)
	}
	m := &model{files: files, types: dynamicpb.NewTypes(files), services: map[protoreflect.FullName]*service{}, info: spec.GetServiceInfo()}
	if len(spec.GetEntities()) == 0 {
		return nil, fmt.Errorf("%w: no entities", ErrSpec)
	}
	for _, e := range spec.GetEntities() {
		name := protoreflect.FullName(e.GetServiceName())
		d, err := files.FindDescriptorByName(name)
		if err != nil {
			return nil, fmt.Errorf("%w: service %q is not in the descriptor set", ErrSpec, name)
		}
		sd, ok := d.(protoreflect.ServiceDescriptor)
		if !ok {
			return nil, fmt.Errorf("%w: %q is not a service", ErrSpec, name)
		}
		if _, dup := m.services[name]; dup {
			return nil, fmt.Errorf("%w: service %q is declared twice", ErrSpec, name)
		}
		switch e.GetModel() {
		case functionpb.Model_MODEL_ACTION, functionpb.Model_MODEL_EVENT_SOURCED, functionpb.Model_MODEL_VALUE, functionpb.Model_MODEL_CRDT:
		default:
			return nil, fmt.Errorf("%w: service %q has unknown model %v", ErrSpec, name, e.GetModel())
		}
		s := &service{desc: sd, model: e.GetModel(), persistenceID: e.GetPersistenceId(), methods: map[string]*method{}, passivation: passivation}
		if s.persistenceID == "" {
			s.persistenceID = string(name)
		}
		if ms := e.GetPassivationTimeoutMs(); ms > 0 {
			s.passivation = time.Duration(ms) * time.Millisecond
		}
		mds := sd.Methods()
		for i := range mds.Len() {
			md := mds.Get(i)
			mt := &method{svc: s, desc: md}
			if s.model != functionpb.Model_MODEL_ACTION {
				key, err := entityKey(md.Input())
				if err != nil {
					return nil, fmt.Errorf("%w: service %q, method %s: %v", ErrSpec, name, md.Name(), err)
				}
				mt.key = key
			}
			s.methods[string(md.Name())] = mt
		}
		m.services[name] = s
		m.order = append(m.order, s)
	}
	return m, nil
}

// entityKey finds the one field of md marked (statemesh.entity_key).
func entityKey(md protoreflect.MessageDescriptor) (protoreflect.FieldDescriptor, error) {
	var key protoreflect.FieldDescriptor
	fs := md.Fields()
	for i := range fs.Len() {
		f := fs.Get(i)
		opts, ok := f.Options().(*descriptorpb.FieldOptions)
		if !ok || opts == nil || !proto.HasExtension(opts, statemeshpb.E_EntityKey) {
			continue
		}
		if !proto.GetExtension(opts, statemeshpb.E_EntityKey).(bool) {
			continue
		}
		if key != nil {
			return nil, fmt.Errorf("input %s has two (statemesh.entity_key) fields, %s and %s", md.FullName(), key.Name(), f.Name())
		}
		if f.IsList() || f.IsMap() {
			return nil, fmt.Errorf("input %s: entity key %s is repeated", md.FullName(), f.Name())
		}
		switch f.Kind() {
		case protoreflect.MessageKind, protoreflect.GroupKind, protoreflect.FloatKind, protoreflect.DoubleKind:
			return nil, fmt.Errorf("input %s: entity key %s has kind %v (want a string, bytes, integer, bool or enum)", md.FullName(), f.Name(), f.Kind())
		}
		key = f
	}
	if key == nil {
		return nil, fmt.Errorf("input %s has no (statemesh.entity_key) field", md.FullName())
	}
	return key, nil
}

// entityID reads the entity id from a decoded request.
func entityID(key protoreflect.FieldDescriptor, msg protoreflect.Message) (string, error) {
	v := msg.Get(key)
	var id string
	switch key.Kind() {
	case protoreflect.StringKind:
		id = v.String()
	case protoreflect.BytesKind:
		id = string(v.Bytes())
	case protoreflect.EnumKind:
		id = fmt.Sprint(int32(v.Enum()))
	default:
		id = fmt.Sprint(v.Interface())
	}
	if id == "" {
		return "", fmt.Errorf("%w: entity key %s is empty", ErrBadRequest, key.Name())
	}
	return id, nil
}

package tck

import (
	"context"
	"fmt"

	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protodesc"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/types/descriptorpb"

	"github.com/statemesh/statemesh/protocol/functionpb"
	"github.com/statemesh/statemesh/protocol/tckpb"
)

// ProtocolMajorVersion and ProtocolMinorVersion are the function protocol
// version the TCK speaks as a proxy.
const (
	ProtocolMajorVersion = 1
	ProtocolMinorVersion = 0
)

const tckPackage = "statemesh.tck.v1."

// Fully qualified names of the model services.
const (
	gcounterService     = tckPackage + "GCounterTck"
	pncounterService    = tckPackage + "PNCounterTck"
	gsetService         = tckPackage + "GSetTck"
	orsetService        = tckPackage + "ORSetTck"
	lwwregisterService  = tckPackage + "LWWRegisterTck"
	flagService         = tckPackage + "FlagTck"
	ormapService        = tckPackage + "ORMapTck"
	voteService         = tckPackage + "VoteTck"
	eventSourcedService = tckPackage + "EventSourcedTck"
	valueService        = tckPackage + "ValueEntityTck"
	actionService       = tckPackage + "ActionTck"
	streamedAction      = tckPackage + "StreamedActionTck"
	streamedInAction    = tckPackage + "StreamedInActionTck"
	bidiAction          = tckPackage + "BidiActionTck"
	sinkService         = tckPackage + "TckSink"
)

// entityDecl is a model service and the model it must be declared with.
type entityDecl struct {
	service string
	model   functionpb.Model
}

// requiredEntities must be declared, with these models.
var requiredEntities = []entityDecl{
	{gcounterService, functionpb.Model_MODEL_CRDT},
	{pncounterService, functionpb.Model_MODEL_CRDT},
	{gsetService, functionpb.Model_MODEL_CRDT},
	{orsetService, functionpb.Model_MODEL_CRDT},
	{lwwregisterService, functionpb.Model_MODEL_CRDT},
	{flagService, functionpb.Model_MODEL_CRDT},
	{eventSourcedService, functionpb.Model_MODEL_EVENT_SOURCED},
	{valueService, functionpb.Model_MODEL_VALUE},
	{actionService, functionpb.Model_MODEL_ACTION},
	{sinkService, functionpb.Model_MODEL_ACTION},
}

// optionalEntities are checked only if declared.
var optionalEntities = []entityDecl{
	{ormapService, functionpb.Model_MODEL_CRDT},
	{voteService, functionpb.Model_MODEL_CRDT},
	{streamedAction, functionpb.Model_MODEL_ACTION},
}

// discovered is what the function answered at discovery.
type discovered struct {
	spec  *functionpb.EntitySpec
	files *protoregistry.Files // nil if the descriptors do not resolve
	// filesErr says why files is nil.
	filesErr error
	models   map[string]functionpb.Model
	dups     []string // services declared more than once
}

func proxyInfo(major, minor int32) *functionpb.ProxyInfo {
	return &functionpb.ProxyInfo{
		ProtocolMajorVersion: major,
		ProtocolMinorVersion: minor,
		ProxyName:            "statemesh-tck",
		ProxyVersion:         "1",
		SupportedModels: []string{
			functionpb.Model_MODEL_CRDT.String(), functionpb.Model_MODEL_EVENT_SOURCED.String(),
			functionpb.Model_MODEL_VALUE.String(), functionpb.Model_MODEL_ACTION.String(),
		},
	}
}

// discover calls Discover once per run.
func (s *suite) discover(ctx context.Context) (*discovered, error) {
	s.discoverOnce.Do(func() {
		spec, err := s.discovery.Discover(ctx, proxyInfo(ProtocolMajorVersion, ProtocolMinorVersion))
		if err != nil {
			s.specErr = fmt.Errorf("Discover(protocol %d.%d): %w", ProtocolMajorVersion, ProtocolMinorVersion, err)
			return
		}
		d := &discovered{spec: spec, models: make(map[string]functionpb.Model)}
		for _, e := range spec.GetEntities() {
			if _, dup := d.models[e.GetServiceName()]; dup {
				d.dups = append(d.dups, e.GetServiceName())
			}
			d.models[e.GetServiceName()] = e.GetModel()
		}
		set := &descriptorpb.FileDescriptorSet{}
		if err := proto.Unmarshal(spec.GetProto(), set); err != nil {
			d.filesErr = fmt.Errorf("spec.proto is not a FileDescriptorSet: %w", err)
		} else if d.files, err = protodesc.NewFiles(set); err != nil {
			d.filesErr = fmt.Errorf("spec.proto does not resolve (every import must be included): %w", err)
		}
		s.spec = d
	})
	return s.spec, s.specErr
}

// discovered returns the discovery answer, failing the check if there is
// none.
func (c *checker) discovered() *discovered {
	d, err := c.s.discover(c.ctx)
	if err != nil {
		c.fatalf("discovery failed: %v", err)
	}
	return d
}

// requireEntity fails the check unless the function declares service with
// model.
func (c *checker) requireEntity(service string, model functionpb.Model) {
	m, ok := c.discovered().models[service]
	if !ok {
		c.fatalf("the function does not declare %s (required)", service)
	}
	if m != model {
		c.fatalf("the function declares %s as %s, want %s", service, m, model)
	}
}

// optionalEntity skips the check unless the function declares service; if
// it does, it must be with model.
func (c *checker) optionalEntity(service string, model functionpb.Model) {
	m, ok := c.discovered().models[service]
	if !ok {
		c.skipf("not implemented by this SDK: the function does not declare %s", service)
	}
	if m != model {
		c.fatalf("the function declares %s as %s, want %s", service, m, model)
	}
}

func discoveryChecks() []check {
	return []check{
		{"discovery/spec", func(c *checker) {
			d := c.discovered()
			info := d.spec.GetServiceInfo()
			if info.GetProtocolMajorVersion() != ProtocolMajorVersion {
				c.errorf("service_info.protocol_major_version = %d, want %d", info.GetProtocolMajorVersion(), ProtocolMajorVersion)
			}
			if info.GetSupportLibraryName() == "" {
				c.errorf("service_info.support_library_name is empty")
			}
			if len(d.spec.GetEntities()) == 0 {
				c.errorf("the spec declares no entities")
			}
		}},
		{"discovery/descriptors-complete", func(c *checker) {
			d := c.discovered()
			if d.filesErr != nil {
				c.fatalf("%v", d.filesErr)
			}
			want := tckpb.File_tck_v1_tck_proto.Services()
			for _, e := range d.spec.GetEntities() {
				desc, err := d.files.FindDescriptorByName(protoreflect.FullName(e.GetServiceName()))
				if err != nil {
					c.errorf("entity %s: service not in spec.proto: %v", e.GetServiceName(), err)
					continue
				}
				sd, ok := desc.(protoreflect.ServiceDescriptor)
				if !ok {
					c.errorf("entity %s: %s is not a service", e.GetServiceName(), desc.FullName())
					continue
				}
				ref := want.ByName(sd.Name())
				if ref == nil || sd.FullName() != ref.FullName() {
					continue // not a TCK service: the function may declare others
				}
				if diff := diffServices(ref, sd); diff != "" {
					c.errorf("service %s differs from tck.proto's: %s", sd.FullName(), diff)
				}
			}
		}},
		{"discovery/entities", func(c *checker) {
			d := c.discovered()
			for _, e := range requiredEntities {
				m, ok := d.models[e.service]
				switch {
				case !ok:
					c.errorf("required entity %s not declared", e.service)
				case m != e.model:
					c.errorf("entity %s declared as %s, want %s", e.service, m, e.model)
				}
			}
			for _, e := range optionalEntities {
				if m, ok := d.models[e.service]; ok && m != e.model {
					c.errorf("entity %s declared as %s, want %s", e.service, m, e.model)
				}
			}
			for _, s := range d.dups {
				c.errorf("entity %s declared more than once", s)
			}
		}},
		{"discovery/major-version-mismatch-refused", func(c *checker) {
			c.discovered() // the function answers the right version
			for _, major := range []int32{ProtocolMajorVersion + 1, ProtocolMajorVersion - 1} {
				spec, err := c.s.discovery.Discover(c.ctx, proxyInfo(major, 0))
				if err == nil {
					c.errorf("Discover(protocol %d.0) succeeded (%d entities), want an error: major versions differ", major, len(spec.GetEntities()))
					continue
				}
				if st := status.Convert(err); st.Message() == "" {
					c.errorf("Discover(protocol %d.0) refused without a message (%v): the error must say why", major, st.Code())
				}
			}
		}},
		{"discovery/minor-version-accepted", func(c *checker) {
			if _, err := c.s.discovery.Discover(c.ctx, proxyInfo(ProtocolMajorVersion, ProtocolMinorVersion+7)); err != nil {
				c.errorf("Discover(protocol %d.%d) failed: %v; a newer minor version must be accepted", ProtocolMajorVersion, ProtocolMinorVersion+7, err)
			}
		}},
	}
}

// diffServices compares a declared service with tck.proto's.
func diffServices(want, got protoreflect.ServiceDescriptor) string {
	wm, gm := want.Methods(), got.Methods()
	if wm.Len() != gm.Len() {
		return fmt.Sprintf("%d methods, want %d", gm.Len(), wm.Len())
	}
	for i := 0; i < wm.Len(); i++ {
		w := wm.Get(i)
		g := gm.ByName(w.Name())
		if g == nil {
			return fmt.Sprintf("method %s missing", w.Name())
		}
		if g.Input().FullName() != w.Input().FullName() || g.Output().FullName() != w.Output().FullName() ||
			g.IsStreamingClient() != w.IsStreamingClient() || g.IsStreamingServer() != w.IsStreamingServer() {
			return fmt.Sprintf("method %s has another signature", w.Name())
		}
		if diff := diffMessages(w.Input(), g.Input()); diff != "" {
			return fmt.Sprintf("method %s input: %s", w.Name(), diff)
		}
	}
	return ""
}

// diffMessages compares a message's fields by number, name and kind.
func diffMessages(want, got protoreflect.MessageDescriptor) string {
	wf, gf := want.Fields(), got.Fields()
	for i := 0; i < wf.Len(); i++ {
		w := wf.Get(i)
		g := gf.ByNumber(w.Number())
		if g == nil || g.Name() != w.Name() || g.Kind() != w.Kind() {
			return fmt.Sprintf("field %d (%s) differs", w.Number(), w.Name())
		}
	}
	return ""
}

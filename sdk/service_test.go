package sdk_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protodesc"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/descriptorpb"

	"github.com/statemesh/statemesh/protocol/functionpb"
	"github.com/statemesh/statemesh/sdk"
	"github.com/statemesh/statemesh/sdk/sdktest"
)

func allModels(t *testing.T) *sdk.Service {
	t.Helper()
	svc := sdk.New(sdk.WithServiceName("tests"), sdk.WithServiceVersion("1.2.3"))
	errs := []error{
		svc.RegisterEventSourced(service("Ledger"), func(string) sdk.EventSourcedEntity { return &ledger{} }, sdk.WithPassivationTimeout(2*time.Second)),
		svc.RegisterValue(service("Doc"), func(string) sdk.ValueEntity { return sdk.ValueEntityFunc(doc) }, sdk.WithPersistenceID("docs")),
		svc.RegisterAction(service("Echo"), echo),
		svc.RegisterCrdt(service("Votes"), func(string) sdk.CrdtEntity { return &votes{c: sdk.NewPNCounter()} }),
		svc.RegisterCrdt(service("Tags"), func(string) sdk.CrdtEntity { return &tags{s: sdk.NewORSet()} }),
		svc.RegisterCrdt(service("Stock"), func(string) sdk.CrdtEntity { return &stock{m: sdk.NewORMap()} }),
		svc.RegisterCrdt(service("Ballot"), func(string) sdk.CrdtEntity { return &ballot{v: sdk.NewVote()} }),
	}
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
	return svc
}

func TestDiscovery(t *testing.T) {
	p := sdktest.Start(t, allModels(t))
	spec, err := p.Discovery.Discover(sdktest.Context(t), &functionpb.ProxyInfo{ProtocolMajorVersion: 1, ProtocolMinorVersion: 3, ProxyName: "test"})
	if err != nil {
		t.Fatal(err)
	}
	var set descriptorpb.FileDescriptorSet
	if err := proto.Unmarshal(spec.GetProto(), &set); err != nil {
		t.Fatal(err)
	}
	var paths []string
	for _, f := range set.GetFile() {
		paths = append(paths, f.GetName())
	}
	want := "google/protobuf/descriptor.proto statemesh/entity_key.proto sdktest/test.proto"
	if got := strings.Join(paths, " "); got != want {
		t.Fatalf("files %q, want %q (dependencies first, each once)", got, want)
	}
	files, err := protodesc.NewFiles(&set)
	if err != nil {
		t.Fatalf("descriptor set does not parse: %v", err)
	}
	for _, e := range spec.GetEntities() {
		if _, err := files.FindDescriptorByName(protoreflect.FullName(e.GetServiceName())); err != nil {
			t.Fatalf("service %s missing: %v", e.GetServiceName(), err)
		}
	}
	type ent struct {
		model   functionpb.Model
		pid     string
		passive int64
	}
	got := map[string]ent{}
	for _, e := range spec.GetEntities() {
		got[e.GetServiceName()] = ent{e.GetModel(), e.GetPersistenceId(), e.GetPassivationTimeoutMs()}
	}
	wantEnts := map[string]ent{
		"sdk.test.Ledger": {functionpb.Model_MODEL_EVENT_SOURCED, "sdk.test.Ledger", 2000},
		"sdk.test.Doc":    {functionpb.Model_MODEL_VALUE, "docs", 0},
		"sdk.test.Echo":   {functionpb.Model_MODEL_ACTION, "sdk.test.Echo", 0},
		"sdk.test.Votes":  {functionpb.Model_MODEL_CRDT, "sdk.test.Votes", 0},
		"sdk.test.Tags":   {functionpb.Model_MODEL_CRDT, "sdk.test.Tags", 0},
		"sdk.test.Stock":  {functionpb.Model_MODEL_CRDT, "sdk.test.Stock", 0},
		"sdk.test.Ballot": {functionpb.Model_MODEL_CRDT, "sdk.test.Ballot", 0},
	}
	if len(got) != len(wantEnts) {
		t.Fatalf("entities %v", got)
	}
	for k, v := range wantEnts {
		if got[k] != v {
			t.Errorf("entity %s: %v, want %v", k, got[k], v)
		}
	}
	si := spec.GetServiceInfo()
	if si.GetSupportLibraryName() != "statemesh-go-sdk" || si.GetProtocolMajorVersion() != 1 || si.GetProtocolMinorVersion() != 0 ||
		si.GetServiceName() != "tests" || si.GetServiceVersion() != "1.2.3" {
		t.Fatalf("service info %v", si)
	}

	_, err = p.Discovery.Discover(sdktest.Context(t), &functionpb.ProxyInfo{ProtocolMajorVersion: 2})
	if st := status.Convert(err); st.Code() != codes.FailedPrecondition || !strings.Contains(st.Message(), "major") {
		t.Fatalf("major version 2: %v, want FailedPrecondition naming the major version", err)
	}
	if _, err := p.Discovery.ReportError(sdktest.Context(t), &functionpb.UserFunctionError{Message: "bad"}); err != nil {
		t.Fatal(err)
	}
}

func TestRegisterErrors(t *testing.T) {
	svc := sdk.New()
	f := func(string) sdk.ValueEntity { return sdk.ValueEntityFunc(doc) }
	if err := svc.RegisterValue(nil, f); !errors.Is(err, sdk.ErrInvalidRegistration) {
		t.Fatalf("nil descriptor: %v", err)
	}
	if err := svc.RegisterValue(service("Doc"), nil); !errors.Is(err, sdk.ErrInvalidRegistration) {
		t.Fatalf("nil factory: %v", err)
	}
	if err := svc.RegisterValue(service("Doc"), f); err != nil {
		t.Fatal(err)
	}
	if err := svc.RegisterAction(service("Doc"), echo); !errors.Is(err, sdk.ErrInvalidRegistration) {
		t.Fatalf("duplicate: %v", err)
	}
}

package sdk_test

import (
	"testing"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protodesc"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/types/descriptorpb"
	"google.golang.org/protobuf/types/dynamicpb"
	"google.golang.org/protobuf/types/known/anypb"

	_ "github.com/statemesh/statemesh/protocol/statemeshpb" // registers statemesh/entity_key.proto
	"github.com/statemesh/statemesh/sdk/sdktest"
)

// The test services are built at run time (no generated Go types), so the
// SDK decodes their messages with dynamicpb: the path a function takes for
// types it does not link.
var testFile = func() protoreflect.FileDescriptor {
	str := descriptorpb.FieldDescriptorProto_TYPE_STRING.Enum()
	i64 := descriptorpb.FieldDescriptorProto_TYPE_INT64.Enum()
	opt := descriptorpb.FieldDescriptorProto_LABEL_OPTIONAL.Enum()
	unary := func(name string) *descriptorpb.MethodDescriptorProto {
		return &descriptorpb.MethodDescriptorProto{Name: proto.String(name), InputType: proto.String(".sdk.test.Msg"), OutputType: proto.String(".sdk.test.Msg")}
	}
	streamed := func(name string) *descriptorpb.MethodDescriptorProto {
		m := unary(name)
		m.ServerStreaming = proto.Bool(true)
		return m
	}
	streamedIn := func(name string) *descriptorpb.MethodDescriptorProto {
		m := unary(name)
		m.ClientStreaming = proto.Bool(true)
		return m
	}
	bidi := func(name string) *descriptorpb.MethodDescriptorProto {
		m := streamed(name)
		m.ClientStreaming = proto.Bool(true)
		return m
	}
	svc := func(name string, ms ...*descriptorpb.MethodDescriptorProto) *descriptorpb.ServiceDescriptorProto {
		return &descriptorpb.ServiceDescriptorProto{Name: proto.String(name), Method: ms}
	}
	fdp := &descriptorpb.FileDescriptorProto{
		Name:       proto.String("sdktest/test.proto"),
		Package:    proto.String("sdk.test"),
		Syntax:     proto.String("proto3"),
		Dependency: []string{"statemesh/entity_key.proto"},
		MessageType: []*descriptorpb.DescriptorProto{{
			Name: proto.String("Msg"),
			Field: []*descriptorpb.FieldDescriptorProto{
				{Name: proto.String("id"), JsonName: proto.String("id"), Number: proto.Int32(1), Type: str, Label: opt},
				{Name: proto.String("text"), JsonName: proto.String("text"), Number: proto.Int32(2), Type: str, Label: opt},
				{Name: proto.String("n"), JsonName: proto.String("n"), Number: proto.Int32(3), Type: i64, Label: opt},
			},
		}},
		Service: []*descriptorpb.ServiceDescriptorProto{
			svc("Ledger", unary("Add"), unary("Get")),
			svc("Doc", unary("Put"), unary("Get"), unary("Delete")),
			svc("Echo", unary("Say"), streamed("Stream"), streamedIn("Sum"), bidi("Chat")),
			svc("Votes", unary("Inc"), unary("Get")),
			svc("Tags", unary("Add"), unary("Remove"), streamed("Watch")),
			svc("Stock", unary("Add"), unary("Tag"), unary("Remove"), unary("Get")),
			svc("Ballot", unary("Cast"), unary("Get")),
		},
	}
	fd, err := protodesc.NewFile(fdp, protoregistry.GlobalFiles)
	if err != nil {
		panic(err)
	}
	return fd
}()

var msgDesc = testFile.Messages().ByName("Msg")

func service(name string) protoreflect.ServiceDescriptor {
	return testFile.Services().ByName(protoreflect.Name(name))
}

// newMsg returns a sdk.test.Msg.
func newMsg(id, text string, n int64) proto.Message {
	m := dynamicpb.NewMessage(msgDesc)
	m.Set(msgDesc.Fields().ByName("id"), protoreflect.ValueOfString(id))
	m.Set(msgDesc.Fields().ByName("text"), protoreflect.ValueOfString(text))
	m.Set(msgDesc.Fields().ByName("n"), protoreflect.ValueOfInt64(n))
	return m
}

func fieldText(m proto.Message) string {
	return m.ProtoReflect().Get(msgDesc.Fields().ByName("text")).String()
}

func fieldN(m proto.Message) int64 {
	return m.ProtoReflect().Get(msgDesc.Fields().ByName("n")).Int()
}

// decodeMsg decodes a payload that must be a sdk.test.Msg.
func decodeMsg(t *testing.T, a *anypb.Any) proto.Message {
	t.Helper()
	if a.GetTypeUrl() != "type.googleapis.com/sdk.test.Msg" {
		t.Fatalf("type URL %q, want type.googleapis.com/sdk.test.Msg", a.GetTypeUrl())
	}
	m := dynamicpb.NewMessage(msgDesc)
	if err := proto.Unmarshal(a.GetValue(), m); err != nil {
		t.Fatal(err)
	}
	return m
}

func anyOf(t *testing.T, m proto.Message) *anypb.Any { return sdktest.Any(t, m) }

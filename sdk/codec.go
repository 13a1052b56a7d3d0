package sdk

import (
	"fmt"
	"strings"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/types/dynamicpb"
	"google.golang.org/protobuf/types/known/anypb"
)

// typeURLPrefix is the prefix of every type URL the SDK writes.
const typeURLPrefix = "type.googleapis.com/"

// typeName returns the message name of a type URL: what follows its last
// '/'.
func typeName(url string) protoreflect.FullName {
	if i := strings.LastIndexByte(url, '/'); i >= 0 {
		url = url[i+1:]
	}
	return protoreflect.FullName(url)
}

// messageType returns the linked Go type of md when there is one whose
// descriptor is md's, a dynamic type otherwise.
func messageType(md protoreflect.MessageDescriptor) protoreflect.MessageType {
	if mt, err := protoregistry.GlobalTypes.FindMessageByName(md.FullName()); err == nil {
		return mt
	}
	return dynamicpb.NewMessageType(md)
}

// decodeAs decodes a payload that must be of type md (a method's input).
func decodeAs(a *anypb.Any, md protoreflect.MessageDescriptor) (proto.Message, error) {
	if a == nil {
		return nil, status.Errorf(codes.InvalidArgument, "sdk: missing payload, want %s", md.FullName())
	}
	if got := typeName(a.GetTypeUrl()); got != md.FullName() {
		return nil, status.Errorf(codes.InvalidArgument, "sdk: payload is a %q, want %s", got, md.FullName())
	}
	m := messageType(md).New().Interface()
	if err := proto.Unmarshal(a.GetValue(), m); err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "sdk: decoding %s payload: %v", md.FullName(), err)
	}
	return m, nil
}

// resolver decodes payloads whose type is named only by their type URL:
// events, snapshots and value states. It looks in the linked Go types, then
// in the registered services' files (as dynamic messages).
type resolver struct {
	files *protoregistry.Files
}

func (r *resolver) decode(a *anypb.Any) (proto.Message, error) {
	if a == nil {
		return nil, status.Error(codes.InvalidArgument, "sdk: missing payload")
	}
	name := typeName(a.GetTypeUrl())
	var mt protoreflect.MessageType
	if t, err := protoregistry.GlobalTypes.FindMessageByName(name); err == nil {
		mt = t
	} else if d, err := r.files.FindDescriptorByName(name); err == nil {
		md, ok := d.(protoreflect.MessageDescriptor)
		if !ok {
			return nil, status.Errorf(codes.InvalidArgument, "sdk: payload type %q is not a message", name)
		}
		mt = dynamicpb.NewMessageType(md)
	} else {
		return nil, status.Errorf(codes.InvalidArgument, "sdk: unknown payload type %q", a.GetTypeUrl())
	}
	m := mt.New().Interface()
	if err := proto.Unmarshal(a.GetValue(), m); err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "sdk: decoding %s payload: %v", name, err)
	}
	return m, nil
}

// encode wraps m in an Any with the type URL "type.googleapis.com/<name>".
func encode(m proto.Message) (*anypb.Any, error) {
	if m == nil || !m.ProtoReflect().IsValid() {
		return nil, fmt.Errorf("sdk: nil message")
	}
	b, err := proto.MarshalOptions{Deterministic: true}.Marshal(m)
	if err != nil {
		return nil, fmt.Errorf("sdk: encoding %s: %w", m.ProtoReflect().Descriptor().FullName(), err)
	}
	return &anypb.Any{TypeUrl: typeURLPrefix + string(m.ProtoReflect().Descriptor().FullName()), Value: b}, nil
}

// encodeAs encodes a reply that must be of type md (a method's output); a
// nil reply is the empty message of that type.
func encodeAs(m proto.Message, md protoreflect.MessageDescriptor) (*anypb.Any, error) {
	if m == nil || !m.ProtoReflect().IsValid() {
		m = messageType(md).New().Interface()
	}
	if got := m.ProtoReflect().Descriptor().FullName(); got != md.FullName() {
		return nil, fmt.Errorf("sdk: handler replied with a %s, want %s", got, md.FullName())
	}
	return encode(m)
}

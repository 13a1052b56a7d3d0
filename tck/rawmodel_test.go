package tck

import (
	"context"
	"io"
	"maps"
	"net"
	"slices"
	"strings"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protodesc"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/descriptorpb"

	"github.com/statemesh/statemesh/protocol/functionpb"
	"github.com/statemesh/statemesh/protocol/statemeshpb"
	"github.com/statemesh/statemesh/protocol/tckpb"
)

// rawModel implements ORMapTck and VoteTck directly on the function
// protocol, with no SDK: it shows that the ORMap and Vote checks pass
// against a correct implementation written independently of package sdk
// (so a pass of the Go model is not the SDK agreeing with itself).
type rawModel struct {
	functionpb.UnimplementedDiscoveryServer
	functionpb.UnimplementedCrdtServer
}

func (rawModel) Discover(_ context.Context, info *functionpb.ProxyInfo) (*functionpb.EntitySpec, error) {
	if info.GetProtocolMajorVersion() != 1 {
		return nil, status.Error(codes.FailedPrecondition, "rawmodel: protocol major version must be 1")
	}
	set := &descriptorpb.FileDescriptorSet{}
	for _, fd := range []protoreflect.FileDescriptor{
		descriptorpb.File_google_protobuf_descriptor_proto, statemeshpb.File_statemesh_entity_key_proto, tckpb.File_tck_v1_tck_proto,
	} {
		set.File = append(set.File, protodesc.ToFileDescriptorProto(fd))
	}
	b, err := proto.Marshal(set)
	if err != nil {
		return nil, err
	}
	return &functionpb.EntitySpec{
		Proto: b,
		Entities: []*functionpb.Entity{
			{Model: functionpb.Model_MODEL_CRDT, ServiceName: ormapService},
			{Model: functionpb.Model_MODEL_CRDT, ServiceName: voteService},
		},
		ServiceInfo: &functionpb.ServiceInfo{SupportLibraryName: "tck-rawmodel", ProtocolMajorVersion: 1},
	}, nil
}

type rawState struct {
	entries         map[string]int64
	votesFor, total uint32
	self            bool
}

func (s *rawState) value(service string) *tckpb.CrdtValue {
	if service == voteService {
		return &tckpb.CrdtValue{VotesFor: s.votesFor, TotalVoters: s.total, SelfVote: s.self}
	}
	v := &tckpb.CrdtValue{}
	for _, k := range slices.Sorted(maps.Keys(s.entries)) {
		v.Entries = append(v.Entries, &tckpb.ORMapValue{Key: k, Counter: s.entries[k]})
	}
	return v
}

func (rawModel) Handle(stream functionpb.Crdt_HandleServer) error {
	st := &rawState{entries: make(map[string]int64)}
	var service string
	for {
		in, err := stream.Recv()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
		switch m := in.GetMessage().(type) {
		case *functionpb.CrdtStreamIn_Init:
			service = m.Init.GetServiceName()
			for _, e := range m.Init.GetState().GetOrmap().GetEntries() {
				st.entries[string(e.GetKey())] = e.GetValue().GetPncounter().GetValue()
			}
			if v := m.Init.GetState().GetVote(); v != nil {
				st.votesFor, st.total, st.self = v.GetVotesFor(), v.GetTotalVoters(), v.GetSelfVote()
			}
		case *functionpb.CrdtStreamIn_Changed:
			if d := m.Changed.GetOrmap(); d != nil {
				if d.GetCleared() {
					clear(st.entries)
				}
				for _, k := range d.GetRemoved() {
					delete(st.entries, string(k))
				}
				for _, e := range d.GetUpdated() {
					st.entries[string(e.GetKey())] += e.GetDelta().GetPncounter().GetChange()
				}
				for _, e := range d.GetAdded() {
					st.entries[string(e.GetKey())] = e.GetValue().GetPncounter().GetValue()
				}
			}
			if d := m.Changed.GetVote(); d != nil {
				st.votesFor, st.total = d.GetVotesFor(), d.GetTotalVoters()
			}
		case *functionpb.CrdtStreamIn_Command:
			out, err := st.command(service, m.Command)
			if err != nil {
				return err
			}
			if err := stream.Send(out); err != nil {
				return err
			}
		}
	}
}

func (s *rawState) command(service string, cmd *functionpb.Command) (*functionpb.CrdtStreamOut, error) {
	req := &tckpb.CrdtRequest{}
	if err := cmd.GetPayload().UnmarshalTo(req); err != nil {
		return nil, err
	}
	reply := &functionpb.CrdtReply{CommandId: cmd.GetId()}
	var delta *functionpb.CrdtDelta
	for _, a := range req.GetActions() {
		switch x := a.GetAction().(type) {
		case *tckpb.CrdtAction_Ormap:
			k := x.Ormap.GetKey()
			if delta == nil {
				delta = &functionpb.CrdtDelta{Delta: &functionpb.CrdtDelta_Ormap{Ormap: &functionpb.ORMapDelta{}}}
			}
			d := delta.GetOrmap()
			if x.Ormap.GetRemove() {
				delete(s.entries, k)
				d.Removed = append(d.Removed, []byte(k))
				continue
			}
			n := x.Ormap.GetIncrement()
			if _, ok := s.entries[k]; ok {
				d.Updated = append(d.Updated, &functionpb.ORMapEntryDelta{Key: []byte(k), Delta: pnDelta(n)})
			} else {
				d.Added = append(d.Added, &functionpb.ORMapEntry{Key: []byte(k), Value: pnState(n)})
			}
			s.entries[k] += n
		case *tckpb.CrdtAction_Vote:
			if x.Vote != s.self {
				s.self = x.Vote
				if x.Vote {
					s.votesFor++
				} else {
					s.votesFor--
				}
			}
			s.total = max(s.total, 1)
			delta = &functionpb.CrdtDelta{Delta: &functionpb.CrdtDelta_Vote{Vote: &functionpb.VoteDelta{SelfVote: x.Vote}}}
		case *tckpb.CrdtAction_Delete:
			reply.StateAction = &functionpb.CrdtStateAction{Action: &functionpb.CrdtStateAction_Delete{Delete: &functionpb.CrdtDelete{}}}
		}
	}
	if delta != nil && reply.StateAction == nil {
		reply.StateAction = &functionpb.CrdtStateAction{Action: &functionpb.CrdtStateAction_Update{Update: delta}}
	}
	reply.ClientAction = &functionpb.ClientAction{Action: &functionpb.ClientAction_Reply{Reply: &functionpb.Reply{
		Payload: mustAny(&tckpb.CrdtResponse{State: s.value(service)}),
	}}}
	return &functionpb.CrdtStreamOut{Message: &functionpb.CrdtStreamOut_Reply{Reply: reply}}, nil
}

// TestORMapAndVoteChecksPassACorrectModel runs the suite against rawModel:
// every ORMap and Vote check passes (the others fail: rawModel declares
// nothing else).
func TestORMapAndVoteChecksPassACorrectModel(t *testing.T) {
	if *functionAddr != "" {
		t.Skip("-tck.function set")
	}
	gs := grpc.NewServer()
	functionpb.RegisterDiscoveryServer(gs, rawModel{})
	functionpb.RegisterCrdtServer(gs, rawModel{})
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go gs.Serve(lis)
	t.Cleanup(gs.Stop)
	by := results(t, lis.Addr().String())
	var want []string
	for _, name := range Checks() {
		if strings.HasPrefix(name, "crdt/ormap/") || strings.HasPrefix(name, "crdt/vote/") {
			want = append(want, name)
			if !slices.Contains(by[Pass], name) {
				t.Errorf("%s did not pass against a correct ORMap/Vote model", name)
			}
		}
	}
	if len(want) != 8 {
		t.Errorf("%d ORMap and Vote checks, want 8", len(want))
	}
}

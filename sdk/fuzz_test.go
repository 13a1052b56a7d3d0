package sdk_test

import (
	"context"
	"encoding/binary"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/statemesh/statemesh/protocol/functionpb"
	"github.com/statemesh/statemesh/sdk"
	"github.com/statemesh/statemesh/sdk/sdktest"
)

// frames splits data into length-prefixed (uvarint) frames.
func frames(data []byte) [][]byte {
	var out [][]byte
	for len(data) > 0 && len(out) < 64 {
		n, k := binary.Uvarint(data)
		if k <= 0 || n > uint64(len(data)-k) {
			out = append(out, data)
			break
		}
		out = append(out, data[k:k+int(n)])
		data = data[k+int(n):]
	}
	return out
}

func frame(t testing.TB, msgs ...proto.Message) []byte {
	var out []byte
	for _, m := range msgs {
		b, err := proto.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		out = binary.AppendUvarint(out, uint64(len(b)))
		out = append(out, b...)
	}
	return out
}

// FuzzStreams feeds arbitrary message sequences from a proxy to the three
// entity stream handlers: they must answer (or stop) without panicking, and
// every answer must be a well-formed message.
func FuzzStreams(f *testing.F) {
	cmd := func(id int64, name string, m proto.Message) *functionpb.Command {
		return &functionpb.Command{Id: id, Name: name, Payload: sdktest.Any(f, m), Streamed: id%2 == 0}
	}
	f.Add(frame(f,
		&functionpb.CrdtStreamIn{Message: &functionpb.CrdtStreamIn_Init{Init: &functionpb.CrdtInit{ServiceName: "sdk.test.Tags"}}},
		&functionpb.CrdtStreamIn{Message: &functionpb.CrdtStreamIn_Command{Command: cmd(2, "Watch", newMsg("", "", 0))}},
		&functionpb.CrdtStreamIn{Message: &functionpb.CrdtStreamIn_Command{Command: cmd(3, "Add", newMsg("", "end", 0))}},
	))
	f.Add(frame(f,
		&functionpb.CrdtStreamIn{Message: &functionpb.CrdtStreamIn_Init{Init: &functionpb.CrdtInit{ServiceName: "sdk.test.Votes"}}},
		&functionpb.CrdtStreamIn{Message: &functionpb.CrdtStreamIn_Changed{Changed: &functionpb.CrdtDelta{Delta: &functionpb.CrdtDelta_Pncounter{Pncounter: &functionpb.PNCounterDelta{Change: 1}}}}},
		&functionpb.CrdtStreamIn{Message: &functionpb.CrdtStreamIn_Command{Command: cmd(1, "Inc", newMsg("", "ALL", 2))}},
	))
	pn := func(v int64) *functionpb.CrdtState {
		return &functionpb.CrdtState{State: &functionpb.CrdtState_Pncounter{Pncounter: &functionpb.PNCounterState{Value: v}}}
	}
	f.Add(frame(f,
		&functionpb.CrdtStreamIn{Message: &functionpb.CrdtStreamIn_Init{Init: &functionpb.CrdtInit{ServiceName: "sdk.test.Stock", State: &functionpb.CrdtState{
			State: &functionpb.CrdtState_Ormap{Ormap: &functionpb.ORMapState{Entries: []*functionpb.ORMapEntry{
				{Key: []byte("a"), Value: pn(1)},
				{Key: []byte("m"), Value: &functionpb.CrdtState{State: &functionpb.CrdtState_Ormap{Ormap: &functionpb.ORMapState{Entries: []*functionpb.ORMapEntry{
					{Key: []byte("s"), Value: &functionpb.CrdtState{State: &functionpb.CrdtState_Orset{Orset: &functionpb.ORSetState{Items: [][]byte{[]byte("x")}}}}},
				}}}}},
			}}}}}}},
		&functionpb.CrdtStreamIn{Message: &functionpb.CrdtStreamIn_Changed{Changed: &functionpb.CrdtDelta{Delta: &functionpb.CrdtDelta_Ormap{Ormap: &functionpb.ORMapDelta{
			Removed: [][]byte{[]byte("m")},
			Updated: []*functionpb.ORMapEntryDelta{{Key: []byte("a"), Delta: &functionpb.CrdtDelta{Delta: &functionpb.CrdtDelta_Pncounter{Pncounter: &functionpb.PNCounterDelta{Change: 2}}}}},
			Added:   []*functionpb.ORMapEntry{{Key: []byte("t"), Value: &functionpb.CrdtState{State: &functionpb.CrdtState_Vote{Vote: &functionpb.VoteState{VotesFor: 1, TotalVoters: 2}}}}},
		}}}}},
		&functionpb.CrdtStreamIn{Message: &functionpb.CrdtStreamIn_Command{Command: cmd(1, "Add", newMsg("", "b", 3))}},
		&functionpb.CrdtStreamIn{Message: &functionpb.CrdtStreamIn_Command{Command: cmd(3, "Tag", newMsg("", "a", 0))}},
		&functionpb.CrdtStreamIn{Message: &functionpb.CrdtStreamIn_Command{Command: cmd(5, "Remove", newMsg("", "a", 0))}},
	))
	f.Add(frame(f,
		&functionpb.CrdtStreamIn{Message: &functionpb.CrdtStreamIn_Init{Init: &functionpb.CrdtInit{ServiceName: "sdk.test.Ballot", State: &functionpb.CrdtState{
			State: &functionpb.CrdtState_Vote{Vote: &functionpb.VoteState{VotesFor: 1, TotalVoters: 3}}}}}},
		&functionpb.CrdtStreamIn{Message: &functionpb.CrdtStreamIn_Command{Command: cmd(1, "Cast", newMsg("", "", 1))}},
		&functionpb.CrdtStreamIn{Message: &functionpb.CrdtStreamIn_Changed{Changed: &functionpb.CrdtDelta{Delta: &functionpb.CrdtDelta_Vote{Vote: &functionpb.VoteDelta{SelfVote: true, VotesFor: 2, TotalVoters: 3}}}}},
		&functionpb.CrdtStreamIn{Message: &functionpb.CrdtStreamIn_Command{Command: cmd(3, "Get", newMsg("", "", 0))}},
	))
	f.Add(frame(f,
		&functionpb.EventSourcedStreamIn{Message: &functionpb.EventSourcedStreamIn_Init{Init: &functionpb.EventSourcedInit{ServiceName: "sdk.test.Ledger"}}},
		&functionpb.EventSourcedStreamIn{Message: &functionpb.EventSourcedStreamIn_Command{Command: cmd(1, "Add", newMsg("", "twice", 2))}},
	))
	f.Add(frame(f,
		&functionpb.ValueEntityStreamIn{Message: &functionpb.ValueEntityStreamIn_Init{Init: &functionpb.ValueEntityInit{ServiceName: "sdk.test.Doc"}}},
		&functionpb.ValueEntityStreamIn{Message: &functionpb.ValueEntityStreamIn_Command{Command: cmd(1, "Put", newMsg("", "x", 0))}},
	))
	f.Fuzz(func(t *testing.T, data []byte) {
		svc := allModels(t)
		ctx := context.Background()
		es, value, crdt := sdk.EventSourcedStepper(svc), sdk.ValueStepper(svc), sdk.CrdtStepper(svc)
		esDone, valueDone, crdtDone := false, false, false
		for _, b := range frames(data) {
			if in := new(functionpb.EventSourcedStreamIn); !esDone && proto.Unmarshal(b, in) == nil {
				outs, stop := es(ctx, in)
				for _, o := range outs {
					if o.GetMessage() == nil {
						t.Fatalf("empty event-sourced answer to %v", in)
					}
				}
				esDone = stop != nil
			}
			if in := new(functionpb.ValueEntityStreamIn); !valueDone && proto.Unmarshal(b, in) == nil {
				outs, stop := value(ctx, in)
				for _, o := range outs {
					if o.GetMessage() == nil {
						t.Fatalf("empty value answer to %v", in)
					}
				}
				valueDone = stop != nil
			}
			if in := new(functionpb.CrdtStreamIn); !crdtDone && proto.Unmarshal(b, in) == nil {
				outs, stop := crdt(ctx, in)
				for _, o := range outs {
					if o.GetMessage() == nil {
						t.Fatalf("empty CRDT answer to %v", in)
					}
				}
				crdtDone = stop != nil
			}
		}
	})
}

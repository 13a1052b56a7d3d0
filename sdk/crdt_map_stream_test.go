package sdk_test

import (
	"fmt"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/proto"

	"github.com/statemesh/statemesh/protocol/functionpb"
	"github.com/statemesh/statemesh/sdk"
	"github.com/statemesh/statemesh/sdk/sdktest"
)

// stock is an ORMap: Add adds n to the PNCounter at key text, Tag adds
// "x" to the ORSet at key text, Remove removes key text; every command
// answers the map as "key=value,..." and its length.
type stock struct{ m *sdk.ORMap }

func (s *stock) CRDT() sdk.Crdt { return s.m }

func (s *stock) HandleCommand(ctx *sdk.CrdtContext, cmd proto.Message) (proto.Message, error) {
	key := []byte(fieldText(cmd))
	switch ctx.CommandName() {
	case "Add":
		c, err := sdk.GetOrCreate(s.m, key, sdk.NewPNCounter)
		if err != nil {
			return nil, sdk.Fail(codes.FailedPrecondition, "%v", err)
		}
		c.Increment(fieldN(cmd))
	case "Tag":
		set, err := sdk.GetOrCreate(s.m, key, sdk.NewORSet)
		if err != nil {
			return nil, sdk.Fail(codes.FailedPrecondition, "%v", err)
		}
		set.Add([]byte("x"))
	case "Remove":
		s.m.Remove(key)
	}
	var parts []string
	for _, k := range s.m.Keys() {
		switch v := s.m.Get(k).(type) {
		case *sdk.PNCounter:
			parts = append(parts, fmt.Sprintf("%s=%d", k, v.Value()))
		case *sdk.ORSet:
			parts = append(parts, fmt.Sprintf("%s=%q", k, v.Elements()))
		default:
			parts = append(parts, fmt.Sprintf("%s=%T", k, v))
		}
	}
	return newMsg("", strings.Join(parts, ","), int64(s.m.Len())), nil
}

// ballot is a Vote: Cast votes n != 0; the reply is "self for/voters" and
// n is 1 when a majority votes for.
type ballot struct{ v *sdk.Vote }

func (b *ballot) CRDT() sdk.Crdt { return b.v }

func (b *ballot) HandleCommand(ctx *sdk.CrdtContext, cmd proto.Message) (proto.Message, error) {
	if ctx.CommandName() == "Cast" {
		b.v.Vote(fieldN(cmd) != 0)
	}
	maj := int64(0)
	if b.v.Majority() {
		maj = 1
	}
	return newMsg("", fmt.Sprintf("%v %d/%d", b.v.SelfVote(), b.v.VotesFor(), b.v.Voters()), maj), nil
}

func TestCrdtORMap(t *testing.T) {
	c := openCrdt(t, &functionpb.CrdtInit{ServiceName: "sdk.test.Stock", EntityId: "s1", State: &functionpb.CrdtState{
		State: &functionpb.CrdtState_Ormap{Ormap: &functionpb.ORMapState{Entries: []*functionpb.ORMapEntry{
			{Key: []byte("a"), Value: &functionpb.CrdtState{State: &functionpb.CrdtState_Pncounter{Pncounter: &functionpb.PNCounterState{Value: 1}}}},
		}}},
	}})
	r, m := c.reply(c.command(sdktest.Command(t, 1, "s1", "Add", newMsg("s1", "b", 2))), 1)
	want := &functionpb.CrdtDelta{Delta: &functionpb.CrdtDelta_Ormap{Ormap: &functionpb.ORMapDelta{Added: []*functionpb.ORMapEntry{
		{Key: []byte("b"), Value: &functionpb.CrdtState{State: &functionpb.CrdtState_Pncounter{Pncounter: &functionpb.PNCounterState{Value: 2}}}},
	}}}}
	if fieldText(m) != "a=1,b=2" || !proto.Equal(r.GetStateAction().GetUpdate(), want) {
		t.Fatalf("Add b 2: %q, delta %v", fieldText(m), r.GetStateAction())
	}
	// Another replica's change.
	c.changed(&functionpb.CrdtDelta{Delta: &functionpb.CrdtDelta_Ormap{Ormap: &functionpb.ORMapDelta{
		Updated: []*functionpb.ORMapEntryDelta{{Key: []byte("a"), Delta: &functionpb.CrdtDelta{Delta: &functionpb.CrdtDelta_Pncounter{Pncounter: &functionpb.PNCounterDelta{Change: 4}}}}},
		Added:   []*functionpb.ORMapEntry{{Key: []byte("t"), Value: &functionpb.CrdtState{State: &functionpb.CrdtState_Orset{Orset: &functionpb.ORSetState{Items: [][]byte{[]byte("y")}}}}}},
	}}})
	r, m = c.reply(c.command(sdktest.Command(t, 2, "s1", "Remove", newMsg("s1", "b", 0))), 2)
	want = &functionpb.CrdtDelta{Delta: &functionpb.CrdtDelta_Ormap{Ormap: &functionpb.ORMapDelta{Removed: [][]byte{[]byte("b")}}}}
	if fieldText(m) != `a=5,t=["y"]` || !proto.Equal(r.GetStateAction().GetUpdate(), want) {
		t.Fatalf("Remove b: %q, delta %v", fieldText(m), r.GetStateAction())
	}
	// A key of another type fails the command, and changes nothing.
	out := c.command(sdktest.Command(t, 3, "s1", "Tag", newMsg("s1", "a", 0)))
	wantFailure(t, out.GetReply().GetClientAction().GetFailure(), 3, codes.FailedPrecondition)
	r, m = c.reply(c.command(sdktest.Command(t, 4, "s1", "Tag", newMsg("s1", "t", 0))), 4)
	if fieldText(m) != `a=5,t=["x" "y"]` || r.GetStateAction().GetUpdate().GetOrmap().GetUpdated()[0].GetDelta().GetOrset() == nil {
		t.Fatalf("Tag t: %q, delta %v", fieldText(m), r.GetStateAction())
	}
}

func TestCrdtVote(t *testing.T) {
	c := openCrdt(t, &functionpb.CrdtInit{ServiceName: "sdk.test.Ballot", EntityId: "b1", State: &functionpb.CrdtState{
		State: &functionpb.CrdtState_Vote{Vote: &functionpb.VoteState{VotesFor: 1, TotalVoters: 3}},
	}})
	r, m := c.reply(c.command(sdktest.Command(t, 1, "b1", "Cast", newMsg("b1", "", 1))), 1)
	if fieldText(m) != "true 2/3" || fieldN(m) != 1 || r.GetStateAction().GetUpdate().GetVote() == nil || !r.GetStateAction().GetUpdate().GetVote().GetSelfVote() {
		t.Fatalf("Cast: %q, delta %v", fieldText(m), r.GetStateAction())
	}
	c.changed(&functionpb.CrdtDelta{Delta: &functionpb.CrdtDelta_Vote{Vote: &functionpb.VoteDelta{SelfVote: true, VotesFor: 2, TotalVoters: 4}}})
	if _, m := c.reply(c.command(sdktest.Command(t, 2, "b1", "Get", newMsg("b1", "", 0))), 2); fieldText(m) != "true 2/4" || fieldN(m) != 0 {
		t.Fatalf("after a new voter: %q", fieldText(m))
	}
}

func TestCrdtMapAndVoteFatal(t *testing.T) {
	dup := &functionpb.CrdtState{State: &functionpb.CrdtState_Ormap{Ormap: &functionpb.ORMapState{Entries: []*functionpb.ORMapEntry{
		{Key: []byte("a"), Value: &functionpb.CrdtState{State: &functionpb.CrdtState_Flag{Flag: &functionpb.FlagState{}}}},
		{Key: []byte("a"), Value: &functionpb.CrdtState{State: &functionpb.CrdtState_Flag{Flag: &functionpb.FlagState{}}}},
	}}}}
	for name, msgs := range map[string][]*functionpb.CrdtStreamIn{
		"duplicate map key": {{Message: &functionpb.CrdtStreamIn_Init{Init: &functionpb.CrdtInit{ServiceName: "sdk.test.Stock", State: dup}}}},
		"update of an absent key": {
			{Message: &functionpb.CrdtStreamIn_Init{Init: &functionpb.CrdtInit{ServiceName: "sdk.test.Stock"}}},
			{Message: &functionpb.CrdtStreamIn_Changed{Changed: &functionpb.CrdtDelta{Delta: &functionpb.CrdtDelta_Ormap{Ormap: &functionpb.ORMapDelta{
				Updated: []*functionpb.ORMapEntryDelta{{Key: []byte("a"), Delta: &functionpb.CrdtDelta{Delta: &functionpb.CrdtDelta_Flag{Flag: &functionpb.FlagDelta{}}}}},
			}}}}},
		},
		"impossible tally": {{Message: &functionpb.CrdtStreamIn_Init{Init: &functionpb.CrdtInit{ServiceName: "sdk.test.Ballot", State: &functionpb.CrdtState{
			State: &functionpb.CrdtState_Vote{Vote: &functionpb.VoteState{VotesFor: 2, TotalVoters: 1}}}}}}},
	} {
		t.Run(name, func(t *testing.T) {
			c := openCrdt(t, nil)
			for _, m := range msgs {
				c.send(m)
			}
			wantStreamFailure(t, func() (*functionpb.Failure, error) {
				out, err := c.s.Recv()
				return out.GetFailure(), err
			})
		})
	}
}

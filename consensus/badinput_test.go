package consensus

import (
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/statemesh/statemesh/protocol/consensuspb"
)

// TestServerRefusesBadRequests sends malformed forwarded requests to the
// Consensus service: each is refused with a clear code and nothing is
// applied.
func TestServerRefusesBadRequests(t *testing.T) {
	c := newCluster(t, 1, 1, map[string]Handler{"log": appendHandler})
	ctx := ctxT(t, 10*time.Second)
	srv := NewServer()
	if _, err := srv.Command(ctx, &consensuspb.CommandRequest{}); status.Code(err) != codes.Unavailable {
		t.Fatalf("unbound server: %v, want Unavailable", err)
	}
	h := c.nodes[0].h
	srv.Bind(h)
	ent := &consensuspb.Entity{Type: "log", Id: "x"}
	commands := map[string]*consensuspb.CommandRequest{
		"no hops":       {Entity: ent, Command: []byte("a"), RequestId: []byte("r")},
		"too many hops": {Entity: ent, Command: []byte("a"), RequestId: []byte("r"), Hops: 99},
		"no entity":     {Command: []byte("a"), RequestId: []byte("r"), Hops: 1},
		"empty id":      {Entity: &consensuspb.Entity{Type: "log"}, Command: []byte("a"), RequestId: []byte("r"), Hops: 1},
		"no request id": {Entity: ent, Command: []byte("a"), Hops: 1},
		"huge command":  {Entity: ent, Command: make([]byte, MaxCommandBytes+1), RequestId: []byte("r"), Hops: 1},
		"huge request":  {Entity: ent, Command: []byte("a"), RequestId: make([]byte, MaxRequestIDBytes+1), Hops: 1},
	}
	for name, req := range commands {
		resp, err := srv.Command(ctx, req)
		if err != nil || resp.Code != consensuspb.Code_CODE_INVALID || resp.Message == "" {
			t.Errorf("%s: %v %v, want CODE_INVALID with a message", name, resp, err)
		}
	}
	if resp, err := srv.Value(ctx, &consensuspb.ValueRequest{Entity: ent, Op: 7, Hops: 1}); err != nil || resp.Code != consensuspb.Code_CODE_INVALID {
		t.Errorf("unknown value op: %v %v", resp, err)
	}
	if resp, err := srv.Load(ctx, &consensuspb.LoadRequest{Hops: 1}); err != nil || resp.Code != consensuspb.Code_CODE_INVALID {
		t.Errorf("load without entity: %v %v", resp, err)
	}
	if _, err := srv.StartReplica(ctx, &consensuspb.StartReplicaRequest{Shard: 1, ReplicaId: h.ReplicaID() + 1}); status.Code(err) != codes.InvalidArgument {
		t.Errorf("start with another replica id: %v", err)
	}
	if _, err := srv.StartReplica(ctx, &consensuspb.StartReplicaRequest{Shard: 2, ReplicaId: h.ReplicaID()}); status.Code(err) != codes.InvalidArgument {
		t.Errorf("start of a shard out of range: %v", err)
	}
	st, err := h.Load(ctx, Entity{Type: "log", ID: "x"})
	if err != nil || st.Seq != 0 {
		t.Fatalf("after refused requests: %+v %v, want nothing applied", st, err)
	}
	// A well-formed forwarded command works.
	resp, err := srv.Command(ctx, &consensuspb.CommandRequest{Entity: ent, Command: []byte("a"), RequestId: []byte("r"), Hops: 1})
	if err != nil || resp.Code != consensuspb.Code_CODE_OK || resp.Seq != 1 {
		t.Fatalf("valid forwarded command: %v %v", resp, err)
	}
}

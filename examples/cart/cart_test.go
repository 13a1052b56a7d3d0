package cart_test

import (
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/proto"

	"github.com/statemesh/statemesh/examples/cart"
	"github.com/statemesh/statemesh/examples/cart/cartpb"
	"github.com/statemesh/statemesh/protocol/functionpb"
	"github.com/statemesh/statemesh/sdk"
	"github.com/statemesh/statemesh/sdk/sdktest"
)

func open(t *testing.T, snap *functionpb.EventSourcedSnapshot, events ...proto.Message) *sdktest.ESEntity {
	t.Helper()
	svc := sdk.New()
	if err := cart.Register(svc); err != nil {
		t.Fatal(err)
	}
	return sdktest.Start(t, svc).EventSourcedEntity(t, cart.ServiceName, "k1", snap, events...)
}

func items(t *testing.T, r *functionpb.EventSourcedReply) []*cartpb.LineItem {
	t.Helper()
	if r.GetClientAction().GetReply() == nil {
		t.Fatalf("want a reply, got %v", r)
	}
	return sdktest.Decode(t, r.GetClientAction().GetReply().GetPayload(), &cartpb.CartItems{}).GetItems()
}

func item(id, name string, q int32) *cartpb.LineItem {
	return &cartpb.LineItem{ProductId: id, Name: name, Quantity: q}
}

func same(got []*cartpb.LineItem, want ...*cartpb.LineItem) bool {
	if len(got) != len(want) {
		return false
	}
	for i := range got {
		if !proto.Equal(got[i], want[i]) {
			return false
		}
	}
	return true
}

func TestCart(t *testing.T) {
	s := open(t, nil)
	if got := items(t, s.Call(1, "GetCart", &cartpb.GetCartRequest{CartId: "k1"})); len(got) != 0 {
		t.Fatalf("new cart: %v", got)
	}
	r := s.Call(2, "AddItem", &cartpb.AddItemRequest{CartId: "k1", ProductId: "p1", Name: "apple", Quantity: 2})
	if got := items(t, r); !same(got, item("p1", "apple", 2)) || len(r.GetEvents()) != 1 {
		t.Fatalf("add p1: %v", r)
	}
	if ev := sdktest.Decode(t, r.GetEvents()[0], &cartpb.ItemAdded{}); !proto.Equal(ev.GetItem(), item("p1", "apple", 2)) {
		t.Fatalf("event %v", ev)
	}
	s.Call(3, "AddItem", &cartpb.AddItemRequest{CartId: "k1", ProductId: "p2", Name: "pear", Quantity: 1})
	// Adding a product again adds to its quantity, in place.
	r = s.Call(4, "AddItem", &cartpb.AddItemRequest{CartId: "k1", ProductId: "p1", Name: "apple", Quantity: 3})
	if got := items(t, r); !same(got, item("p1", "apple", 5), item("p2", "pear", 1)) {
		t.Fatalf("add p1 again: %v", got)
	}
	// Bad input and unknown products fail and emit nothing.
	for i, c := range []struct {
		name string
		req  proto.Message
		code codes.Code
	}{
		{"AddItem", &cartpb.AddItemRequest{CartId: "k1", ProductId: "p3", Quantity: 0}, codes.InvalidArgument},
		{"AddItem", &cartpb.AddItemRequest{CartId: "k1", Quantity: 1}, codes.InvalidArgument},
		{"RemoveItem", &cartpb.RemoveItemRequest{CartId: "k1", ProductId: "p9"}, codes.NotFound},
	} {
		r := s.Call(int64(5+i), c.name, c.req)
		if f := r.GetClientAction().GetFailure(); codes.Code(f.GetGrpcStatusCode()) != c.code || len(r.GetEvents()) != 0 {
			t.Fatalf("%s %v: %v, want %v", c.name, c.req, r, c.code)
		}
	}
	r = s.Call(8, "RemoveItem", &cartpb.RemoveItemRequest{CartId: "k1", ProductId: "p1"})
	if got := items(t, r); !same(got, item("p2", "pear", 1)) || len(r.GetEvents()) != 1 {
		t.Fatalf("remove p1: %v", r)
	}
	if ev := sdktest.Decode(t, r.GetEvents()[0], &cartpb.ItemRemoved{}); ev.GetProductId() != "p1" {
		t.Fatalf("event %v", ev)
	}
	if got := items(t, s.Call(9, "GetCart", &cartpb.GetCartRequest{CartId: "k1"})); !same(got, item("p2", "pear", 1)) {
		t.Fatalf("get: %v", got)
	}
}

func TestCartRecoversAndSnapshots(t *testing.T) {
	snap := &functionpb.EventSourcedSnapshot{
		SnapshotSequence: cart.SnapshotInterval - 3,
		Snapshot:         sdktest.Any(t, &cartpb.CartSnapshot{Items: []*cartpb.LineItem{item("p1", "apple", 1), item("p2", "pear", 1)}}),
	}
	s := open(t, snap,
		&cartpb.ItemAdded{Item: item("p3", "plum", 4)},
		&cartpb.ItemRemoved{ProductId: "p1"})
	if got := items(t, s.Call(1, "GetCart", &cartpb.GetCartRequest{CartId: "k1"})); !same(got, item("p2", "pear", 1), item("p3", "plum", 4)) {
		t.Fatalf("recovered: %v", got)
	}
	r := s.Call(2, "AddItem", &cartpb.AddItemRequest{CartId: "k1", ProductId: "p2", Name: "pear", Quantity: 1})
	got := sdktest.Decode(t, r.GetSnapshot(), &cartpb.CartSnapshot{})
	if !same(got.GetItems(), item("p2", "pear", 2), item("p3", "plum", 4)) {
		t.Fatalf("snapshot at %d: %v", cart.SnapshotInterval, got)
	}
}

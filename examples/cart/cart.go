// Package cart is the cart example: an event-sourced shopping cart (see
// cart.proto).
package cart

import (
	"fmt"
	"slices"

	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/proto"

	"github.com/statemesh/statemesh/examples/cart/cartpb"
	"github.com/statemesh/statemesh/sdk"
)

// ServiceName is the cart's fully qualified gRPC service name.
const ServiceName = "statemesh.examples.cart.Cart"

// SnapshotInterval is how many events separate two snapshots.
const SnapshotInterval = 50

// Register registers the cart entity on s.
func Register(s *sdk.Service) error {
	sd := cartpb.File_cart_cart_proto.Services().ByName("Cart")
	return s.RegisterEventSourced(sd, func(string) sdk.EventSourcedEntity { return &entity{} },
		sdk.SnapshotEvery(SnapshotInterval))
}

// entity is one cart: its line items in the order they were first added.
type entity struct {
	items []*cartpb.LineItem
}

// apply returns items after ev; it does not modify items. HandleEvent and
// the command replies (which must show the state the command's events will
// produce) both use it.
func apply(items []*cartpb.LineItem, ev proto.Message) ([]*cartpb.LineItem, error) {
	switch e := ev.(type) {
	case *cartpb.ItemAdded:
		it := e.GetItem()
		out := slices.Clone(items)
		if i := find(items, it.GetProductId()); i >= 0 {
			out[i] = &cartpb.LineItem{ProductId: it.GetProductId(), Name: it.GetName(), Quantity: items[i].GetQuantity() + it.GetQuantity()}
			return out, nil
		}
		return append(out, proto.CloneOf(it)), nil
	case *cartpb.ItemRemoved:
		i := find(items, e.GetProductId())
		if i < 0 {
			return items, nil
		}
		return slices.Delete(slices.Clone(items), i, i+1), nil
	default:
		return nil, fmt.Errorf("cart: unexpected event %T", ev)
	}
}

// find is the index of the product's line item, or -1.
func find(items []*cartpb.LineItem, productID string) int {
	return slices.IndexFunc(items, func(it *cartpb.LineItem) bool { return it.GetProductId() == productID })
}

// HandleCommand answers AddItem, RemoveItem and GetCart with the cart after
// the command. Events are applied after it returns, so a write replies
// with the state it will produce.
func (e *entity) HandleCommand(ctx *sdk.EventSourcedContext, cmd proto.Message) (proto.Message, error) {
	var ev proto.Message
	switch c := cmd.(type) {
	case *cartpb.AddItemRequest:
		switch {
		case c.GetProductId() == "":
			return nil, sdk.Fail(codes.InvalidArgument, "cart: no product_id")
		case c.GetQuantity() <= 0:
			return nil, sdk.Fail(codes.InvalidArgument, "cart: quantity %d of %s is not positive", c.GetQuantity(), c.GetProductId())
		}
		ev = &cartpb.ItemAdded{Item: &cartpb.LineItem{ProductId: c.GetProductId(), Name: c.GetName(), Quantity: c.GetQuantity()}}
	case *cartpb.RemoveItemRequest:
		if find(e.items, c.GetProductId()) < 0 {
			return nil, sdk.Fail(codes.NotFound, "cart %s holds no %q", ctx.EntityID(), c.GetProductId())
		}
		ev = &cartpb.ItemRemoved{ProductId: c.GetProductId()}
	case *cartpb.GetCartRequest:
		return &cartpb.CartItems{Items: e.items}, nil
	default:
		return nil, sdk.Fail(codes.Unimplemented, "cart: unexpected command %s", ctx.CommandName())
	}
	after, err := apply(e.items, ev)
	if err != nil {
		return nil, err
	}
	ctx.Emit(ev)
	return &cartpb.CartItems{Items: after}, nil
}

// HandleEvent applies an ItemAdded or ItemRemoved.
func (e *entity) HandleEvent(ev proto.Message) error {
	items, err := apply(e.items, ev)
	if err != nil {
		return err
	}
	e.items = items
	return nil
}

// Snapshot returns the line items.
func (e *entity) Snapshot() (proto.Message, error) {
	return &cartpb.CartSnapshot{Items: e.items}, nil
}

// HandleSnapshot restores the line items.
func (e *entity) HandleSnapshot(snap proto.Message) error {
	s, ok := snap.(*cartpb.CartSnapshot)
	if !ok {
		return fmt.Errorf("cart: unexpected snapshot %T", snap)
	}
	e.items = s.GetItems()
	return nil
}

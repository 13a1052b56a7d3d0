package main

import (
	"testing"

	"google.golang.org/genproto/googleapis/api/annotations"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"

	"github.com/statemesh/statemesh/examples"
	"github.com/statemesh/statemesh/examples/cart/cartpb"
	"github.com/statemesh/statemesh/examples/counter/counterpb"
	"github.com/statemesh/statemesh/examples/register/registerpb"
	"github.com/statemesh/statemesh/examples/sets/setspb"
	"github.com/statemesh/statemesh/protocol/functionpb"
	"github.com/statemesh/statemesh/sdk"
	"github.com/statemesh/statemesh/sdk/sdktest"
)

// TestRoutes checks the examples' google.api.http options against the
// HTTP contract (ARCHITECTURE.md), read through genproto's HttpRule: the
// examples' generated code imports genproto's google/api/annotations.proto
// rather than registering a copy of it (which would panic at init, this
// binary linking all four examples and genproto).
func TestRoutes(t *testing.T) {
	fd, err := protoregistry.GlobalFiles.FindFileByPath("google/api/annotations.proto")
	if err != nil || fd != annotations.File_google_api_annotations_proto {
		t.Fatalf("google/api/annotations.proto is not genproto's: %v, %v", fd, err)
	}
	type route struct{ verb, path string }
	want := map[protoreflect.FullName]route{
		"statemesh.examples.counter.Counter.Increment":       {"POST", "/counters/{id}/increment"},
		"statemesh.examples.counter.Counter.Decrement":       {"POST", "/counters/{id}/decrement"},
		"statemesh.examples.counter.Counter.Get":             {"GET", "/counters/{id}"},
		"statemesh.examples.register.Register.Set":           {"PUT", "/registers/{id}"},
		"statemesh.examples.register.Register.Get":           {"GET", "/registers/{id}"},
		"statemesh.examples.register.Register.CompareAndSet": {"POST", "/registers/{id}/cas"},
		"statemesh.examples.sets.Set.Add":                    {"POST", "/sets/{id}/add"},
		"statemesh.examples.sets.Set.Remove":                 {"POST", "/sets/{id}/remove"},
		"statemesh.examples.sets.Set.Get":                    {"GET", "/sets/{id}"},
		"statemesh.examples.sets.Set.Watch":                  {"GET", "/sets/{id}/watch"},
		"statemesh.examples.cart.Cart.AddItem":               {"POST", "/carts/{cart_id}/items"},
		"statemesh.examples.cart.Cart.RemoveItem":            {"POST", "/carts/{cart_id}/items/{product_id}/remove"},
		"statemesh.examples.cart.Cart.GetCart":               {"GET", "/carts/{cart_id}"},
	}
	seen := 0
	for _, f := range []protoreflect.FileDescriptor{
		counterpb.File_counter_counter_proto, registerpb.File_register_register_proto,
		setspb.File_sets_sets_proto, cartpb.File_cart_cart_proto,
	} {
		for i := range f.Services().Len() {
			ms := f.Services().Get(i).Methods()
			for j := range ms.Len() {
				md := ms.Get(j)
				rule, _ := proto.GetExtension(md.Options(), annotations.E_Http).(*annotations.HttpRule)
				var got route
				switch {
				case rule.GetGet() != "":
					got = route{"GET", rule.GetGet()}
				case rule.GetPut() != "":
					got = route{"PUT", rule.GetPut()}
				case rule.GetPost() != "":
					got = route{"POST", rule.GetPost()}
				}
				if w, ok := want[md.FullName()]; !ok || got != w {
					t.Errorf("%s: route %v, want %v", md.FullName(), got, w)
				}
				if body := rule.GetBody(); (got.verb == "GET") != (body == "") {
					t.Errorf("%s %v: body %q", md.FullName(), got, body)
				}
				seen++
			}
		}
	}
	if seen != len(want) {
		t.Errorf("%d methods, want %d", seen, len(want))
	}
}

// TestRegisterAll checks that the four examples register side by side and
// that discovery describes them all.
func TestRegisterAll(t *testing.T) {
	svc := sdk.New()
	if err := examples.Register(svc); err != nil {
		t.Fatal(err)
	}
	spec, err := sdktest.Start(t, svc).Discovery.Discover(sdktest.Context(t), &functionpb.ProxyInfo{ProtocolMajorVersion: sdk.ProtocolMajorVersion, ProxyName: "test"})
	if err != nil {
		t.Fatal(err)
	}
	if n := len(spec.GetEntities()); n != 4 {
		t.Fatalf("%d entities, want 4: %v", n, spec.GetEntities())
	}
}

package main

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"
)

// TestDemo starts what `statemesh demo` starts (the example functions and
// three nodes in this process) and drives the examples over HTTP/JSON
// through different nodes, on the REST routes of the architecture's HTTP
// contract and on the POST /{package.Service}/{Method} fallback: a CRDT
// counter written with MAJORITY on one node and read on another, the
// event-sourced register's compare-and-set refusing a stale expectation
// with 409, an ORSet, and the event-sourced cart.
func TestDemo(t *testing.T) {
	d, err := startDemo(t.TempDir(), 3, slog.New(slog.DiscardHandler), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	defer d.close()
	do := func(node int, method, path, body string) (int, map[string]any) {
		t.Helper()
		var rd io.Reader
		if body != "" {
			rd = strings.NewReader(body)
		}
		req, err := http.NewRequest(method, "http://"+d.nodes[node].APIHTTPAddr()+path, rd)
		if err != nil {
			t.Fatal(err)
		}
		if body != "" {
			req.Header.Set("Content-Type", "application/json")
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var out map[string]any
		b, _ := io.ReadAll(resp.Body)
		_ = json.Unmarshal(b, &out)
		return resp.StatusCode, out
	}
	post := func(node int, path, body string) (int, map[string]any) {
		t.Helper()
		return do(node, http.MethodPost, path, body)
	}
	// eventually polls GET path on node until ok holds for the reply.
	eventually := func(node int, path string, ok func(map[string]any) bool) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for {
			code, out := do(node, http.MethodGet, path, "")
			if code == 200 && ok(out) {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("GET %s on n%d: %d %v", path, node+1, code, out)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}

	// The counter, on the contract's routes: int64 comes back as a string.
	if code, out := post(0, "/counters/c1/increment", `{"value":5,"consistency":"MAJORITY"}`); code != 200 || out["value"] != "5" {
		t.Fatalf("increment: %d %v", code, out)
	}
	eventually(2, "/counters/c1", func(out map[string]any) bool { return out["value"] == "5" })
	if code, out := post(1, "/counters/c1/decrement", `{"value":2}`); code != 200 {
		t.Fatalf("decrement: %d %v", code, out)
	}
	eventually(2, "/counters/c1", func(out map[string]any) bool { return out["value"] == "3" })
	// ... and on the fallback routes.
	const counter, reg = "/statemesh.examples.counter.Counter/", "/statemesh.examples.register.Register/"
	if code, out := post(0, counter+"Increment", `{"id":"c2","value":5,"consistency":"MAJORITY"}`); code != 200 || out["value"] != "5" {
		t.Fatalf("fallback increment: %d %v", code, out)
	}
	if code, out := post(1, counter+"Decrement", `{"id":"c2","value":2}`); code != 200 {
		t.Fatalf("fallback decrement: %d %v", code, out)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		code, out := post(2, counter+"Get", `{"id":"c2"}`)
		if code == 200 && out["value"] == "3" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("fallback counter on n3: %d %v, want 3", code, out)
		}
		time.Sleep(20 * time.Millisecond)
	}

	// The register, on the contract's routes.
	if code, out := do(0, http.MethodPut, "/registers/r1", `{"value":"hello"}`); code != 200 || out["value"] != "hello" || out["version"] != "1" {
		t.Fatalf("put: %d %v", code, out)
	}
	if code, out := do(1, http.MethodGet, "/registers/r1", ""); code != 200 || out["value"] != "hello" || out["version"] != "1" {
		t.Fatalf("get: %d %v", code, out)
	}
	if code, out := post(2, "/registers/r1/cas", `{"expected":"stale","value":"x"}`); code != http.StatusConflict {
		t.Fatalf("stale cas: %d %v, want 409", code, out)
	}
	if code, out := post(2, "/registers/r1/cas", `{"expected":"hello","value":"world"}`); code != 200 || out["value"] != "world" || out["version"] != "2" {
		t.Fatalf("cas: %d %v", code, out)
	}
	if code, out := do(1, http.MethodGet, "/registers/r1", ""); code != 200 || out["value"] != "world" || out["version"] != "2" {
		t.Fatalf("get after cas: %d %v", code, out)
	}
	// ... and on the fallback routes.
	if code, out := post(0, reg+"Set", `{"id":"r2","value":"hello"}`); code != 200 || out["value"] != "hello" || out["version"] != "1" {
		t.Fatalf("fallback set: %d %v", code, out)
	}
	if code, out := post(2, reg+"CompareAndSet", `{"id":"r2","expected":"stale","value":"x"}`); code != http.StatusConflict {
		t.Fatalf("fallback stale compare-and-set: %d %v, want 409", code, out)
	}
	if code, out := post(2, reg+"CompareAndSet", `{"id":"r2","expected":"hello","value":"world"}`); code != 200 || out["version"] != "2" {
		t.Fatalf("fallback compare-and-set: %d %v", code, out)
	}
	if code, out := post(1, reg+"Get", `{"id":"r2"}`); code != 200 || out["value"] != "world" || out["version"] != "2" {
		t.Fatalf("fallback get: %d %v", code, out)
	}

	// The set: elements are written on two nodes and read on the third.
	elements := func(want ...any) func(map[string]any) bool {
		return func(out map[string]any) bool {
			got, _ := out["elements"].([]any)
			return reflect.DeepEqual(got, want) || (len(want) == 0 && got != nil && len(got) == 0)
		}
	}
	if code, out := post(0, "/sets/s1/add", `{"element":"x"}`); code != 200 || !elements("x")(out) {
		t.Fatalf("set add x: %d %v", code, out)
	}
	eventually(1, "/sets/s1", elements("x"))
	if code, out := post(1, "/sets/s1/add", `{"element":"y"}`); code != 200 || !elements("x", "y")(out) {
		t.Fatalf("set add y: %d %v", code, out)
	}
	eventually(2, "/sets/s1", elements("x", "y"))
	if code, out := post(2, "/sets/s1/remove", `{"element":"x"}`); code != 200 || !elements("y")(out) {
		t.Fatalf("set remove x: %d %v", code, out)
	}
	eventually(0, "/sets/s1", elements("y"))

	// The cart: written on one node, read and changed through the others.
	items := func(want ...map[string]any) func(map[string]any) bool {
		return func(out map[string]any) bool {
			got, _ := out["items"].([]any)
			if len(got) != len(want) {
				return false
			}
			for i := range got {
				if !reflect.DeepEqual(got[i], want[i]) {
					return false
				}
			}
			return true
		}
	}
	apple := func(q float64) map[string]any {
		return map[string]any{"productId": "p1", "name": "apple", "quantity": q}
	}
	pear := map[string]any{"productId": "p2", "name": "pear", "quantity": float64(1)}
	if code, out := post(0, "/carts/k1/items", `{"product_id":"p1","name":"apple","quantity":2}`); code != 200 || !items(apple(2))(out) {
		t.Fatalf("cart add p1: %d %v", code, out)
	}
	if code, out := post(1, "/carts/k1/items", `{"product_id":"p2","name":"pear","quantity":1}`); code != 200 || !items(apple(2), pear)(out) {
		t.Fatalf("cart add p2: %d %v", code, out)
	}
	if code, out := do(2, http.MethodGet, "/carts/k1", ""); code != 200 || !items(apple(2), pear)(out) {
		t.Fatalf("cart get: %d %v", code, out)
	}
	if code, out := post(2, "/carts/k1/items/p1/remove", ""); code != 200 || !items(pear)(out) {
		t.Fatalf("cart remove p1: %d %v", code, out)
	}
	if code, out := post(0, "/carts/k1/items/p1/remove", ""); code != http.StatusNotFound {
		t.Fatalf("cart remove p1 again: %d %v, want 404", code, out)
	}
	if code, out := do(1, http.MethodGet, "/carts/k1", ""); code != 200 || !items(pear)(out) {
		t.Fatalf("cart get after remove: %d %v", code, out)
	}

	if code, _ := post(1, reg+"Get", `{"id":`); code != http.StatusBadRequest {
		t.Fatalf("malformed body: %d, want 400", code)
	}
	if code, _ := do(1, http.MethodPut, "/registers/r1", `{"value":`); code != http.StatusBadRequest {
		t.Fatalf("malformed REST body: %d, want 400", code)
	}
	if code, _ := post(1, "/no.Such/Method", `{}`); code != http.StatusNotFound {
		t.Fatalf("unknown route: %d, want 404", code)
	}
	if code, _ := do(1, http.MethodGet, "/no/such/route", ""); code != http.StatusNotFound {
		t.Fatalf("unknown REST route: %d, want 404", code)
	}
}

// TestDemoWatch watches a set on n1 over server-sent events
// (GET /sets/{id}/watch) while an element is added through n2: the
// change reaches n1's replica through the mesh, n1's proxy pushes it to
// the set entity, and the entity streams the new elements.
func TestDemoWatch(t *testing.T) {
	d, err := startDemo(t.TempDir(), 3, slog.New(slog.DiscardHandler), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	defer d.close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+d.nodes[0].APIHTTPAddr()+"/sets/s9/watch", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "text/event-stream" {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("watch: %d %s: %s", resp.StatusCode, resp.Header.Get("Content-Type"), b)
	}
	events := make(chan string, 16)
	go func() {
		defer close(events)
		sc := bufio.NewScanner(resp.Body)
		for sc.Scan() {
			if data, ok := strings.CutPrefix(sc.Text(), "data: "); ok {
				events <- data
			}
		}
	}()
	// The first event is the set now (empty).
	select {
	case data := <-events:
		if strings.Contains(data, "x") {
			t.Fatalf("first event %q", data)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no first event")
	}
	add, err := http.Post("http://"+d.nodes[1].APIHTTPAddr()+"/sets/s9/add", "application/json", strings.NewReader(`{"element":"x"}`))
	if err != nil {
		t.Fatal(err)
	}
	add.Body.Close()
	if add.StatusCode != http.StatusOK {
		t.Fatalf("add on n2: %d", add.StatusCode)
	}
	deadline := time.After(10 * time.Second)
	for {
		select {
		case data, ok := <-events:
			if !ok {
				t.Fatal("the watch ended")
			}
			var out struct{ Elements []string }
			if err := json.Unmarshal([]byte(data), &out); err != nil {
				t.Fatalf("event %q: %v", data, err)
			}
			if slices.Contains(out.Elements, "x") {
				cancel() // the client goes away; close waits for the node to wind down
				for range events {
				}
				return
			}
		case <-deadline:
			t.Fatal("no event with x on n1 within 10s")
		}
	}
}

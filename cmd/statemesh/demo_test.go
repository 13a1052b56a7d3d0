package main

import (
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"
)

// TestDemo starts what `statemesh demo` starts (the example functions and
// three nodes in this process) and drives the examples over HTTP/JSON
// through different nodes: a CRDT counter written with MAJORITY on one
// node and read on another, and the event-sourced register's
// compare-and-set refusing a stale expectation with 409.
func TestDemo(t *testing.T) {
	d, err := startDemo(t.TempDir(), 3, slog.New(slog.DiscardHandler), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	defer d.close()
	post := func(node int, path, body string) (int, map[string]any) {
		t.Helper()
		resp, err := http.Post("http://"+d.nodes[node].APIHTTPAddr()+path, "application/json", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var out map[string]any
		b, _ := io.ReadAll(resp.Body)
		_ = json.Unmarshal(b, &out)
		return resp.StatusCode, out
	}
	const counter, reg = "/statemesh.examples.counter.Counter/", "/statemesh.examples.register.Register/"
	if code, out := post(0, counter+"Increment", `{"id":"c1","value":5,"consistency":"MAJORITY"}`); code != 200 || out["value"] != "5" {
		t.Fatalf("increment: %d %v", code, out)
	}
	if code, out := post(1, counter+"Decrement", `{"id":"c1","value":2}`); code != 200 {
		t.Fatalf("decrement: %d %v", code, out)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		code, out := post(2, counter+"Get", `{"id":"c1"}`)
		if code == 200 && out["value"] == "3" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("counter on n3: %d %v, want 3", code, out)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if code, out := post(0, reg+"Set", `{"id":"r1","value":"hello"}`); code != 200 || out["value"] != "hello" || out["version"] != "1" {
		t.Fatalf("set: %d %v", code, out)
	}
	if code, out := post(2, reg+"CompareAndSet", `{"id":"r1","expected":"stale","value":"x"}`); code != http.StatusConflict {
		t.Fatalf("stale compare-and-set: %d %v, want 409", code, out)
	}
	if code, out := post(2, reg+"CompareAndSet", `{"id":"r1","expected":"hello","value":"world"}`); code != 200 || out["version"] != "2" {
		t.Fatalf("compare-and-set: %d %v", code, out)
	}
	if code, out := post(1, reg+"Get", `{"id":"r1"}`); code != 200 || out["value"] != "world" || out["version"] != "2" {
		t.Fatalf("get: %d %v", code, out)
	}
	if code, _ := post(1, reg+"Get", `{"id":`); code != http.StatusBadRequest {
		t.Fatalf("malformed body: %d, want 400", code)
	}
	if code, _ := post(1, "/no.Such/Method", `{}`); code != http.StatusNotFound {
		t.Fatalf("unknown route: %d, want 404", code)
	}
}

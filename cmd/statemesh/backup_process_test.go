package main

import (
	"bytes"
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/statemesh/statemesh/node"
	"github.com/statemesh/statemesh/protocol/adminpb"
)

// TestBackupRestore backs up a running node with `statemesh ctl backup`,
// restores the file into a new data directory with `statemesh ctl
// restore`, and starts a node on it: its CRDT state and event journals are
// back, and new commands continue the journals' sequences.
func TestBackupRestore(t *testing.T) {
	p := startProcs(t, "b", 1, "--shards", "2")[0]
	dir := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, ev := range []string{"one", "two", "three"} {
		if _, err := p.client.Command(ctx, &adminpb.CommandRequest{Type: node.LogType, Id: "journal", Command: []byte(ev)}); err != nil {
			t.Fatal(err)
		}
	}
	key := &adminpb.Key{Service: "test.Counter", Id: "c"}
	if _, err := p.client.Update(ctx, &adminpb.UpdateRequest{Key: key, Type: "gcounter", Op: "increment", Arg: "5"}); err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(dir, "backup.bin")
	var out, errb bytes.Buffer
	if code := runCtl([]string{"--addr", p.admin, "backup", file}, &out, &errb); code != 0 {
		t.Fatalf("ctl backup: exit %d: %s", code, errb.String())
	}
	p.stop()

	restored := filepath.Join(dir, "restored")
	if code := runCtl([]string{"restore", "--data-dir", restored, file}, &out, &errb); code != 0 {
		t.Fatalf("ctl restore: exit %d: %s", code, errb.String())
	}
	// Restoring over a directory with data is refused.
	errb.Reset()
	if code := runCtl([]string{"restore", "--data-dir", restored, file}, &out, &errb); code == 0 || !strings.Contains(errb.String(), "restore") {
		t.Fatalf("restore over existing data: exit %d: %s", code, errb.String())
	}
	q := &proc{name: "b1", bind: freePort(t), peer: freePort(t), admin: freePort(t), raft: freePort(t),
		dir: restored, log: p.log, extra: []string{"--shards", "2"}}
	defer q.stop()
	q.start(t, nil)
	r, err := q.client.Command(ctx, &adminpb.CommandRequest{Type: node.LogType, Id: "journal", Command: []byte("four")})
	if err != nil {
		t.Fatal(err)
	}
	if r.Seq != 4 {
		t.Fatalf("a command after the restore got sequence %d, want 4", r.Seq)
	}
	ev, err := q.client.Events(ctx, &adminpb.EventsRequest{Type: node.LogType, Id: "journal"})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, e := range ev.Events {
		got = append(got, string(e))
	}
	if strings.Join(got, ",") != "one,two,three,four" {
		t.Fatalf("restored journal: %v", got)
	}
	g, err := q.client.Get(ctx, &adminpb.GetRequest{Key: key})
	if err != nil || !g.Found || g.Value != "5" {
		t.Fatalf("restored counter: %+v %v", g, err)
	}
}

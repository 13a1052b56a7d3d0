package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"text/tabwriter"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/statemesh/statemesh/eventlog"
	"github.com/statemesh/statemesh/protocol/adminpb"
)

const ctlUsage = `usage: statemesh ctl [--addr HOST:PORT] <command>

commands:
  members                              list the members the node knows
  keys                                 list the CRDT keys the node holds
  get SERVICE ID [--consistency C]     read a key (LOCAL, MAJORITY or ALL)
  delete SERVICE ID [--consistency C]  delete a key for good
  remove-node NAME [--force]           remove a (dead) member from the mesh for good
  update SERVICE ID --type T --op OP [--arg A] [--consistency C] [--timeout D]
                                       apply a test update; T: gcounter,
                                       pncounter, gset, orset, flag, ewflag,
                                       lwwregister; OP: increment, decrement,
                                       add, remove, enable, disable, set
  append TYPE ID DATA [--request-id R] run a command for an event-sourced entity;
                                       type statemesh.log appends DATA as an event
  events TYPE ID                       read an event-sourced entity (linearizable)
  leaders                              list every Raft shard's leader
  backup FILE                          write a full backup of the node's data to FILE
  restore --data-dir DIR FILE          load a backup into DIR (empty or new; offline,
                                       no node involved), then start a node on DIR`

// runCtl runs `statemesh ctl`, a client of a node's admin service.
func runCtl(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("statemesh ctl", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprintln(stderr, ctlUsage) }
	addr := fs.String("addr", "127.0.0.1:7948", "the node's admin address")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() == 0 {
		fmt.Fprintln(stderr, ctlUsage)
		return 2
	}
	if fs.Arg(0) == "restore" {
		return ctlRestore(fs.Args()[1:], stdout, stderr)
	}
	cc, err := grpc.NewClient(*addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		fmt.Fprintf(stderr, "statemesh ctl: %v\n", err)
		return 1
	}
	defer cc.Close()
	c := adminpb.NewAdminClient(cc)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	fail := func(err error) int {
		fmt.Fprintf(stderr, "statemesh ctl: %v\n", err)
		return 1
	}
	cmd, rest := fs.Arg(0), fs.Args()[1:]
	switch cmd {
	case "members":
		r, err := c.Members(ctx, &adminpb.MembersRequest{})
		if err != nil {
			return fail(err)
		}
		tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "NAME\tSTATE\tREGION\tGOSSIP\tPEER\tINCARNATION")
		for _, m := range r.Members {
			state := "alive"
			if !m.Alive {
				state = "dead"
			}
			if m.Self {
				state += " (self)"
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%d\n", m.Name, state, m.Region, m.GossipAddr, m.PeerAddr, m.Incarnation)
		}
		_ = tw.Flush()
		return 0
	case "keys":
		r, err := c.Keys(ctx, &adminpb.KeysRequest{})
		if err != nil {
			return fail(err)
		}
		for _, k := range r.Keys {
			fmt.Fprintf(stdout, "%s\t%s\n", k.Service, k.Id)
		}
		return 0
	case "remove-node":
		sub := flag.NewFlagSet("statemesh ctl remove-node", flag.ContinueOnError)
		sub.SetOutput(stderr)
		force := sub.Bool("force", false, "remove the member even if it is alive")
		if len(rest) < 1 {
			fmt.Fprintln(stderr, ctlUsage)
			return 2
		}
		if err := sub.Parse(rest[1:]); err != nil {
			return 2
		}
		if _, err := c.RemoveNode(ctx, &adminpb.RemoveNodeRequest{Name: rest[0], Force: *force}); err != nil {
			return fail(err)
		}
		fmt.Fprintf(stdout, "removed %s\n", rest[0])
		return 0
	case "append":
		sub := flag.NewFlagSet("statemesh ctl append", flag.ContinueOnError)
		sub.SetOutput(stderr)
		reqID := sub.String("request-id", "", "request id: a retry with the same id is applied at most once")
		if len(rest) < 3 {
			fmt.Fprintln(stderr, ctlUsage)
			return 2
		}
		if err := sub.Parse(rest[3:]); err != nil {
			return 2
		}
		r, err := c.Command(ctx, &adminpb.CommandRequest{Type: rest[0], Id: rest[1], Command: []byte(rest[2]), RequestId: []byte(*reqID)})
		if err != nil {
			return fail(err)
		}
		fmt.Fprintf(stdout, "seq %d %q\n", r.Seq, r.Reply)
		return 0
	case "events":
		if len(rest) != 2 {
			fmt.Fprintln(stderr, ctlUsage)
			return 2
		}
		r, err := c.Events(ctx, &adminpb.EventsRequest{Type: rest[0], Id: rest[1]})
		if err != nil {
			return fail(err)
		}
		if r.SnapshotSeq > 0 {
			fmt.Fprintf(stdout, "snapshot at %d: %q\n", r.SnapshotSeq, r.Snapshot)
		}
		for i, e := range r.Events {
			fmt.Fprintf(stdout, "%d\t%q\n", r.SnapshotSeq+uint64(i)+1, e)
		}
		return 0
	case "leaders":
		r, err := c.ShardLeaders(ctx, &adminpb.ShardLeadersRequest{})
		if err != nil {
			return fail(err)
		}
		tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "SHARD\tLEADER\tREPLICA\tTERM\tLOCAL REPLICA")
		for _, l := range r.Leaders {
			node := l.Node
			if l.ReplicaId == 0 {
				node = "(none known)"
			}
			fmt.Fprintf(tw, "%d\t%s\t%d\t%d\t%v\n", l.Shard, node, l.ReplicaId, l.Term, l.Local)
		}
		_ = tw.Flush()
		return 0
	case "backup":
		if len(rest) != 1 {
			fmt.Fprintln(stderr, ctlUsage)
			return 2
		}
		return ctlBackup(c, rest[0], stdout, stderr)
	case "get", "update", "delete":
		if len(rest) < 2 {
			fmt.Fprintln(stderr, ctlUsage)
			return 2
		}
		key := &adminpb.Key{Service: rest[0], Id: rest[1]}
		sub := flag.NewFlagSet("statemesh ctl "+cmd, flag.ContinueOnError)
		sub.SetOutput(stderr)
		consistency := sub.String("consistency", "LOCAL", "LOCAL, MAJORITY or ALL")
		typ := sub.String("type", "", "CRDT type (update)")
		op := sub.String("op", "", "operation (update)")
		arg := sub.String("arg", "", "amount, element or value (update)")
		timeout := sub.Duration("timeout", 0, "wait for other replicas at most this long (update; 0: the node's default)")
		if err := sub.Parse(rest[2:]); err != nil {
			return 2
		}
		if cmd == "delete" {
			if _, err := c.Delete(ctx, &adminpb.DeleteRequest{Key: key, Consistency: *consistency,
				TimeoutMs: uint32(timeout.Milliseconds())}); err != nil {
				return fail(err)
			}
			fmt.Fprintln(stdout, "deleted")
			return 0
		}
		if cmd == "get" {
			r, err := c.Get(ctx, &adminpb.GetRequest{Key: key, Consistency: *consistency})
			if err != nil {
				return fail(err)
			}
			if !r.Found {
				fmt.Fprintln(stdout, "(not found)")
				return 0
			}
			fmt.Fprintf(stdout, "%s %s\n", r.Type, r.Value)
			return 0
		}
		r, err := c.Update(ctx, &adminpb.UpdateRequest{Key: key, Type: *typ, Op: *op, Arg: *arg,
			Consistency: *consistency, TimeoutMs: uint32(timeout.Milliseconds())})
		if err != nil {
			return fail(err)
		}
		fmt.Fprintf(stdout, "%s %s\n", r.Type, r.Value)
		return 0
	}
	fmt.Fprintf(stderr, "statemesh ctl: unknown command %q\n", cmd)
	fmt.Fprintln(stderr, ctlUsage)
	return 2
}

// ctlBackup streams the node's backup into path (written to a temporary
// file first, so a failed backup never leaves a truncated FILE).
func ctlBackup(c adminpb.AdminClient, path string, stdout, stderr io.Writer) int {
	ctx, cancel := context.WithTimeout(context.Background(), time.Hour)
	defer cancel()
	stream, err := c.Backup(ctx, &adminpb.BackupRequest{})
	if err != nil {
		fmt.Fprintf(stderr, "statemesh ctl: backup: %v\n", err)
		return 1
	}
	tmp := path + ".partial"
	f, err := os.Create(tmp)
	if err != nil {
		fmt.Fprintf(stderr, "statemesh ctl: %v\n", err)
		return 1
	}
	var n int64
	for {
		chunk, err := stream.Recv()
		if err == io.EOF {
			break
		}
		if err == nil {
			var k int
			k, err = f.Write(chunk.Data)
			n += int64(k)
		}
		if err != nil {
			f.Close()
			os.Remove(tmp)
			fmt.Fprintf(stderr, "statemesh ctl: backup: %v\n", err)
			return 1
		}
	}
	if err := errors.Join(f.Sync(), f.Close(), os.Rename(tmp, path)); err != nil {
		os.Remove(tmp)
		fmt.Fprintf(stderr, "statemesh ctl: backup: %v\n", err)
		return 1
	}
	fmt.Fprintf(stdout, "backup of %d bytes written to %s\n", n, path)
	return 0
}

// ctlRestore loads a backup file into a new data directory.
func ctlRestore(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("statemesh ctl restore", flag.ContinueOnError)
	fs.SetOutput(stderr)
	dir := fs.String("data-dir", "", "the data directory to create (must be empty or missing)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if *dir == "" || fs.NArg() != 1 {
		fmt.Fprintln(stderr, "usage: statemesh ctl restore --data-dir DIR FILE")
		return 2
	}
	f, err := os.Open(fs.Arg(0))
	if err != nil {
		fmt.Fprintf(stderr, "statemesh ctl: %v\n", err)
		return 1
	}
	defer f.Close()
	if err := eventlog.RestoreDir(filepath.Join(*dir, "data"), f); err != nil {
		fmt.Fprintf(stderr, "statemesh ctl: restore: %v\n", err)
		return 1
	}
	fmt.Fprintf(stdout, "restored %s into %s\n", fs.Arg(0), *dir)
	return 0
}

package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/statemesh/statemesh/internal/testpki"
	"github.com/statemesh/statemesh/node"
	"github.com/statemesh/statemesh/protocol/adminpb"
)

// TestRaftOverMutualTLS starts three node processes with --tls-cert,
// --tls-key and --tls-ca. The shards replicate to every node and commands
// commit, so the Raft transport works over TLS. And the Raft port speaks
// TLS and refuses a client without a certificate of the CA: before the
// flags covered it, it spoke plaintext to anyone.
func TestRaftOverMutualTLS(t *testing.T) {
	ca := testpki.New(t, "statemesh test CA")
	cert := ca.Issue(t, "statemesh test node")
	caFile, certFile, keyFile := ca.WriteFiles(t, t.TempDir(), cert)
	const shards = 2
	procs := startProcs(t, "t", 3, "--shards", fmt.Sprint(shards),
		"--tls-cert", certFile, "--tls-key", keyFile, "--tls-ca", caFile)

	// Placement adds the other nodes' replicas through Raft config
	// changes, and they catch up through the transport.
	waitFor(t, 60*time.Second, "every shard replicated on every node with a leader", func() bool {
		for _, p := range procs {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			r, err := p.client.ShardLeaders(ctx, &adminpb.ShardLeadersRequest{})
			cancel()
			if err != nil || len(r.Leaders) != shards {
				return false
			}
			for _, l := range r.Leaders {
				if !l.Local || l.ReplicaId == 0 {
					return false
				}
			}
		}
		return true
	})
	for i, p := range procs {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		r, err := p.client.Command(ctx, &adminpb.CommandRequest{Type: node.LogType, Id: fmt.Sprintf("e%d", i), Command: []byte("x")})
		cancel()
		if err != nil || r.Seq != 1 {
			t.Fatalf("command through %s: %v, %v; want sequence 1", p.name, r, err)
		}
	}

	raft := procs[0].raft
	c, err := tls.Dial("tcp", raft, &tls.Config{RootCAs: ca.Pool, Certificates: []tls.Certificate{cert}, ServerName: "127.0.0.1"})
	if err != nil {
		t.Fatalf("TLS handshake with the Raft port, with the CA's certificate: %v", err)
	}
	c.Close()
	// In TLS 1.3 the server refuses a missing client certificate after
	// the client's side of the handshake: the refusal is an alert on the
	// first read. A read that times out would mean the server accepted.
	c, err = tls.Dial("tcp", raft, &tls.Config{RootCAs: ca.Pool, ServerName: "127.0.0.1"})
	if err == nil {
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		_, err = c.Read(make([]byte, 1))
		c.Close()
	}
	var ne net.Error
	if err == nil || (errors.As(err, &ne) && ne.Timeout()) {
		t.Errorf("the Raft port accepted a TLS client with no certificate (read: %v)", err)
	}
}

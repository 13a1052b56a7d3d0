package mesh

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/statemesh/statemesh/crdt"
	"github.com/statemesh/statemesh/internal/testpki"
)

// logBuffer collects log output across goroutines.
type logBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func TestMutualTLSRefusesForeignCertificate(t *testing.T) {
	ca, other := testpki.New(t, "mesh CA"), testpki.New(t, "another CA")
	logs := map[string]*logBuffer{}
	c := newCluster(t, 2, func(cfg *Config) {
		issuer := ca
		if cfg.Name == "n3" {
			issuer = other // the stranger
		}
		cfg.TLS = MutualTLS(issuer.Issue(t, cfg.Name), issuer.Pool)
		lb := &logBuffer{}
		logs[cfg.Name] = lb
		cfg.Logger = slog.New(slog.NewTextHandler(lb, &slog.HandlerOptions{Level: slog.LevelWarn}))
	})
	ctx := context.Background()
	// The two nodes of the CA talk over mutual TLS.
	if err := c.update("n1", counterKey, 2, Options{Consistency: All}); err != nil {
		t.Fatalf("ALL write over mutual TLS: %v", err)
	}
	c.waitValue(counterKey, 2)
	// A node whose certificate another CA signed joins the gossip (which is
	// not encrypted here) but no peer accepts its connections.
	n3 := c.start("n3")
	if _, err := n3.Update(ctx, counterKey, crdt.TypeGCounter, increment(n3, 40), Options{}); err != nil {
		t.Fatal(err)
	}
	err := c.update("n3", counterKey, 1, Options{Consistency: Majority, Timeout: 500 * time.Millisecond})
	if err == nil {
		t.Fatal("a MAJORITY write from a node with a foreign certificate succeeded")
	}
	eventually(t, 5*time.Second, func() error {
		for _, name := range []string{"n1", "n2"} {
			if !strings.Contains(logs[name].String(), "TLS handshake failed") {
				return fmt.Errorf("%s logged no refused handshake:\n%s", name, logs[name].String())
			}
		}
		return nil
	})
	for _, name := range []string{"n1", "n2"} {
		if got := counterValue(t, c.nodes[name], counterKey); got != 2 {
			t.Fatalf("%s reads %d: the stranger's write got through", name, got)
		}
	}
}

func TestGossipKeyRefusesOtherKey(t *testing.T) {
	key := bytes.Repeat([]byte{7}, 32)
	lb := &logBuffer{} // the seeds' logs
	c := newCluster(t, 2, func(cfg *Config) {
		cfg.SecretKey = key
		cfg.Logger = slog.New(slog.NewTextHandler(lb, &slog.HandlerOptions{Level: slog.LevelWarn}))
		if cfg.Name == "n3" {
			cfg.SecretKey = bytes.Repeat([]byte{9}, 32)
			cfg.Logger = nil
		}
	})
	if err := c.update("n1", counterKey, 1, Options{Consistency: All}); err != nil {
		t.Fatalf("write with gossip encryption: %v", err)
	}
	cfg := c.config("n3")
	cfg.JoinTimeout = time.Second
	_, err := Start(cfg)
	if err == nil {
		t.Fatal("a node with another gossip key joined")
	}
	if !strings.Contains(err.Error(), "no seed") {
		t.Fatalf("join error %q does not say the seeds did not answer", err)
	}
	ms, _ := c.nodes["n1"].Members(context.Background())
	for _, m := range ms {
		if m.Name == "n3" {
			t.Fatal("n1 lists the node with the other key")
		}
	}
	if !strings.Contains(lb.String(), "decrypt") {
		t.Fatalf("the seeds logged no reason for refusing the node:\n%s", lb.String())
	}
}

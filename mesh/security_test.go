package mesh

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"log/slog"
	"math/big"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/statemesh/statemesh/crdt"
)

// testCA is a certificate authority for tests.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pool *x509.CertPool
}

func newTestCA(t *testing.T, name string) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return &testCA{cert: cert, key: key, pool: pool}
}

// issue returns a certificate for a node on 127.0.0.1, usable as server
// and client.
func (ca *testCA) issue(t *testing.T, name string) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		KeyUsage:    x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

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
	ca, other := newTestCA(t, "mesh CA"), newTestCA(t, "another CA")
	logs := map[string]*logBuffer{}
	c := newCluster(t, 2, func(cfg *Config) {
		issuer := ca
		if cfg.Name == "n3" {
			issuer = other // the stranger
		}
		cfg.TLS = MutualTLS(issuer.issue(t, cfg.Name), issuer.pool)
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

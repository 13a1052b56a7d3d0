package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/statemesh/statemesh/node"
	"github.com/statemesh/statemesh/protocol/adminpb"
)

// TestRaftOverMutualTLS starts three node processes with --tls-cert,
// --tls-key and --tls-ca. The shards replicate to every node and commands
// commit, so the Raft transport works over TLS. And the Raft port speaks
// TLS and refuses a client without a certificate of the CA: before the
// flags covered it, it spoke plaintext to anyone.
func TestRaftOverMutualTLS(t *testing.T) {
	dir := t.TempDir()
	caFile, certFile, keyFile := writeTestPKI(t, dir)
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

	pem, err := os.ReadFile(caFile)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pem)
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	raft := procs[0].raft
	c, err := tls.Dial("tcp", raft, &tls.Config{RootCAs: pool, Certificates: []tls.Certificate{cert}, ServerName: "127.0.0.1"})
	if err != nil {
		t.Fatalf("TLS handshake with the Raft port, with the CA's certificate: %v", err)
	}
	c.Close()
	// In TLS 1.3 the server refuses a missing client certificate after
	// the client's side of the handshake: the refusal is an alert on the
	// first read. A read that times out would mean the server accepted.
	c, err = tls.Dial("tcp", raft, &tls.Config{RootCAs: pool, ServerName: "127.0.0.1"})
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

// writeTestPKI writes a CA and one certificate for 127.0.0.1, usable as
// server and client, as PEM files in dir.
func writeTestPKI(t *testing.T, dir string) (caFile, certFile, keyFile string) {
	t.Helper()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "statemesh test CA"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, err := x509.ParseCertificate(caDER)
	if err != nil {
		t.Fatal(err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "statemesh test node"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour),
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")},
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	write := func(name, typ string, b []byte) string {
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: b}), 0o600); err != nil {
			t.Fatal(err)
		}
		return path
	}
	return write("ca.pem", "CERTIFICATE", caDER), write("node.pem", "CERTIFICATE", der), write("node.key", "EC PRIVATE KEY", keyDER)
}

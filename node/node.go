// Package node assembles one statemesh node: the mesh (membership, peer
// transport, replicated CRDT store), the admin gRPC service that
// `statemesh ctl` talks to, and an HTTP endpoint with Prometheus metrics.
// The consensus layer and the function proxy join it with their issues.
package node

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"google.golang.org/grpc"

	"github.com/statemesh/statemesh/mesh"
	"github.com/statemesh/statemesh/protocol/adminpb"
)

// Config configures a node.
type Config struct {
	Mesh mesh.Config
	// AdminAddr is where the admin gRPC service listens ("host:port").
	// Keep it private: it reads and writes any key. Empty: no admin
	// service.
	AdminAddr string
	// HTTPAddr serves /metrics (Prometheus) and /healthz. Empty: none.
	HTTPAddr string
	Logger   *slog.Logger
}

// Node is a running statemesh node.
type Node struct {
	Mesh     *mesh.Node
	log      *slog.Logger
	admin    *grpc.Server
	adminLis net.Listener
	http     *http.Server
	httpLis  net.Listener
}

// Start starts the node's parts; on error nothing is left running.
func Start(cfg Config) (*Node, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	mc := cfg.Mesh
	mc.Logger = cfg.Logger
	mc.Registerer = reg
	m, err := mesh.Start(mc)
	if err != nil {
		return nil, err
	}
	n := &Node{Mesh: m, log: cfg.Logger}
	ok := false
	defer func() {
		if !ok {
			_ = n.stop(false)
		}
	}()
	if cfg.AdminAddr != "" {
		if n.adminLis, err = net.Listen("tcp", cfg.AdminAddr); err != nil {
			return nil, fmt.Errorf("node: admin listener: %w", err)
		}
		n.admin = grpc.NewServer()
		adminpb.RegisterAdminServer(n.admin, &adminServer{m: m})
		go func() { _ = n.admin.Serve(n.adminLis) }()
	}
	if cfg.HTTPAddr != "" {
		if n.httpLis, err = net.Listen("tcp", cfg.HTTPAddr); err != nil {
			return nil, fmt.Errorf("node: http listener: %w", err)
		}
		mux := http.NewServeMux()
		mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
		mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("ok\n")) })
		n.http = &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
		go func() { _ = n.http.Serve(n.httpLis) }()
	}
	ok = true
	return n, nil
}

// AdminAddr is the admin service's address ("" if none).
func (n *Node) AdminAddr() string {
	if n.adminLis == nil {
		return ""
	}
	return n.adminLis.Addr().String()
}

// HTTPAddr is the metrics endpoint's address ("" if none).
func (n *Node) HTTPAddr() string {
	if n.httpLis == nil {
		return ""
	}
	return n.httpLis.Addr().String()
}

// Close stops the node cleanly: it leaves the mesh and flushes its state.
func (n *Node) Close() error { return n.stop(true) }

func (n *Node) stop(clean bool) error {
	var errs []error
	if n.http != nil {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		errs = append(errs, n.http.Shutdown(ctx))
		cancel()
	}
	if n.admin != nil {
		n.admin.Stop()
	}
	if clean {
		errs = append(errs, n.Mesh.Close())
	} else {
		errs = append(errs, n.Mesh.Crash())
	}
	return errors.Join(errs...)
}

// Command functions serves the example functions (counter, register,
// sets, cart) on one gRPC address, for a statemesh node's --function flag.
package main

import (
	"flag"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"syscall"

	"github.com/statemesh/statemesh/examples"
	"github.com/statemesh/statemesh/sdk"
)

func main() {
	addr := flag.String("listen", "127.0.0.1:8080", "address to serve the function protocol on")
	flag.Parse()
	logger := slog.New(slog.NewTextHandler(os.Stderr, nil))
	if err := run(*addr, logger); err != nil {
		logger.Error("functions", "err", err)
		os.Exit(1)
	}
}

func run(addr string, logger *slog.Logger) error {
	svc := sdk.New(sdk.WithLogger(logger), sdk.WithServiceName("statemesh-examples"), sdk.WithServiceVersion(sdk.LibraryVersion))
	if err := examples.Register(svc); err != nil {
		return err
	}
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, os.Interrupt, syscall.SIGTERM)
	go func() {
		<-sig
		svc.Stop()
	}()
	logger.Info("functions: serving", "addr", lis.Addr().String())
	return svc.Serve(lis)
}

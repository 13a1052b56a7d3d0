package mesh

import (
	"bytes"
	"context"
	"crypto/tls"
	"log"
	"log/slog"
	"net"
	"strings"

	"google.golang.org/grpc/credentials"
)

// loggedCreds wraps transport credentials so that a failed handshake is
// logged with its reason: a peer with the wrong certificate is refused,
// and the operator sees why.
type loggedCreds struct {
	credentials.TransportCredentials
	log *slog.Logger
}

func newCreds(c *tls.Config, log *slog.Logger) credentials.TransportCredentials {
	if c == nil {
		return nil
	}
	return &loggedCreds{TransportCredentials: credentials.NewTLS(c), log: log}
}

func (l *loggedCreds) ServerHandshake(conn net.Conn) (net.Conn, credentials.AuthInfo, error) {
	c, a, err := l.TransportCredentials.ServerHandshake(conn)
	if err != nil {
		l.log.Warn("refused a peer connection: TLS handshake failed", "remote", conn.RemoteAddr().String(), "err", err)
	}
	return c, a, err
}

func (l *loggedCreds) ClientHandshake(ctx context.Context, authority string, conn net.Conn) (net.Conn, credentials.AuthInfo, error) {
	c, a, err := l.TransportCredentials.ClientHandshake(ctx, authority, conn)
	if err != nil {
		l.log.Warn("TLS handshake with a peer failed", "peer", authority, "err", err)
	}
	return c, a, err
}

func (l *loggedCreds) Clone() credentials.TransportCredentials {
	return &loggedCreds{TransportCredentials: l.TransportCredentials.Clone(), log: l.log}
}

// memberlistLog adapts memberlist's log lines ("[ERR] memberlist: ...")
// to slog: errors and warnings at their level, the rest at Debug. A node
// gossiping with another key shows up here ("failed to decrypt", "no
// installed keys could decrypt the message").
func memberlistLog(l *slog.Logger) *log.Logger {
	return log.New(slogWriter{l}, "", 0)
}

type slogWriter struct{ l *slog.Logger }

func (w slogWriter) Write(p []byte) (int, error) {
	msg := strings.TrimSpace(string(bytes.TrimRight(p, "\n")))
	level := slog.LevelDebug
	switch {
	case strings.HasPrefix(msg, "[ERR]"):
		level, msg = slog.LevelError, strings.TrimSpace(msg[5:])
	case strings.HasPrefix(msg, "[WARN]"):
		level, msg = slog.LevelWarn, strings.TrimSpace(msg[6:])
	case strings.HasPrefix(msg, "[INFO]"):
		msg = strings.TrimSpace(msg[6:])
	case strings.HasPrefix(msg, "[DEBUG]"):
		msg = strings.TrimSpace(msg[7:])
	}
	if level > slog.LevelDebug && strings.Contains(msg, net.ErrClosed.Error()) {
		// A send racing the node's own shutdown: expected, not an error.
		level = slog.LevelDebug
	}
	w.l.Log(context.Background(), level, msg, "lib", "memberlist")
	return len(p), nil
}

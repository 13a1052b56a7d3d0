package proxybench

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os/exec"
	"strings"
	"syscall"
	"time"

	"github.com/statemesh/statemesh/bench/consensusbench"
)

// ErrNoRedis is returned, wrapped, when redis-server is not installed.
var ErrNoRedis = errors.New("proxybench: redis-server not found (apt-get install redis-server, or make tools-redis)")

// FindRedis returns the path of redis-server.
func FindRedis() (string, error) {
	p, err := exec.LookPath("redis-server")
	if err != nil {
		return "", fmt.Errorf("%w: %v", ErrNoRedis, err)
	}
	return p, nil
}

// Redis is a redis-server child process on loopback, with no persistence
// (--save "" --appendonly no): the baseline keeps counters in memory
// only, as the statemesh counters are acknowledged at LOCAL.
type Redis struct {
	Addr    string
	Version string
	cmd     *exec.Cmd
	exited  chan struct{}
}

// StartRedis starts redis-server on a free loopback port, in dir, its
// output to log (nil: discarded), and returns once it answers PING.
func StartRedis(ctx context.Context, dir string, log io.Writer) (*Redis, error) {
	bin, err := FindRedis()
	if err != nil {
		return nil, err
	}
	addr := FreeAddr()
	_, port, _ := net.SplitHostPort(addr)
	r := &Redis{Addr: addr, exited: make(chan struct{})}
	if out, err := exec.CommandContext(ctx, bin, "--version").Output(); err == nil {
		r.Version = strings.TrimSpace(string(out))
	}
	r.cmd = exec.Command(bin, "--port", port, "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", dir)
	r.cmd.Stdout, r.cmd.Stderr = log, log
	if err := r.cmd.Start(); err != nil {
		return nil, fmt.Errorf("proxybench: start redis-server: %w", err)
	}
	go func() { _ = r.cmd.Wait(); close(r.exited) }()
	deadline := time.Now().Add(10 * time.Second)
	for {
		err := r.ping(ctx)
		if err == nil {
			return r, nil
		}
		select {
		case <-r.exited:
			return nil, fmt.Errorf("proxybench: redis-server exited: %v", r.cmd.ProcessState)
		default:
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			r.Close()
			return nil, fmt.Errorf("proxybench: redis-server on %s not answering: %w", addr, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func (r *Redis) ping(ctx context.Context) error {
	c, err := dialRESP(ctx, r.Addr)
	if err != nil {
		return err
	}
	defer c.close()
	v, err := c.do(ctx, "PING")
	if err != nil {
		return err
	}
	if v != "PONG" {
		return fmt.Errorf("%w: PING answered %v", ErrProtocol, v)
	}
	return nil
}

// Pid is the redis-server process id.
func (r *Redis) Pid() int { return r.cmd.Process.Pid }

// Close stops redis-server: SIGTERM, then SIGKILL after 5 s.
func (r *Redis) Close() error {
	if r.cmd == nil || r.cmd.Process == nil {
		return nil
	}
	_ = r.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-r.exited:
	case <-time.After(5 * time.Second):
		_ = r.cmd.Process.Kill()
		<-r.exited
	}
	return nil
}

// respConn is one Redis connection, used by one client at a time.
type respConn struct {
	c   net.Conn
	r   *bufio.Reader
	buf []byte
}

func dialRESP(ctx context.Context, addr string) (*respConn, error) {
	var d net.Dialer
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	return &respConn{c: c, r: bufio.NewReader(c)}, nil
}

// do sends one command and reads its reply, within ctx's deadline.
func (c *respConn) do(ctx context.Context, args ...string) (any, error) {
	if d, ok := ctx.Deadline(); ok {
		_ = c.c.SetDeadline(d)
	} else {
		_ = c.c.SetDeadline(time.Time{})
	}
	c.buf = AppendCommand(c.buf[:0], args...)
	if _, err := c.c.Write(c.buf); err != nil {
		return nil, err
	}
	return ReadReply(c.r)
}

func (c *respConn) close() error { return c.c.Close() }

// RedisTarget does INCR on the key, one connection per client, dialled
// on the client's first write.
type RedisTarget struct {
	addr  string
	conns []*respConn // index: client; each touched only by its client
}

var _ consensusbench.Target = (*RedisTarget)(nil)

// NewRedisTarget serves up to clients clients.
func NewRedisTarget(addr string, clients int) *RedisTarget {
	return &RedisTarget{addr: addr, conns: make([]*respConn, clients)}
}

func (t *RedisTarget) Name() string { return SystemRedis }

func (t *RedisTarget) Write(ctx context.Context, client int, key string, _ []byte) error {
	if client >= len(t.conns) {
		return fmt.Errorf("proxybench: redis client %d of %d", client, len(t.conns))
	}
	c := t.conns[client]
	if c == nil {
		var err error
		if c, err = dialRESP(ctx, t.addr); err != nil {
			return err
		}
		t.conns[client] = c
	}
	v, err := c.do(ctx, "INCR", key)
	if err != nil {
		// The connection's state is unknown (a reply may be in flight):
		// redial on the next write.
		c.close()
		t.conns[client] = nil
		return err
	}
	if _, ok := v.(int64); !ok {
		return fmt.Errorf("%w: INCR answered %T", ErrProtocol, v)
	}
	return nil
}

// Close closes the connections; call it when no Write runs.
func (t *RedisTarget) Close() error {
	for i, c := range t.conns {
		if c != nil {
			c.close()
			t.conns[i] = nil
		}
	}
	return nil
}

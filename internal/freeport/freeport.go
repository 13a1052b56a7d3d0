// Package freeport picks loopback ports that a process can bind a moment
// later, for the few listeners whose address must be known before they
// bind (Raft's, and the addresses handed to child processes).
//
// A port the kernel hands out for port 0 lies in the ephemeral range, the
// same range every outgoing connection takes its local port from: between
// "free" and bound, another connection may take it ("address already in
// use"). So ports are picked at random below the ephemeral range, where
// only explicit binds land, and checked free.
package freeport

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"strconv"
	"strings"
)

// lowest is the lowest port handed out: above the well-known and most
// registered service ports.
const lowest = 10000

// ErrNone: no free port (or block of ports) was found.
var ErrNone = errors.New("freeport: no free port found")

// ephemeralLow is the first port of the kernel's ephemeral range
// (/proc/sys/net/ipv4/ip_local_port_range; 32768 when unreadable).
func ephemeralLow() int {
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err != nil {
		return 32768
	}
	f := strings.Fields(string(b))
	if len(f) != 2 {
		return 32768
	}
	n, err := strconv.Atoi(f[0])
	if err != nil || n <= lowest+1000 {
		return 32768
	}
	return n
}

// Free reports whether 127.0.0.1:port can be listened on now.
func Free(port int) bool {
	l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
	if err != nil {
		return false
	}
	l.Close()
	return true
}

// Block returns the first of n consecutive loopback ports that are free
// now, below the ephemeral range.
func Block(n int) (int, error) {
	hi := ephemeralLow()
	if n < 1 || n > hi-lowest {
		return 0, fmt.Errorf("freeport: block of %d ports", n)
	}
	for range 200 {
		base := lowest + rand.IntN(hi-lowest-n+1)
		ok := true
		for p := base; p < base+n && ok; p++ {
			ok = Free(p)
		}
		if ok {
			return base, nil
		}
	}
	return 0, fmt.Errorf("%w: %d consecutive ports below %d", ErrNone, n, hi)
}

// Addr returns "127.0.0.1:PORT" for one free port below the ephemeral
// range.
func Addr() (string, error) {
	p, err := Block(1)
	if err != nil {
		return "", err
	}
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(p)), nil
}

package consensus

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/anishathalye/porcupine"
)

// registerHandler is an event-sourced register: each event is the new
// value. Commands: "r" reads, "w\x00v" writes v, "c\x00old\x00new" writes
// new if the value is old (reply "ok") and otherwise replies "fail".
var registerHandler = HandlerFunc(func(_ context.Context, c Command) (Effect, error) {
	cur := []byte{}
	if n := len(c.State.Events); n > 0 {
		cur = c.State.Events[n-1].Data
	} else if c.State.SnapshotSeq > 0 {
		cur = c.State.Snapshot
	}
	parts := bytes.Split(c.Payload, []byte{0})
	switch {
	case string(parts[0]) == "r" && len(parts) == 1:
		return Effect{Reply: cur}, nil
	case string(parts[0]) == "w" && len(parts) == 2:
		return Effect{Events: [][]byte{parts[1]}, Reply: []byte("ok")}, nil
	case string(parts[0]) == "c" && len(parts) == 3:
		if !bytes.Equal(cur, parts[1]) {
			return Effect{Reply: []byte("fail")}, nil
		}
		return Effect{Events: [][]byte{parts[2]}, Reply: []byte("ok")}, nil
	}
	return Effect{}, fmt.Errorf("bad register command %q", c.Payload)
})

type regInput struct {
	op       byte // 'r', 'w', 'c'
	key      string
	value    string // w, c: the new value
	expected string // c
}

type regOutput struct {
	value   string // r: the value read
	ok      bool   // c: applied
	unknown bool   // timed out: may or may not have been applied
}

// registerModel is a map of registers, checked one key at a time.
var registerModel = porcupine.Model{
	Partition: func(history []porcupine.Operation) [][]porcupine.Operation {
		byKey := map[string][]porcupine.Operation{}
		var keys []string
		for _, op := range history {
			k := op.Input.(regInput).key
			if _, ok := byKey[k]; !ok {
				keys = append(keys, k)
			}
			byKey[k] = append(byKey[k], op)
		}
		out := make([][]porcupine.Operation, 0, len(keys))
		for _, k := range keys {
			out = append(out, byKey[k])
		}
		return out
	},
	Init: func() any { return "" },
	Step: func(state, input, output any) (bool, any) {
		s, in, out := state.(string), input.(regInput), output.(regOutput)
		switch in.op {
		case 'r':
			return out.value == s, s
		case 'w':
			return true, in.value
		default: // 'c'
			if out.unknown {
				// Linearized here it applies if it matches; an unknown
				// CAS that never took effect is linearized after
				// everything else instead (its return is at infinity).
				if s == in.expected {
					return true, in.value
				}
				return true, s
			}
			if out.ok {
				return s == in.expected, in.value
			}
			return s != in.expected, s
		}
	},
	Equal: func(a, b any) bool { return a == b },
	DescribeOperation: func(input, output any) string {
		in, out := input.(regInput), output.(regOutput)
		switch in.op {
		case 'r':
			return fmt.Sprintf("get(%s) -> %q", in.key, out.value)
		case 'w':
			return fmt.Sprintf("put(%s, %q) unknown=%v", in.key, in.value, out.unknown)
		default:
			return fmt.Sprintf("cas(%s, %q, %q) -> ok=%v unknown=%v", in.key, in.expected, in.value, out.ok, out.unknown)
		}
	},
}

// TestRegisterLinearizable runs concurrent clients doing reads, writes and
// compare-and-sets on a few event-sourced registers through all three
// nodes while a nemesis isolates a random node and heals, over and over.
// Operations that time out are recorded as possibly applied (their return
// is at infinity). porcupine must find the history linearizable; a checker
// timeout fails the test too.
func TestRegisterLinearizable(t *testing.T) {
	c := newCluster(t, 3, 2, map[string]Handler{"reg": registerHandler})
	const (
		clients  = 6
		keys     = 4
		duration = 4 * time.Second
	)
	seed := time.Now().UnixNano()
	t.Logf("seed %d", seed)
	start := time.Now()
	stop := make(chan struct{})
	var (
		mu      sync.Mutex
		history []porcupine.Operation
		wg      sync.WaitGroup
		counts  = map[string]int{}
	)
	for cl := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(seed), uint64(cl)))
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				nd := c.nodes[rng.IntN(len(c.nodes))]
				in := regInput{key: fmt.Sprintf("k%d", rng.IntN(keys))}
				var payload string
				switch r := rng.IntN(10); {
				case r < 4:
					in.op, payload = 'r', "r"
				case r < 7:
					in.op, in.value = 'w', fmt.Sprintf("%d-%d", cl, i)
					payload = "w\x00" + in.value
				default:
					in.op, in.expected, in.value = 'c', fmt.Sprintf("%d-%d", rng.IntN(clients), rng.IntN(i+1)), fmt.Sprintf("%d-%d", cl, i)
					payload = "c\x00" + in.expected + "\x00" + in.value
				}
				ctx, cancel := context.WithTimeout(context.Background(), time.Second)
				call := time.Since(start).Nanoseconds()
				r, err := nd.h.Command(ctx, Entity{Type: "reg", ID: in.key}, []byte(payload), nil)
				ret := time.Since(start).Nanoseconds()
				cancel()
				var out regOutput
				switch {
				case err == nil:
					out.value, out.ok = string(r.Data), string(r.Data) == "ok"
				case errors.Is(err, ErrTimeout):
					if in.op == 'r' {
						continue // a read that returned nothing constrains nothing
					}
					out.unknown, ret = true, math.MaxInt64
				default:
					// Refused before anything was applied.
					mu.Lock()
					counts["refused"]++
					mu.Unlock()
					continue
				}
				mu.Lock()
				counts[string(in.op)]++
				if out.unknown {
					counts["unknown"]++
				}
				history = append(history, porcupine.Operation{ClientId: cl, Input: in, Call: call, Output: out, Return: ret})
				mu.Unlock()
			}
		}()
	}
	// Nemesis: isolate a random node for a while, heal, repeat.
	nrng := rand.New(rand.NewPCG(uint64(seed), 99))
	deadline := time.After(duration)
nemesis:
	for {
		victim := c.nodes[nrng.IntN(len(c.nodes))].name
		c.faults.Isolate(victim, c.names())
		select {
		case <-time.After(400 * time.Millisecond):
		case <-deadline:
			break nemesis
		}
		c.faults.Heal()
		select {
		case <-time.After(300 * time.Millisecond):
		case <-deadline:
			break nemesis
		}
	}
	c.faults.Heal()
	close(stop)
	wg.Wait()
	t.Logf("history: %d operations %v", len(history), counts)
	if counts["r"] < 20 || counts["w"]+counts["c"] < 20 {
		t.Fatalf("too few operations completed to check anything: %v", counts)
	}
	res, info := porcupine.CheckOperationsVerbose(registerModel, history, 30*time.Second)
	if res != porcupine.Ok {
		path := filepath.Join(t.TempDir(), "linearizability.html")
		if f, err := os.Create(path); err == nil {
			_ = porcupine.Visualize(registerModel, info, f)
			f.Close()
		}
		t.Fatalf("history is %v (not linearizable or unchecked); seed %d; visualization %s", res, seed, path)
	}
}

package jepsen

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"syscall"

	"github.com/statemesh/statemesh/jepsen/history"
)

// client speaks the example HTTP contract (ARCHITECTURE.md) to one node.
type client struct {
	http *http.Client
	base string
}

// outcome is what a client knows after a request: OK (it took effect,
// resp holds the answer), Fail (it certainly did not: a 4xx the server
// answered before applying anything) or Info (unknown: a timeout, a cut
// connection, a 5xx; it may have taken effect).
type outcome struct {
	typ string
	err string
}

var okOutcome = outcome{typ: history.OK}

// maxResponse bounds a response body (a big set's read is the largest).
const maxResponse = 8 << 20

// do sends one request and decodes a 2xx JSON answer into out.
func (c client) do(ctx context.Context, method, path string, body, out any) outcome {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return outcome{history.Fail, err.Error()}
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, rd)
	if err != nil {
		return outcome{history.Fail, err.Error()}
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.http.Do(req)
	if err != nil {
		// Refused: the request never reached a server (a killed node).
		if errors.Is(err, syscall.ECONNREFUSED) {
			return outcome{history.Fail, err.Error()}
		}
		return outcome{history.Info, err.Error()}
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxResponse+1))
	if err != nil {
		return outcome{history.Info, "reading the answer: " + err.Error()}
	}
	if len(data) > maxResponse {
		return outcome{history.Info, fmt.Sprintf("answer longer than %d bytes", maxResponse)}
	}
	if resp.StatusCode/100 != 2 {
		msg := fmt.Sprintf("%s: %s", resp.Status, bytes.TrimSpace(data))
		// 4xx: the proxy or the function refused the request before
		// anything was applied (409: a compare-and-set that did not
		// match). Everything else may have been applied.
		if resp.StatusCode/100 == 4 {
			return outcome{history.Fail, msg}
		}
		return outcome{history.Info, msg}
	}
	if out != nil {
		if err := json.Unmarshal(data, out); err != nil {
			return outcome{history.Info, fmt.Sprintf("undecodable answer %q: %v", data, err)}
		}
	}
	return okOutcome
}

// jsonInt64 is an int64 that protojson may send as a string.
type jsonInt64 int64

func (v *jsonInt64) UnmarshalJSON(b []byte) error {
	if len(b) > 0 && b[0] == '"' {
		var s string
		if err := json.Unmarshal(b, &s); err != nil {
			return err
		}
		n, err := strconv.ParseInt(s, 10, 64)
		*v = jsonInt64(n)
		return err
	}
	var n int64
	err := json.Unmarshal(b, &n)
	*v = jsonInt64(n)
	return err
}

func esc(s string) string { return url.PathEscape(s) }

func (c client) counterAdd(ctx context.Context, key string, delta int64, consistency string) outcome {
	op, n := "increment", delta
	if delta < 0 {
		op, n = "decrement", -delta
	}
	return c.do(ctx, http.MethodPost, "/counters/"+esc(key)+"/"+op,
		map[string]any{"value": n, "consistency": consistency}, nil)
}

func (c client) counterGet(ctx context.Context, key string) (int64, outcome) {
	var r struct {
		Value jsonInt64 `json:"value"`
	}
	o := c.do(ctx, http.MethodGet, "/counters/"+esc(key), nil, &r)
	return int64(r.Value), o
}

func (c client) setAdd(ctx context.Context, key, elem string) outcome {
	return c.do(ctx, http.MethodPost, "/sets/"+esc(key)+"/add", map[string]string{"element": elem}, nil)
}

func (c client) setRemove(ctx context.Context, key, elem string) outcome {
	return c.do(ctx, http.MethodPost, "/sets/"+esc(key)+"/remove", map[string]string{"element": elem}, nil)
}

func (c client) setGet(ctx context.Context, key string) ([]string, outcome) {
	var r struct {
		Elements []string `json:"elements"`
	}
	o := c.do(ctx, http.MethodGet, "/sets/"+esc(key), nil, &r)
	if r.Elements == nil {
		r.Elements = []string{}
	}
	return r.Elements, o
}

type registerValue struct {
	Value   string    `json:"value"`
	Version jsonInt64 `json:"version"`
}

func (c client) registerSet(ctx context.Context, key, value string) (registerValue, outcome) {
	var r registerValue
	o := c.do(ctx, http.MethodPut, "/registers/"+esc(key), map[string]string{"value": value}, &r)
	return r, o
}

func (c client) registerGet(ctx context.Context, key string) (registerValue, outcome) {
	var r registerValue
	o := c.do(ctx, http.MethodGet, "/registers/"+esc(key), nil, &r)
	return r, o
}

func (c client) registerCAS(ctx context.Context, key, expected, value string) (registerValue, outcome) {
	var r registerValue
	o := c.do(ctx, http.MethodPost, "/registers/"+esc(key)+"/cas", map[string]string{"expected": expected, "value": value}, &r)
	return r, o
}

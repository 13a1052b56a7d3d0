package proxy

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"

	"connectrpc.com/connect"
	"google.golang.org/genproto/googleapis/api/annotations"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/descriptorpb"
	"google.golang.org/protobuf/types/dynamicpb"

	"github.com/statemesh/statemesh/protocol/functionpb"
)

// Vanguard transcodes REST only for unary methods (a server stream that
// is not google.api.HttpBody is 415), so the proxy serves the
// server-streaming methods of CRDT entities and actions over HTTP itself, as
// server-sent events: on the paths of their google.api.http bindings
// and on the POST /{package.Service}/{Method} fallback (a plain JSON
// POST; Connect streaming clients still go to vanguard).

// sseRoute is one google.api.http binding of a streamed method.
type sseRoute struct {
	verb string
	// segs are the path template's segments; vars[i] is the field a
	// "{field}" segment binds (nil for a literal).
	segs []string
	vars []protoreflect.FieldDescriptor
	body bool // body: "*"
	m    *method
}

// streamedMethod: a method the proxy streams (server-streaming, of a CRDT
// entity or an action).
func streamedMethod(m *method) bool {
	switch m.svc.model {
	case functionpb.Model_MODEL_CRDT, functionpb.Model_MODEL_ACTION:
		return m.desc.IsStreamingServer() && !m.desc.IsStreamingClient()
	}
	return false
}

// sseRoutes collects the bindings of the streamed methods. Templates with
// nested field paths, "**" or custom patterns, and bodies other than "*",
// are not matched here (they fall through to vanguard).
func (p *Proxy) sseRoutes() []sseRoute {
	var out []sseRoute
	for _, s := range p.model.order {
		for _, m := range s.methods {
			if !streamedMethod(m) {
				continue
			}
			opts, ok := m.desc.Options().(*descriptorpb.MethodOptions)
			if !ok || opts == nil || !proto.HasExtension(opts, annotations.E_Http) {
				continue
			}
			rule, _ := proto.GetExtension(opts, annotations.E_Http).(*annotations.HttpRule)
			for _, b := range append([]*annotations.HttpRule{rule}, rule.GetAdditionalBindings()...) {
				if rt, ok := newSSERoute(m, b); ok {
					out = append(out, rt)
				}
			}
		}
	}
	return out
}

func newSSERoute(m *method, b *annotations.HttpRule) (sseRoute, bool) {
	rt := sseRoute{m: m}
	var tmpl string
	switch x := b.GetPattern().(type) {
	case *annotations.HttpRule_Get:
		rt.verb, tmpl = http.MethodGet, x.Get
	case *annotations.HttpRule_Post:
		rt.verb, tmpl = http.MethodPost, x.Post
	case *annotations.HttpRule_Put:
		rt.verb, tmpl = http.MethodPut, x.Put
	case *annotations.HttpRule_Patch:
		rt.verb, tmpl = http.MethodPatch, x.Patch
	case *annotations.HttpRule_Delete:
		rt.verb, tmpl = http.MethodDelete, x.Delete
	default:
		return rt, false
	}
	switch b.GetBody() {
	case "":
	case "*":
		rt.body = true
	default:
		return rt, false
	}
	if !strings.HasPrefix(tmpl, "/") {
		return rt, false
	}
	fields := m.desc.Input().Fields()
	for seg := range strings.SplitSeq(tmpl[1:], "/") {
		if strings.HasPrefix(seg, "{") && strings.HasSuffix(seg, "}") {
			name := strings.TrimSuffix(seg[1:len(seg)-1], "=*")
			fd := fields.ByName(protoreflect.Name(name))
			if fd == nil || fd.IsList() || fd.IsMap() || fd.Message() != nil {
				return rt, false
			}
			rt.segs, rt.vars = append(rt.segs, ""), append(rt.vars, fd)
			continue
		}
		if strings.ContainsAny(seg, "{}*:") {
			return rt, false
		}
		rt.segs, rt.vars = append(rt.segs, seg), append(rt.vars, nil)
	}
	return rt, true
}

// match binds the path's variables if r is for this route.
func (rt sseRoute) match(r *http.Request) (map[protoreflect.FieldDescriptor]string, bool) {
	path := r.URL.EscapedPath()
	// Checked before splitting: every HTTP request tries every route.
	if r.Method != rt.verb || !strings.HasPrefix(path, "/") || strings.Count(path, "/") != len(rt.segs) {
		return nil, false
	}
	segs := strings.Split(path[1:], "/")
	vals := map[protoreflect.FieldDescriptor]string{}
	for i, seg := range segs {
		seg, err := url.PathUnescape(seg)
		if err != nil {
			return nil, false
		}
		if rt.vars[i] == nil {
			if seg != rt.segs[i] {
				return nil, false
			}
			continue
		}
		if seg == "" {
			return nil, false
		}
		vals[rt.vars[i]] = seg
	}
	return vals, true
}

// routeSSE serves r if it is for a streamed method; false otherwise. m is
// the method r's path names, if any (the POST fallback).
func (p *Proxy) routeSSE(routes []sseRoute, m *method, w http.ResponseWriter, r *http.Request) bool {
	for _, rt := range routes {
		if vals, ok := rt.match(r); ok {
			p.serveSSE(w, r, rt.m, vals, rt.body, r.Method == http.MethodGet)
			return true
		}
	}
	if r.Method != http.MethodPost || r.Header.Get("Connect-Protocol-Version") != "" {
		return false
	}
	if m == nil || !streamedMethod(m) {
		return false
	}
	if ct := r.Header.Get("Content-Type"); ct != "" && ct != "application/json" && !strings.HasPrefix(ct, "application/json;") {
		return false
	}
	p.serveSSE(w, r, m, nil, true, false)
	return true
}

// serveSSE runs a streamed method and writes its messages as server-sent
// events, "data: <JSON>\n\n" each, flushed. An error before the first
// event is an ordinary JSON error response; after it, an "error" event
// ends the stream. The client going away cancels the command.
func (p *Proxy) serveSSE(w http.ResponseWriter, r *http.Request, m *method, vals map[protoreflect.FieldDescriptor]string, body, query bool) {
	in := dynamicpb.NewMessage(m.desc.Input())
	if err := p.bindSSE(r, in, vals, body, query); err != nil {
		writeError(w, http.StatusBadRequest, "invalid_argument", err.Error())
		return
	}
	rc := http.NewResponseController(w)
	started := false
	start := func() {
		if started {
			return
		}
		started = true
		h := w.Header()
		h.Set("Content-Type", "text/event-stream")
		h.Set("Cache-Control", "no-cache")
		h.Set("X-Accel-Buffering", "no")
		w.WriteHeader(http.StatusOK)
	}
	enc := protojson.MarshalOptions{Resolver: p.model.types}
	send := func(out proto.Message) error {
		b, err := enc.Marshal(out)
		if err != nil {
			return fmt.Errorf("%w: encoding a message as JSON: %v", ErrFunction, err)
		}
		start()
		if _, err := fmt.Fprintf(w, "data: %s\n\n", b); err != nil {
			return err
		}
		return rc.Flush()
	}
	err := p.stream(r.Context(), m, in, flattenMetadata(r.Header), send)
	if err == nil {
		start()
		return
	}
	st := p.callStatus("proxy: streamed command failed", m.fullMethod(), err)
	code := connect.Code(st.Code()).String()
	if !started {
		writeError(w, httpStatusOf(st.Code()), code, st.Message())
		return
	}
	if r.Context().Err() != nil {
		return // nobody is listening
	}
	b, _ := json.Marshal(map[string]any{"code": code, "message": st.Message()})
	_, _ = fmt.Fprintf(w, "event: error\ndata: %s\n\n", b)
	_ = rc.Flush()
}

// bindSSE fills in from the JSON body, the path's variables and (for a
// GET) the query's top-level scalar fields.
func (p *Proxy) bindSSE(r *http.Request, in *dynamicpb.Message, vals map[protoreflect.FieldDescriptor]string, body, query bool) error {
	if body {
		b, err := io.ReadAll(r.Body)
		if err != nil {
			return fmt.Errorf("reading the body: %v", err)
		}
		if len(bytes.TrimSpace(b)) > 0 {
			if err := (protojson.UnmarshalOptions{Resolver: p.model.types}).Unmarshal(b, in); err != nil {
				return fmt.Errorf("malformed JSON request: %v", err)
			}
		}
	}
	if query {
		fields := in.Descriptor().Fields()
		for k, vs := range r.URL.Query() {
			fd := fields.ByJSONName(k)
			if fd == nil {
				fd = fields.ByName(protoreflect.Name(k))
			}
			if fd == nil || fd.IsList() || fd.IsMap() || fd.Message() != nil || len(vs) == 0 {
				return fmt.Errorf("unknown query parameter %q", k)
			}
			if err := setField(in, fd, vs[0]); err != nil {
				return err
			}
		}
	}
	for fd, v := range vals {
		if err := setField(in, fd, v); err != nil {
			return err
		}
	}
	return nil
}

// setField sets a scalar field from its text in a URL, as protojson reads
// it from a JSON string (numbers, enums by name, base64 bytes) or literal
// (booleans).
func setField(msg *dynamicpb.Message, fd protoreflect.FieldDescriptor, v string) error {
	if fd.Kind() == protoreflect.StringKind {
		msg.Set(fd, protoreflect.ValueOfString(v))
		return nil
	}
	js, _ := json.Marshal(v)
	if fd.Kind() == protoreflect.BoolKind && (v == "true" || v == "false") {
		js = []byte(v)
	}
	tmp := dynamicpb.NewMessage(msg.Descriptor())
	doc := fmt.Sprintf("{%q:%s}", fd.JSONName(), js)
	if err := protojson.Unmarshal([]byte(doc), tmp); err != nil {
		return fmt.Errorf("field %s: %v", fd.Name(), err)
	}
	msg.Set(fd, tmp.Get(fd))
	return nil
}

package proxy

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"

	"connectrpc.com/connect"
	"connectrpc.com/vanguard"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// newHTTPHandler builds the HTTP/JSON side with vanguard: REST routes
// from the google.api.http annotations of the discovered descriptors, and
// every unary method at POST /{package.Service}/{Method} with a JSON body
// (Content-Type: application/json; the Connect protocol's unary form).
// Both are transcoded to Connect unary calls with the proto codec and
// served in-process by connectHandler, through the same invoke path as
// the gRPC server.
func (p *Proxy) newHTTPHandler() (http.Handler, error) {
	var svcs []*vanguard.Service
	connect := p.connectHandler()
	for _, s := range p.model.order {
		svcs = append(svcs, vanguard.NewServiceWithSchema(s.desc, connect,
			vanguard.WithTypeResolver(p.model.types),
			vanguard.WithTargetProtocols(vanguard.ProtocolConnect),
			vanguard.WithTargetCodecs(vanguard.CodecProto),
			vanguard.WithMaxMessageBufferBytes(uint32(p.cfg.MaxRequestBytes)),
		))
	}
	tc, err := vanguard.NewTranscoder(svcs,
		vanguard.WithUnknownHandler(http.HandlerFunc(notFound)),
		vanguard.WithCodec(func(res vanguard.TypeResolver) vanguard.Codec { return jsonCodec{vanguard.NewJSONCodec(res)} }))
	if err != nil {
		return nil, fmt.Errorf("%w: HTTP routes: %v", ErrSpec, err)
	}
	routes := p.sseRoutes()
	limit := int64(p.cfg.MaxRequestBytes)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.ContentLength > limit {
			writeError(w, http.StatusRequestEntityTooLarge, "resource_exhausted",
				fmt.Sprintf("request body of %d bytes exceeds %d", r.ContentLength, limit))
			return
		}
		r.Body = http.MaxBytesReader(w, r.Body, limit)
		if r.Header.Get("Content-Type") == "application/x-www-form-urlencoded" {
			// curl -d's default: the API has no form routes, so the
			// body is taken for what the user meant, JSON.
			r.Header.Set("Content-Type", "application/json")
		}
		m := p.lookup(r.URL.Path) // nil for REST paths
		if m != nil && m.desc.IsStreamingClient() {
			// Vanguard would answer 415 (a Connect unary request) or
			// fail on its way to connectHandler (a Connect stream).
			err := fmt.Errorf("%w: %s is client streaming: call it over gRPC", ErrNotSupported, m.fullMethod())
			writeError(w, httpStatus(err), "unimplemented", err.Error())
			return
		}
		if p.routeSSE(routes, m, w, r) {
			return
		}
		fallback(m, r)
		tc.ServeHTTP(w, r)
	}), nil
}

// fallback makes a plain JSON POST to /{package.Service}/{Method} a
// Connect unary call (vanguard would take it for REST and find no
// route): it adds the Connect-Protocol-Version header and, when absent,
// the JSON content type. Requests that name a protocol are left alone. m
// is the method r's path names, if any.
func fallback(m *method, r *http.Request) {
	if r.Method != http.MethodPost || r.Header.Get("Connect-Protocol-Version") != "" || m == nil {
		return
	}
	ct := r.Header.Get("Content-Type")
	switch {
	case ct == "":
		r.Header.Set("Content-Type", "application/json")
	case ct == "application/json", strings.HasPrefix(ct, "application/json;"):
	default:
		return
	}
	r.Header.Set("Connect-Protocol-Version", "1")
}

// jsonCodec is vanguard's JSON codec whose decoding errors are the
// client's fault (400), not an unknown error (500).
type jsonCodec struct{ *vanguard.JSONCodec }

func (c jsonCodec) Unmarshal(data []byte, msg proto.Message) error {
	if err := c.JSONCodec.Unmarshal(data, msg); err != nil {
		return connect.NewError(connect.CodeInvalidArgument, fmt.Errorf("malformed JSON request: %w", err))
	}
	return nil
}

func (c jsonCodec) UnmarshalField(data []byte, msg proto.Message, field protoreflect.FieldDescriptor) error {
	if err := c.JSONCodec.UnmarshalField(data, msg, field); err != nil {
		return connect.NewError(connect.CodeInvalidArgument, fmt.Errorf("malformed JSON request: %w", err))
	}
	return nil
}

func notFound(w http.ResponseWriter, r *http.Request) {
	writeError(w, http.StatusNotFound, "not_found", fmt.Sprintf("no route for %s %s", r.Method, r.URL.Path))
}

// writeError writes an error in the shape vanguard uses for REST errors
// (google.rpc.Status as JSON).
func writeError(w http.ResponseWriter, status int, code, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]any{"code": code, "message": msg})
}

package proxy

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strconv"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/dynamicpb"
)

// connectHandler is what vanguard transcodes HTTP/JSON calls to: unary
// calls in the Connect protocol with the proto codec (POST /pkg.Svc/Method,
// Content-Type application/proto), served in this process through the
// same invoke path as the gRPC server. An earlier version targeted the
// gRPC server's own http.Handler (grpc-go's ServeHTTP), which made
// HTTP/JSON run at about 0.44x gRPC's throughput (bench proxy).
// Streaming methods never get here: server-streaming CRDT methods are
// served as server-sent events before vanguard, and other streaming
// methods are refused.
func (p *Proxy) connectHandler() http.Handler {
	limit := int64(p.cfg.MaxRequestBytes)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		m := p.lookup(r.URL.Path)
		if m == nil {
			writeConnectError(w, status.New(codes.Unimplemented, "unknown service or method "+r.URL.Path))
			return
		}
		if m.desc.IsStreamingClient() || m.desc.IsStreamingServer() {
			writeConnectError(w, status.Newf(codes.Unimplemented, "streaming method %s is not served over HTTP this way", r.URL.Path))
			return
		}
		body, err := io.ReadAll(io.LimitReader(r.Body, limit+1))
		if err != nil {
			writeConnectError(w, status.Newf(codes.InvalidArgument, "reading the request: %v", err))
			return
		}
		if int64(len(body)) > limit {
			writeConnectError(w, status.Newf(codes.ResourceExhausted, "request exceeds %d bytes", limit))
			return
		}
		in := dynamicpb.NewMessage(m.desc.Input())
		if err := (proto.UnmarshalOptions{Resolver: p.model.types}).Unmarshal(body, in); err != nil {
			writeConnectError(w, status.Newf(codes.InvalidArgument, "decoding %s: %v", m.desc.Input().FullName(), err))
			return
		}
		ctx := r.Context()
		timeout := p.cfg.CommandTimeout
		if ms, err := strconv.ParseInt(r.Header.Get("Connect-Timeout-Ms"), 10, 64); err == nil && ms > 0 {
			timeout = min(timeout, time.Duration(ms)*time.Millisecond)
		}
		ctx, cancel := context.WithTimeout(ctx, timeout)
		defer cancel()
		out, err := p.invoke(ctx, m, in, flattenMetadata(r.Header), 0)
		if err != nil {
			writeConnectError(w, p.callStatus("proxy: command failed", r.URL.Path, err))
			return
		}
		b, err := proto.Marshal(out)
		if err != nil {
			writeConnectError(w, status.Newf(codes.Internal, "encoding the reply: %v", err))
			return
		}
		w.Header().Set("Content-Type", "application/proto")
		_, _ = w.Write(b)
	})
}

// writeConnectError writes st as a Connect unary error; vanguard turns it
// into the REST error of the original request. The code's name is the
// Connect protocol's (connect.Code), its HTTP status the error table's.
func writeConnectError(w http.ResponseWriter, st *status.Status) {
	c := st.Code()
	if c == codes.OK || c > codes.Unauthenticated {
		c = codes.Unknown
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(httpStatusOf(c))
	_ = json.NewEncoder(w).Encode(map[string]string{"code": connect.Code(c).String(), "message": st.Message()})
}

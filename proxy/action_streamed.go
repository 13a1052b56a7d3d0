package proxy

import (
	"context"
	"errors"
	"fmt"
	"io"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/dynamicpb"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/statemesh/statemesh/protocol/functionpb"
)

// clientStreamedAction: a client-streaming or bidirectional action method,
// served over gRPC only (streamInAction).
func clientStreamedAction(m *method) bool {
	return m.svc.model == functionpb.Model_MODEL_ACTION && m.desc.IsStreamingClient()
}

// streamInAction runs a call of a client-streaming action method (with
// ActionProtocol.HandleStreamedIn) or of a bidirectional one (with
// HandleStreamed). The first message to the function names the method and
// carries the caller's metadata and no payload; each of the caller's
// messages follows in its own ActionCommand, relayed as it arrives, and
// the caller's end of sending is the function's. The function's response
// (client streaming) or each of its responses (bidirectional) is handled
// as the server-streaming path handles one (forwards followed, side
// effects run, a Failure ends the call with its code).
//
// Nothing is buffered beyond the message in hand: the relay receives the
// caller's next message only once the function has taken the previous
// one, so gRPC's flow control pushes back on a caller that sends faster
// than the function reads. The call has no CommandTimeout; it ends when
// either side ends it, goes away or fails (a caller's message that does
// not decode is InvalidArgument), or the proxy closes, and the end of
// either side cancels the other.
func (p *Proxy) streamInAction(ss grpc.ServerStream, m *method) error {
	ctx, cancel := context.WithCancel(ss.Context())
	defer cancel()
	defer context.AfterFunc(p.ctx, cancel)()
	meta := incomingMetadata(ctx)
	var (
		fs   grpc.ClientStream
		send func(*functionpb.ActionCommand) error
		err  error
	)
	if m.desc.IsStreamingServer() {
		var s grpc.BidiStreamingClient[functionpb.ActionCommand, functionpb.ActionResponse]
		if s, err = p.action.HandleStreamed(ctx); err == nil {
			fs, send = s, s.Send
		}
	} else {
		var s grpc.ClientStreamingClient[functionpb.ActionCommand, functionpb.ActionResponse]
		if s, err = p.action.HandleStreamedIn(ctx); err == nil {
			fs, send = s, s.Send
		}
	}
	if err != nil {
		return functionCallError(err)
	}
	header := &functionpb.ActionCommand{ServiceName: string(m.svc.desc.FullName()), Name: string(m.desc.Name()), Metadata: meta}
	if err := send(header); err != nil && !errors.Is(err, io.EOF) {
		return p.streamInError(err, nil)
	}
	// The relay is owned by this call: it ends when the caller ends
	// sending, or when its RecvMsg fails because this handler returned
	// (gRPC ends the caller's stream then), so it may outlive the return
	// by that long; it touches neither ss nor fs after that.
	relayed := make(chan error, 1)
	go func() {
		err := p.relayIn(ss, m, send, fs.CloseSend)
		relayed <- err
		if err != nil {
			cancel()
		}
	}()
	if !m.desc.IsStreamingServer() {
		resp := &functionpb.ActionResponse{}
		if err := fs.RecvMsg(resp); err != nil {
			return p.streamInError(err, relayed)
		}
		ca, effects := actionResult(resp)
		out, err := p.finish(ctx, m, ca, effects, meta, 0)
		if err != nil {
			return err
		}
		return ss.SendMsg(out)
	}
	return p.emitResponses(ctx, m, fs, relayed, meta, func(out proto.Message) error { return ss.SendMsg(out) })
}

// relayIn passes the caller's messages to the function, one at a time,
// then the end of sending. It returns nil when the caller ended sending
// or the function stopped reading (its answer, or the reason, comes from
// its side), and the caller's error otherwise.
func (p *Proxy) relayIn(ss grpc.ServerStream, m *method, send func(*functionpb.ActionCommand) error, closeSend func() error) error {
	for {
		var f rawFrame
		if err := ss.RecvMsg(&f); errors.Is(err, io.EOF) {
			_ = closeSend()
			return nil
		} else if err != nil {
			return err
		}
		in := dynamicpb.NewMessage(m.desc.Input())
		if err := (proto.UnmarshalOptions{Resolver: p.model.types}).Unmarshal(f.b, in); err != nil {
			return status.Errorf(codes.InvalidArgument, "decoding %s: %v", m.desc.Input().FullName(), err)
		}
		payload, err := anypb.New(in)
		if err != nil {
			return fmt.Errorf("%w: encoding the request: %v", ErrBadRequest, err)
		}
		if err := send(&functionpb.ActionCommand{Payload: payload}); err != nil {
			return nil // the function's stream ended: RecvMsg says how
		}
	}
}

// streamInError is the error a streamed action call ends with when the
// function's stream failed with err: the relay's (of a client-streamed
// call; relayed is nil otherwise), if it failed first (and cancelled the
// function's call), else ErrClosed when the proxy is closing, else as for
// the unary action calls.
func (p *Proxy) streamInError(err error, relayed <-chan error) error {
	select {
	case rerr := <-relayed:
		if rerr != nil {
			return rerr
		}
	default:
	}
	if p.ctx.Err() != nil {
		return ErrClosed
	}
	return functionCallError(err)
}

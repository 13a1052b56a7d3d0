package proxybench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"runtime"
	"sync"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/statemesh/statemesh/examples/counter/counterpb"
	"github.com/statemesh/statemesh/protocol/functionpb"
)

// Floor runs the reference systems SystemEcho and SystemRelay: the
// request path of statemesh-grpc with gRPC and nothing else, in this
// process, so that a run shows what gRPC alone costs on the machine.
//
//   - Echo: n bare gRPC servers of the example Counter service, each
//     answering Increment from an in-memory map. This is the client → node
//     hop alone.
//   - Relay: n more bare Counter servers, each relaying every Increment,
//     as the proxy does, over one Crdt.Handle stream per counter id to a
//     bare function server of its own, which counts in memory and replies.
//     This is both hops (client → node → function) with no state, no
//     replication and no function SDK.
//
// The front servers take the proxy's server options (NumStreamWorkers);
// the relay waits for a stream's reply in the calling handler, which is
// cheaper than the proxy's reader goroutine per stream. Both are floors,
// not designs: neither persists, replicates or validates anything.
type Floor struct {
	servers []*grpc.Server
	conns   []*grpc.ClientConn
	echo    []string
	relay   []string
}

// StartFloor starts n echo servers and n relay servers (with their n
// function servers) on loopback.
func StartFloor(n int) (f *Floor, err error) {
	f = &Floor{}
	defer func() {
		if err != nil {
			f.Close()
		}
	}()
	serve := func(register func(*grpc.Server)) (string, error) {
		lis, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return "", err
		}
		s := grpc.NewServer(grpc.NumStreamWorkers(uint32(runtime.GOMAXPROCS(0))))
		register(s)
		f.servers = append(f.servers, s)
		go s.Serve(lis) //nolint:errcheck // ends with Stop
		return lis.Addr().String(), nil
	}
	for range n {
		a, err := serve(func(s *grpc.Server) { counterpb.RegisterCounterServer(s, &echoCounter{counts: map[string]int64{}}) })
		if err != nil {
			return nil, err
		}
		f.echo = append(f.echo, a)

		fnAddr, err := serve(func(s *grpc.Server) { functionpb.RegisterCrdtServer(s, floorFunction{}) })
		if err != nil {
			return nil, err
		}
		conn, err := grpc.NewClient(fnAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			return nil, err
		}
		f.conns = append(f.conns, conn)
		rc := &relayCounter{fn: functionpb.NewCrdtClient(conn), streams: map[string]*relayStream{}}
		a, err = serve(func(s *grpc.Server) { counterpb.RegisterCounterServer(s, rc) })
		if err != nil {
			return nil, err
		}
		f.relay = append(f.relay, a)
	}
	return f, nil
}

// EchoAddrs and RelayAddrs are the front servers' addresses, one per node.
func (f *Floor) EchoAddrs() []string  { return f.echo }
func (f *Floor) RelayAddrs() []string { return f.relay }

// Close stops every server and connection.
func (f *Floor) Close() {
	for _, c := range f.conns {
		c.Close()
	}
	for _, s := range f.servers {
		s.Stop()
	}
}

// echoCounter answers Increment from memory.
type echoCounter struct {
	counterpb.UnimplementedCounterServer
	mu     sync.Mutex
	counts map[string]int64
}

func (e *echoCounter) Increment(_ context.Context, r *counterpb.ChangeRequest) (*counterpb.CounterValue, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.counts[r.GetId()] += r.GetValue()
	return &counterpb.CounterValue{Value: e.counts[r.GetId()]}, nil
}

// relayCounter relays Increment to its function over a stream per id,
// one command at a time per id, as the proxy serialises an entity's
// commands.
type relayCounter struct {
	counterpb.UnimplementedCounterServer
	fn      functionpb.CrdtClient
	mu      sync.Mutex
	streams map[string]*relayStream
}

type relayStream struct {
	mu     sync.Mutex
	stream grpc.BidiStreamingClient[functionpb.CrdtStreamIn, functionpb.CrdtStreamOut]
	cancel context.CancelFunc
	next   int64
}

// drop ends a stream that failed; the next Increment opens another.
func (s *relayStream) drop(err error) error {
	s.cancel()
	s.stream = nil
	return err
}

func (rc *relayCounter) Increment(ctx context.Context, r *counterpb.ChangeRequest) (*counterpb.CounterValue, error) {
	rc.mu.Lock()
	s := rc.streams[r.GetId()]
	if s == nil {
		s = &relayStream{}
		rc.streams[r.GetId()] = s
	}
	rc.mu.Unlock()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stream == nil {
		sctx, cancel := context.WithCancel(context.Background())
		st, err := rc.fn.Handle(sctx)
		if err != nil {
			cancel()
			return nil, err
		}
		s.stream, s.cancel = st, cancel
	}
	payload, err := anypb.New(r)
	if err != nil {
		return nil, err
	}
	s.next++
	cmd := &functionpb.Command{EntityId: r.GetId(), Id: s.next, Name: "Increment", Payload: payload}
	if err := s.stream.Send(&functionpb.CrdtStreamIn{Message: &functionpb.CrdtStreamIn_Command{Command: cmd}}); err != nil {
		return nil, s.drop(err)
	}
	out, err := s.stream.Recv()
	if err != nil {
		return nil, s.drop(err)
	}
	rep := out.GetReply().GetClientAction().GetReply()
	if out.GetReply().GetCommandId() != s.next || rep == nil {
		return nil, s.drop(fmt.Errorf("relay: unexpected answer %v", out))
	}
	v := new(counterpb.CounterValue)
	if err := rep.GetPayload().UnmarshalTo(v); err != nil {
		return nil, err
	}
	return v, nil
}

// floorFunction is a bare function server: each stream counts its
// entity's increments in memory.
type floorFunction struct {
	functionpb.UnimplementedCrdtServer
}

func (floorFunction) Handle(stream grpc.BidiStreamingServer[functionpb.CrdtStreamIn, functionpb.CrdtStreamOut]) error {
	var count int64
	for {
		in, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		cmd := in.GetCommand()
		if cmd == nil {
			return fmt.Errorf("floor function: expected a command, got %T", in.GetMessage())
		}
		var r counterpb.ChangeRequest
		if err := cmd.GetPayload().UnmarshalTo(&r); err != nil {
			return err
		}
		count += r.GetValue()
		payload, err := anypb.New(&counterpb.CounterValue{Value: count})
		if err != nil {
			return err
		}
		reply := &functionpb.CrdtReply{CommandId: cmd.GetId(), ClientAction: &functionpb.ClientAction{
			Action: &functionpb.ClientAction_Reply{Reply: &functionpb.Reply{Payload: payload}}}}
		if err := stream.Send(&functionpb.CrdtStreamOut{Message: &functionpb.CrdtStreamOut_Reply{Reply: reply}}); err != nil {
			return err
		}
	}
}

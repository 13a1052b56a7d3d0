// Package gomodel implements the TCK model services
// (protocol/tck/v1/tck.proto) with the Go SDK's public API: it is what
// `go test ./tck/` runs the TCK against to show that package sdk speaks
// the function protocol correctly.
//
// Faults (WithFault) make the model deliberately wrong, so that the TCK's
// own tests can show that its checks fail when they should.
package gomodel

import (
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"

	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/statemesh/statemesh/protocol/functionpb"
	"github.com/statemesh/statemesh/protocol/tckpb"
	"github.com/statemesh/statemesh/sdk"
)

// SnapshotEvery is the snapshot interval the TCK expects of the
// event-sourced model.
const SnapshotEvery = 5

// Fault is a deliberate bug in the model.
type Fault string

const (
	// FaultDoubleIncrement makes PNCounterTck increment by 2n: a wrong
	// delta (and a wrong reply).
	FaultDoubleIncrement Fault = "double-increment"
	// FaultNoSnapshot registers EventSourcedTck without snapshots.
	FaultNoSnapshot Fault = "no-snapshot"
	// FaultSinkReplyWrongID makes TckSink.Call answer another id.
	FaultSinkReplyWrongID Fault = "sink-wrong-id"
	// FaultStreamNeverEnds makes ProcessStreamed ignore end_state.
	FaultStreamNeverEnds Fault = "stream-never-ends"
	// FaultConsistencyAll makes every consistency action set ALL.
	FaultConsistencyAll Fault = "consistency-all"
	// FaultNoFlag leaves FlagTck unregistered: discovery lacks a required
	// entity.
	FaultNoFlag Fault = "no-flag"
	// FaultStreamedOutShort makes StreamedActionTck send one message
	// fewer than asked.
	FaultStreamedOutShort Fault = "streamed-out-short"
	// FaultStreamedInDropFirst makes StreamedInActionTck leave the first
	// message out of its reply.
	FaultStreamedInDropFirst Fault = "streamed-in-drop-first"
	// FaultStreamedWrongEcho makes BidiActionTck answer each message with
	// another.
	FaultStreamedWrongEcho Fault = "streamed-wrong-echo"
)

// Option configures the model.
type Option func(*config)

type config struct{ faults map[Fault]bool }

// WithFault injects a fault.
func WithFault(f Fault) Option { return func(c *config) { c.faults[f] = true } }

// crdtKinds are the CRDT services the model declares, with their CRDTs.
var crdtKinds = []struct {
	service string
	newCrdt func() sdk.Crdt
}{
	{"GCounterTck", func() sdk.Crdt { return sdk.NewGCounter() }},
	{"PNCounterTck", func() sdk.Crdt { return sdk.NewPNCounter() }},
	{"GSetTck", func() sdk.Crdt { return sdk.NewGSet() }},
	{"ORSetTck", func() sdk.Crdt { return sdk.NewORSet() }},
	{"LWWRegisterTck", func() sdk.Crdt { return sdk.NewLWWRegister() }},
	{"FlagTck", func() sdk.Crdt { return sdk.NewFlag() }},
	{"ORMapTck", func() sdk.Crdt { return sdk.NewORMap() }},
	{"VoteTck", func() sdk.Crdt { return sdk.NewVote() }},
}

func service(name string) protoreflect.ServiceDescriptor {
	return tckpb.File_tck_v1_tck_proto.Services().ByName(protoreflect.Name(name))
}

// Register registers every model service on s, the optional ones
// (ORMapTck, VoteTck, StreamedActionTck, StreamedInActionTck,
// BidiActionTck) included.
func Register(s *sdk.Service, opts ...Option) error {
	cfg := &config{faults: make(map[Fault]bool)}
	for _, o := range opts {
		o(cfg)
	}
	for _, k := range crdtKinds {
		if k.service == "FlagTck" && cfg.faults[FaultNoFlag] {
			continue
		}
		newCrdt := k.newCrdt
		if err := s.RegisterCrdt(service(k.service), func(string) sdk.CrdtEntity {
			return &crdtEntity{crdt: newCrdt(), cfg: cfg}
		}); err != nil {
			return err
		}
	}
	var esOpts []sdk.EntityOption
	if !cfg.faults[FaultNoSnapshot] {
		esOpts = append(esOpts, sdk.SnapshotEvery(SnapshotEvery))
	}
	if err := s.RegisterEventSourced(service("EventSourcedTck"), func(string) sdk.EventSourcedEntity { return &esEntity{} }, esOpts...); err != nil {
		return err
	}
	if err := s.RegisterValue(service("ValueEntityTck"), func(string) sdk.ValueEntity { return sdk.ValueEntityFunc(handleValue) }); err != nil {
		return err
	}
	if err := s.RegisterAction(service("ActionTck"), handleAction); err != nil {
		return err
	}
	if err := s.RegisterActionHandlers(service("StreamedActionTck"), sdk.ActionHandlers{StreamedOut: handleStreamedOut(cfg.faults[FaultStreamedOutShort])}); err != nil {
		return err
	}
	if err := s.RegisterActionHandlers(service("StreamedInActionTck"), sdk.ActionHandlers{StreamedIn: handleStreamedIn(cfg.faults[FaultStreamedInDropFirst])}); err != nil {
		return err
	}
	if err := s.RegisterActionHandlers(service("BidiActionTck"), sdk.ActionHandlers{Streamed: handleStreamed(cfg.faults[FaultStreamedWrongEcho])}); err != nil {
		return err
	}
	return s.RegisterAction(service("TckSink"), func(_ *sdk.CommandContext, cmd proto.Message) (proto.Message, error) {
		req, ok := cmd.(*tckpb.SinkRequest)
		if !ok {
			return nil, sdk.Fail(codes.InvalidArgument, "gomodel: unexpected %T", cmd)
		}
		id := req.GetId()
		if cfg.faults[FaultSinkReplyWrongID] {
			id += "-wrong"
		}
		return &tckpb.SinkResponse{Id: id}, nil
	})
}

// New returns a Service with the model registered.
func New(opts ...Option) (*sdk.Service, error) {
	s := sdk.New(sdk.WithServiceName("statemesh-tck-gomodel"))
	if err := Register(s, opts...); err != nil {
		return nil, err
	}
	return s, nil
}

const sinkService = "statemesh.tck.v1.TckSink"

// applyEffects applies e to ctx; it returns the failure to fail the
// command with and whether the command was forwarded.
func applyEffects(ctx *sdk.CommandContext, e *tckpb.Effects) (forwarded bool, err error) {
	if e.GetFail() != "" {
		return false, sdk.Fail(codes.FailedPrecondition, "%s", e.GetFail())
	}
	if e.GetForward() != "" {
		ctx.Forward(sinkService, "Call", &tckpb.SinkRequest{Id: e.GetForward()})
		forwarded = true
	}
	for _, se := range e.GetSideEffects() {
		ctx.SideEffect(sinkService, "Call", &tckpb.SinkRequest{Id: se.GetId()}, se.GetSynchronous())
	}
	return forwarded, nil
}

type crdtEntity struct {
	crdt sdk.Crdt
	cfg  *config
}

func (e *crdtEntity) CRDT() sdk.Crdt { return e.crdt }

// sortedStrings is items as sorted strings.
func sortedStrings(items [][]byte) []string {
	out := make([]string, 0, len(items))
	for _, it := range items {
		out = append(out, string(it))
	}
	slices.Sort(out)
	return out
}

// value is the CRDT's state as the model reports it.
func (e *crdtEntity) value() *tckpb.CrdtValue {
	switch c := e.crdt.(type) {
	case *sdk.GCounter:
		return &tckpb.CrdtValue{Counter: int64(c.Value())}
	case *sdk.PNCounter:
		return &tckpb.CrdtValue{Counter: c.Value()}
	case *sdk.GSet:
		return &tckpb.CrdtValue{Elements: sortedStrings(c.Elements())}
	case *sdk.ORSet:
		return &tckpb.CrdtValue{Elements: sortedStrings(c.Elements())}
	case *sdk.LWWRegister:
		return &tckpb.CrdtValue{Value: string(c.Value())}
	case *sdk.Flag:
		return &tckpb.CrdtValue{Enabled: c.Enabled()}
	case *sdk.ORMap:
		v := &tckpb.CrdtValue{}
		for _, k := range c.Keys() { // sorted
			n := int64(0)
			if pn, ok := c.Get(k).(*sdk.PNCounter); ok {
				n = pn.Value()
			}
			v.Entries = append(v.Entries, &tckpb.ORMapValue{Key: string(k), Counter: n})
		}
		return v
	case *sdk.Vote:
		return &tckpb.CrdtValue{VotesFor: uint32(c.VotesFor()), TotalVoters: uint32(c.Voters()), SelfVote: c.SelfVote()}
	}
	return &tckpb.CrdtValue{}
}

func (e *crdtEntity) HandleCommand(ctx *sdk.CrdtContext, cmd proto.Message) (proto.Message, error) {
	switch req := cmd.(type) {
	case *tckpb.CrdtStreamedRequest:
		if ctx.Streamed() {
			end := req.GetEndState()
			if e.cfg.faults[FaultStreamNeverEnds] {
				end = nil
			}
			ctx.OnChange(func() (proto.Message, bool, error) {
				v := e.value()
				return &tckpb.CrdtResponse{State: v}, end != nil && proto.Equal(v, end), nil
			})
		}
		return &tckpb.CrdtResponse{State: e.value()}, nil
	case *tckpb.CrdtRequest:
		forwarded := false
		for _, a := range req.GetActions() {
			if eff := a.GetEffects(); eff != nil {
				f, err := applyEffects(&ctx.CommandContext, eff)
				if err != nil {
					return nil, err
				}
				forwarded = forwarded || f
				continue
			}
			if err := e.apply(ctx, a); err != nil {
				return nil, err
			}
		}
		if forwarded {
			return nil, nil
		}
		return &tckpb.CrdtResponse{State: e.value()}, nil
	}
	return nil, sdk.Fail(codes.InvalidArgument, "gomodel: unexpected %T", cmd)
}

func (e *crdtEntity) apply(ctx *sdk.CrdtContext, a *tckpb.CrdtAction) error {
	switch x := a.GetAction().(type) {
	case *tckpb.CrdtAction_Delete:
		if x.Delete {
			ctx.Delete()
		}
		return nil
	case *tckpb.CrdtAction_Consistency:
		wc := functionpb.WriteConsistency(x.Consistency)
		if e.cfg.faults[FaultConsistencyAll] {
			wc = functionpb.WriteConsistency_WRITE_CONSISTENCY_ALL
		}
		ctx.SetWriteConsistency(wc)
		return nil
	}
	bad := sdk.Fail(codes.InvalidArgument, "gomodel: action %T does not fit a %T", a.GetAction(), e.crdt)
	switch c := e.crdt.(type) {
	case *sdk.GCounter:
		x, ok := a.GetAction().(*tckpb.CrdtAction_Increment)
		if !ok || x.Increment < 0 {
			return bad
		}
		c.Increment(uint64(x.Increment))
	case *sdk.PNCounter:
		x, ok := a.GetAction().(*tckpb.CrdtAction_Increment)
		if !ok {
			return bad
		}
		n := x.Increment
		if e.cfg.faults[FaultDoubleIncrement] {
			n *= 2
		}
		c.Increment(n)
	case *sdk.GSet:
		x, ok := a.GetAction().(*tckpb.CrdtAction_Add)
		if !ok {
			return bad
		}
		c.Add([]byte(x.Add))
	case *sdk.ORSet:
		switch x := a.GetAction().(type) {
		case *tckpb.CrdtAction_Add:
			c.Add([]byte(x.Add))
		case *tckpb.CrdtAction_Remove:
			c.Remove([]byte(x.Remove))
		case *tckpb.CrdtAction_Clear:
			if x.Clear {
				c.Clear()
			}
		default:
			return bad
		}
	case *sdk.LWWRegister:
		x, ok := a.GetAction().(*tckpb.CrdtAction_Set)
		if !ok {
			return bad
		}
		c.Set([]byte(x.Set))
	case *sdk.Flag:
		x, ok := a.GetAction().(*tckpb.CrdtAction_Enable)
		if !ok {
			return bad
		}
		if x.Enable {
			c.Enable()
		} else {
			c.Disable()
		}
	case *sdk.ORMap:
		x, ok := a.GetAction().(*tckpb.CrdtAction_Ormap)
		if !ok {
			return bad
		}
		key := []byte(x.Ormap.GetKey())
		switch y := x.Ormap.GetAction().(type) {
		case *tckpb.ORMapAction_Increment:
			pn, err := sdk.GetOrCreate(c, key, sdk.NewPNCounter)
			if err != nil {
				return sdk.Fail(codes.InvalidArgument, "gomodel: %v", err)
			}
			pn.Increment(y.Increment)
		case *tckpb.ORMapAction_Remove:
			if y.Remove {
				c.Remove(key)
			}
		default:
			return bad
		}
	case *sdk.Vote:
		x, ok := a.GetAction().(*tckpb.CrdtAction_Vote)
		if !ok {
			return bad
		}
		c.Vote(x.Vote)
	default:
		return bad
	}
	return nil
}

// esEntity's state is the concatenation of its events' values.
type esEntity struct{ state string }

func (e *esEntity) HandleCommand(ctx *sdk.EventSourcedContext, cmd proto.Message) (proto.Message, error) {
	req, ok := cmd.(*tckpb.EventSourcedRequest)
	if !ok {
		return nil, sdk.Fail(codes.InvalidArgument, "gomodel: unexpected %T", cmd)
	}
	// The SDK applies the events after the handler returns: the reply is
	// computed from the state before them plus the emitted values.
	after := e.state
	forwarded := false
	for _, a := range req.GetActions() {
		switch x := a.GetAction().(type) {
		case *tckpb.EventSourcedAction_Emit:
			ctx.Emit(&tckpb.Persisted{Value: x.Emit})
			after += x.Emit
		case *tckpb.EventSourcedAction_Effects:
			f, err := applyEffects(&ctx.CommandContext, x.Effects)
			if err != nil {
				return nil, err
			}
			forwarded = forwarded || f
		}
	}
	if forwarded {
		return nil, nil
	}
	return &tckpb.EventSourcedResponse{State: after}, nil
}

func (e *esEntity) HandleEvent(event proto.Message) error {
	p, ok := event.(*tckpb.Persisted)
	if !ok {
		return sdk.Fail(codes.InvalidArgument, "gomodel: unexpected event %T", event)
	}
	e.state += p.GetValue()
	return nil
}

func (e *esEntity) Snapshot() (proto.Message, error) { return &tckpb.Persisted{Value: e.state}, nil }

func (e *esEntity) HandleSnapshot(snapshot proto.Message) error {
	p, ok := snapshot.(*tckpb.Persisted)
	if !ok {
		return sdk.Fail(codes.InvalidArgument, "gomodel: unexpected snapshot %T", snapshot)
	}
	e.state = p.GetValue()
	return nil
}

func handleValue(ctx *sdk.ValueContext, state proto.Message, cmd proto.Message) (proto.Message, error) {
	req, ok := cmd.(*tckpb.ValueRequest)
	if !ok {
		return nil, sdk.Fail(codes.InvalidArgument, "gomodel: unexpected %T", cmd)
	}
	cur := ""
	if p, ok := state.(*tckpb.Persisted); ok {
		cur = p.GetValue()
	} else if state != nil {
		return nil, sdk.Fail(codes.InvalidArgument, "gomodel: unexpected state %T", state)
	}
	forwarded := false
	for _, a := range req.GetActions() {
		switch x := a.GetAction().(type) {
		case *tckpb.ValueAction_Update:
			ctx.UpdateState(&tckpb.Persisted{Value: x.Update})
			cur = x.Update
		case *tckpb.ValueAction_Delete:
			if x.Delete {
				ctx.DeleteState()
				cur = ""
			}
		case *tckpb.ValueAction_Effects:
			f, err := applyEffects(&ctx.CommandContext, x.Effects)
			if err != nil {
				return nil, err
			}
			forwarded = forwarded || f
		}
	}
	if forwarded {
		return nil, nil
	}
	return &tckpb.ValueResponse{State: cur}, nil
}

func handleAction(ctx *sdk.CommandContext, cmd proto.Message) (proto.Message, error) {
	req, ok := cmd.(*tckpb.ActionRequest)
	if !ok {
		return nil, sdk.Fail(codes.InvalidArgument, "gomodel: unexpected %T", cmd)
	}
	forwarded, err := applyEffects(ctx, req.GetEffects())
	if err != nil {
		return nil, err
	}
	if forwarded {
		return nil, nil
	}
	return &tckpb.ActionResponse{Message: req.GetMessage()}, nil
}

// handleStreamedOut answers request.count messages "<message>-<i>" (one
// fewer if short); the request's effects apply to the call (a failure
// after the messages).
func handleStreamedOut(short bool) sdk.StreamedOutHandler {
	return func(ctx *sdk.CommandContext, cmd proto.Message, stream *sdk.ActionStream) error {
		req, ok := cmd.(*tckpb.ActionRequest)
		if !ok {
			return sdk.Fail(codes.InvalidArgument, "gomodel: unexpected %T", cmd)
		}
		n := req.GetCount()
		if short {
			n--
		}
		for i := range n {
			if err := stream.Send(&tckpb.ActionResponse{Message: fmt.Sprintf("%s-%d", req.GetMessage(), i)}); err != nil {
				return err
			}
		}
		forwarded, err := applyEffects(ctx, req.GetEffects())
		if err != nil {
			return err
		}
		if forwarded {
			return stream.Send(nil)
		}
		return nil
	}
}

// handleStreamedIn answers the requests' messages joined by "," (the
// first left out if dropFirst), applying each request's effects as it
// arrives (a failure fails the call at once).
func handleStreamedIn(dropFirst bool) sdk.StreamedInHandler {
	return func(ctx *sdk.CommandContext, in *sdk.CommandStream) (proto.Message, error) {
		var msgs []string
		forwarded := false
		for i := 0; ; i++ {
			cmd, err := in.Recv()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				return nil, err
			}
			req, ok := cmd.(*tckpb.ActionRequest)
			if !ok {
				return nil, sdk.Fail(codes.InvalidArgument, "gomodel: unexpected %T", cmd)
			}
			f, err := applyEffects(ctx, req.GetEffects())
			if err != nil {
				return nil, err
			}
			forwarded = forwarded || f
			if i == 0 && dropFirst {
				continue
			}
			msgs = append(msgs, req.GetMessage())
		}
		if forwarded {
			return nil, nil
		}
		return &tckpb.ActionResponse{Message: strings.Join(msgs, ",")}, nil
	}
}

// handleStreamed answers each request with its message (with a "!" if
// wrong), applying its effects.
func handleStreamed(wrong bool) sdk.StreamedHandler {
	return func(ctx *sdk.CommandContext, in *sdk.CommandStream, out *sdk.ActionStream) error {
		for {
			cmd, err := in.Recv()
			if errors.Is(err, io.EOF) {
				return nil
			}
			if err != nil {
				return err
			}
			req, ok := cmd.(*tckpb.ActionRequest)
			if !ok {
				return sdk.Fail(codes.InvalidArgument, "gomodel: unexpected %T", cmd)
			}
			forwarded, err := applyEffects(ctx, req.GetEffects())
			if err != nil {
				return err
			}
			var reply proto.Message
			if !forwarded {
				msg := req.GetMessage()
				if wrong {
					msg += "!"
				}
				reply = &tckpb.ActionResponse{Message: msg}
			}
			if err := out.Send(reply); err != nil {
				return err
			}
		}
	}
}

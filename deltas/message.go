package deltas

import (
	"errors"
	"fmt"
	"sync"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"github.com/statemesh/statemesh/crdt"
	"github.com/statemesh/statemesh/protocol/syncpb"
)

// PeerID names a peer engine (the mesh uses node names).
type PeerID string

// Message is one message between engines. To is not on the wire: the
// transport knows where it sends. The CRDT values a message carries are
// immutable: an engine may share one value between several messages,
// Step never modifies the values it is given and may keep them (as
// buffered deltas), so nothing may modify them once they are in a
// message.
type Message struct {
	From, To PeerID
	// Session is the sender engine's session (Config.Session).
	Session uint64
	// AckSession and Ack acknowledge deltas: the sender holds every delta
	// below Ack of the receiver's session AckSession. AckSession 0 means no
	// acknowledgement.
	AckSession uint64
	Ack        uint64
	// Body is *Deltas, *Digest, *DigestReply, *States, or nil for a bare
	// acknowledgement.
	Body Body
}

// Body is the payload of a Message.
type Body interface{ isBody() }

// KeyState is the state, or a delta, of one key, or its deletion.
type KeyState struct {
	Key   string
	State crdt.Value // nil when Deleted
	// Deleted: the key was deleted; the deletion wins over every state.
	Deleted bool
	// shared, set by the engine on a KeyState that several messages
	// carry (one interval or one copy of the state for every peer),
	// holds State's wire form, or computes it or its size once for all
	// of them, and only when a message is encoded or measured. nil on
	// decoded messages.
	shared *sharedEncoding
}

// sharedEncoding is the lazily computed wire form of one state, or its
// length alone when only MessageSize asked. Safe for concurrent use, as
// the messages that share it are.
type sharedEncoding struct {
	mu   sync.Mutex
	b    []byte // crdt.Encode of the state, once asked for
	size int    // len(crdt.Encode(state)) once known, else 0
}

// newShared returns a shared encoding holding b, crdt.Encode of the
// state when the engine has it cached, or to be computed when b is nil.
func newShared(b []byte) *sharedEncoding { return &sharedEncoding{b: b, size: len(b)} }

// encoding returns crdt.Encode(v), encoding v the first time.
func (c *sharedEncoding) encoding(v crdt.Value) []byte {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.b == nil {
		c.b = crdt.Encode(v)
		c.size = len(c.b)
	}
	return c.b
}

// len returns len(crdt.Encode(v)), measuring v the first time.
func (c *sharedEncoding) len(v crdt.Value) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.size == 0 {
		c.size = crdt.EncodedSize(v) // never 0: an encoding holds at least its type's field
	}
	return c.size
}

// Deltas is the delta-interval [FromSeq, ToSeq) of the sender's buffer,
// joined per key.
type Deltas struct {
	FromSeq, ToSeq uint64
	Deltas         []KeyState
}

// KeyDigest is a hash of one key's encoded state.
type KeyDigest struct {
	Key  string
	Hash uint64
}

// Digest opens a full-state transfer; Seq is the sender's delta sequence
// when it took the digest.
type Digest struct {
	Seq     uint64
	Digests []KeyDigest
}

// DigestReply answers a Digest: the keys the replier wants, and its state
// of the keys the digest showed differ.
type DigestReply struct {
	Seq    uint64 // the Seq of the Digest answered
	Want   []string
	States []KeyState
}

// States carries full states. Seq is 0 in state-based sync; in a full-state
// transfer the receiver then holds every delta of the sender below Seq.
type States struct {
	Seq    uint64
	States []KeyState
}

func (*Deltas) isBody()      {}
func (*Digest) isBody()      {}
func (*DigestReply) isBody() {}
func (*States) isBody()      {}

// Limits bound what DecodeMessage accepts.
type Limits struct {
	MaxBytes    int // one encoded message
	MaxKeys     int // keys (states, digests, wants) in one message
	MaxKeyBytes int // one key
	CRDT        crdt.Limits
}

// DefaultLimits suit the mesh's peer transport.
var DefaultLimits = Limits{
	MaxBytes:    64 << 20,
	MaxKeys:     1 << 17,
	MaxKeyBytes: 4 << 10,
	CRDT:        crdt.DefaultLimits,
}

// ErrDecode is wrapped by every DecodeMessage error.
var ErrDecode = errors.New("deltas: malformed message")

// EncodeMessage returns the wire form of m (a syncpb.Message). States
// are embedded as crdt.Encode writes them.
func EncodeMessage(m Message) []byte { return AppendMessage(nil, m) }

// MessageSize returns len(EncodeMessage(m)), computed without building
// the message (a state whose encoding is known is counted by its length).
func MessageSize(m Message) int {
	n := stringSize(1, string(m.From)) + uintSize(2, m.Session) + uintSize(3, m.AckSession) + uintSize(4, m.Ack)
	switch body := m.Body.(type) {
	case *Deltas:
		n += fieldSize(5, uintSize(1, body.FromSeq)+uintSize(2, body.ToSeq)+keyStatesSize(3, body.Deltas))
	case *Digest:
		x := 0
		for _, kd := range body.Digests {
			y := stringSize(1, kd.Key)
			if kd.Hash != 0 {
				y += protowire.SizeTag(2) + protowire.SizeFixed64()
			}
			x += fieldSize(1, y)
		}
		n += fieldSize(6, x+uintSize(2, body.Seq))
	case *DigestReply:
		x := 0
		for _, k := range body.Want {
			x += fieldSize(1, len(k))
		}
		n += fieldSize(7, x+keyStatesSize(2, body.States)+uintSize(3, body.Seq))
	case *States:
		n += fieldSize(8, uintSize(1, body.Seq)+keyStatesSize(2, body.States))
	}
	return n
}

// keyStatesSize, fieldSize, stringSize and uintSize are the lengths of
// what appendKeyStates, appendField, appendString and appendUint append.
func keyStatesSize(num protowire.Number, ks []KeyState) int {
	n := 0
	for _, k := range ks {
		y := stringSize(1, k.Key)
		switch {
		case k.Deleted:
			y += uintSize(3, 1)
		case k.shared != nil:
			y += fieldSize(2, k.shared.len(k.State))
		default:
			y += fieldSize(2, crdt.EncodedSize(k.State))
		}
		n += fieldSize(num, y)
	}
	return n
}

func fieldSize(num protowire.Number, n int) int {
	return protowire.SizeTag(num) + protowire.SizeBytes(n)
}

func stringSize(num protowire.Number, v string) int {
	if v == "" {
		return 0
	}
	return fieldSize(num, len(v))
}

func uintSize(num protowire.Number, v uint64) int {
	if v == 0 {
		return 0
	}
	return protowire.SizeTag(num) + protowire.SizeVarint(v)
}

// AppendMessage appends the wire form of m to b.
func AppendMessage(b []byte, m Message) []byte {
	b = appendString(b, 1, string(m.From))
	b = appendUint(b, 2, m.Session)
	b = appendUint(b, 3, m.AckSession)
	b = appendUint(b, 4, m.Ack)
	switch body := m.Body.(type) {
	case *Deltas:
		var x []byte
		x = appendUint(x, 1, body.FromSeq)
		x = appendUint(x, 2, body.ToSeq)
		x = appendKeyStates(x, 3, body.Deltas)
		b = appendField(b, 5, x)
	case *Digest:
		var x []byte
		for _, kd := range body.Digests {
			var y []byte
			y = appendBytes(y, 1, []byte(kd.Key))
			if kd.Hash != 0 {
				y = protowire.AppendTag(y, 2, protowire.Fixed64Type)
				y = protowire.AppendFixed64(y, kd.Hash)
			}
			x = appendField(x, 1, y)
		}
		x = appendUint(x, 2, body.Seq)
		b = appendField(b, 6, x)
	case *DigestReply:
		var x []byte
		for _, k := range body.Want {
			x = appendField(x, 1, []byte(k))
		}
		x = appendKeyStates(x, 2, body.States)
		x = appendUint(x, 3, body.Seq)
		b = appendField(b, 7, x)
	case *States:
		var x []byte
		x = appendUint(x, 1, body.Seq)
		x = appendKeyStates(x, 2, body.States)
		b = appendField(b, 8, x)
	}
	return b
}

func appendKeyStates(b []byte, num protowire.Number, ks []KeyState) []byte {
	for _, k := range ks {
		var y []byte
		y = appendBytes(y, 1, []byte(k.Key))
		if k.Deleted {
			y = appendUint(y, 3, 1)
			b = appendField(b, num, y)
			continue
		}
		var enc []byte
		if k.shared != nil {
			enc = k.shared.encoding(k.State)
		} else {
			enc = crdt.Encode(k.State)
		}
		y = appendField(y, 2, enc)
		b = appendField(b, num, y)
	}
	return b
}

// appendField appends a length-delimited field, even when v is empty.
func appendField(b []byte, num protowire.Number, v []byte) []byte {
	b = protowire.AppendTag(b, num, protowire.BytesType)
	return protowire.AppendBytes(b, v)
}

func appendBytes(b []byte, num protowire.Number, v []byte) []byte {
	if len(v) == 0 {
		return b
	}
	return appendField(b, num, v)
}

func appendString(b []byte, num protowire.Number, v string) []byte {
	return appendBytes(b, num, []byte(v))
}

func appendUint(b []byte, num protowire.Number, v uint64) []byte {
	if v == 0 {
		return b
	}
	b = protowire.AppendTag(b, num, protowire.VarintType)
	return protowire.AppendVarint(b, v)
}

func decErr(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrDecode}, args...)...)
}

// DecodeMessage parses and validates a message from untrusted bytes. It
// never panics. The caller sets To.
func DecodeMessage(b []byte, lim Limits) (Message, error) {
	if len(b) > lim.MaxBytes {
		return Message{}, decErr("%d bytes, limit %d", len(b), lim.MaxBytes)
	}
	var pm syncpb.Message
	if err := proto.Unmarshal(b, &pm); err != nil {
		return Message{}, decErr("%v", err)
	}
	m := Message{From: PeerID(pm.From), Session: pm.Session, AckSession: pm.AckSession, Ack: pm.Ack}
	if m.From == "" || len(m.From) > lim.MaxKeyBytes {
		return Message{}, decErr("sender id of %d bytes", len(m.From))
	}
	if m.Session == 0 {
		return Message{}, decErr("session 0")
	}
	// key checks one key against the limits and against the other keys of
	// its list (seen), which must be distinct.
	keys := 0
	key := func(k []byte, seen map[string]struct{}) (string, error) {
		keys++
		if keys > lim.MaxKeys {
			return "", decErr("more than %d keys", lim.MaxKeys)
		}
		if len(k) > lim.MaxKeyBytes {
			return "", decErr("key of %d bytes, limit %d", len(k), lim.MaxKeyBytes)
		}
		if _, dup := seen[string(k)]; dup {
			return "", decErr("key %q twice in one list", k)
		}
		seen[string(k)] = struct{}{}
		return string(k), nil
	}
	states := func(in []*syncpb.KeyState) ([]KeyState, error) {
		out := make([]KeyState, 0, len(in))
		seen := make(map[string]struct{}, len(in))
		for _, ks := range in {
			k, err := key(ks.GetKey(), seen)
			if err != nil {
				return nil, err
			}
			if ks.GetDeleted() {
				if ks.GetState() != nil {
					return nil, decErr("deleted key %q with a state", k)
				}
				out = append(out, KeyState{Key: k, Deleted: true})
				continue
			}
			if ks.GetState() == nil {
				return nil, decErr("key %q without a state", k)
			}
			v, err := crdt.FromProto(ks.GetState(), lim.CRDT)
			if err != nil {
				return nil, fmt.Errorf("%w: key %q: %w", ErrDecode, k, err)
			}
			out = append(out, KeyState{Key: k, State: v})
		}
		return out, nil
	}
	var err error
	switch b := pm.Body.(type) {
	case *syncpb.Message_Deltas:
		d := &Deltas{FromSeq: b.Deltas.GetFromSeq(), ToSeq: b.Deltas.GetToSeq()}
		if d.FromSeq > d.ToSeq {
			return Message{}, decErr("delta interval [%d, %d)", d.FromSeq, d.ToSeq)
		}
		if d.Deltas, err = states(b.Deltas.GetDeltas()); err != nil {
			return Message{}, err
		}
		m.Body = d
	case *syncpb.Message_Digest:
		d := &Digest{Seq: b.Digest.GetSeq()}
		seen := map[string]struct{}{}
		for _, kd := range b.Digest.GetDigests() {
			k, err := key(kd.GetKey(), seen)
			if err != nil {
				return Message{}, err
			}
			d.Digests = append(d.Digests, KeyDigest{Key: k, Hash: kd.GetHash()})
		}
		m.Body = d
	case *syncpb.Message_DigestReply:
		r := &DigestReply{Seq: b.DigestReply.GetSeq()}
		seen := map[string]struct{}{}
		for _, w := range b.DigestReply.GetWant() {
			k, err := key(w, seen)
			if err != nil {
				return Message{}, err
			}
			r.Want = append(r.Want, k)
		}
		if r.States, err = states(b.DigestReply.GetStates()); err != nil {
			return Message{}, err
		}
		m.Body = r
	case *syncpb.Message_States:
		s := &States{Seq: b.States.GetSeq()}
		if s.States, err = states(b.States.GetStates()); err != nil {
			return Message{}, err
		}
		m.Body = s
	}
	return m, nil
}

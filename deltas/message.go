package deltas

import (
	"errors"
	"fmt"
	"sync"
	"unicode/utf8"

	"google.golang.org/protobuf/encoding/protowire"

	"github.com/statemesh/statemesh/crdt"
	"github.com/statemesh/statemesh/internal/wire"
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
	// Marks say what the sender holds of third peers' deltas (see Mark).
	Marks []Mark
}

// Mark says that the sender of a message holds every delta below Seq of
// Peer's buffer in Peer's session Session, as its acknowledgements to
// Peer say. An engine that holds back the deltas it received from Peer
// (Config.RelayHoldTicks) need not relay them to the sender of the mark.
type Mark struct {
	Peer    PeerID
	Session uint64
	Seq     uint64
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
	for _, mk := range m.Marks {
		n += fieldSize(9, stringSize(1, string(mk.Peer))+uintSize(2, mk.Session)+uintSize(3, mk.Seq))
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

// AppendMessage appends the wire form of m to b. Nested messages are
// written in place (wire.AppendLengthPrefixed), states too.
func AppendMessage(b []byte, m Message) []byte {
	b = appendString(b, 1, string(m.From))
	b = appendUint(b, 2, m.Session)
	b = appendUint(b, 3, m.AckSession)
	b = appendUint(b, 4, m.Ack)
	// The marks before the body, where the protobuf library writes them
	// (a oneof last).
	for _, mk := range m.Marks {
		b = appendMessageField(b, 9, func(b []byte) []byte {
			b = appendString(b, 1, string(mk.Peer))
			b = appendUint(b, 2, mk.Session)
			return appendUint(b, 3, mk.Seq)
		})
	}
	switch body := m.Body.(type) {
	case *Deltas:
		b = appendMessageField(b, 5, func(b []byte) []byte {
			b = appendUint(b, 1, body.FromSeq)
			b = appendUint(b, 2, body.ToSeq)
			return appendKeyStates(b, 3, body.Deltas)
		})
	case *Digest:
		b = appendMessageField(b, 6, func(b []byte) []byte {
			for _, kd := range body.Digests {
				b = appendMessageField(b, 1, func(b []byte) []byte {
					b = appendString(b, 1, kd.Key)
					if kd.Hash != 0 {
						b = protowire.AppendTag(b, 2, protowire.Fixed64Type)
						b = protowire.AppendFixed64(b, kd.Hash)
					}
					return b
				})
			}
			return appendUint(b, 2, body.Seq)
		})
	case *DigestReply:
		b = appendMessageField(b, 7, func(b []byte) []byte {
			for _, k := range body.Want {
				b = protowire.AppendTag(b, 1, protowire.BytesType)
				b = protowire.AppendString(b, k)
			}
			b = appendKeyStates(b, 2, body.States)
			return appendUint(b, 3, body.Seq)
		})
	case *States:
		b = appendMessageField(b, 8, func(b []byte) []byte {
			b = appendUint(b, 1, body.Seq)
			return appendKeyStates(b, 2, body.States)
		})
	}
	return b
}

// appendMessageField appends field num holding the message body appends.
func appendMessageField(b []byte, num protowire.Number, body func([]byte) []byte) []byte {
	b = protowire.AppendTag(b, num, protowire.BytesType)
	return wire.AppendLengthPrefixed(b, body)
}

func appendKeyStates(b []byte, num protowire.Number, ks []KeyState) []byte {
	for _, k := range ks {
		b = appendMessageField(b, num, func(b []byte) []byte {
			b = appendString(b, 1, k.Key)
			if k.Deleted {
				return appendUint(b, 3, 1)
			}
			if k.shared != nil {
				return appendField(b, 2, k.shared.encoding(k.State))
			}
			return appendMessageField(b, 2, func(b []byte) []byte { return crdt.AppendEncode(b, k.State) })
		})
	}
	return b
}

// appendField appends a length-delimited field, even when v is empty.
func appendField(b []byte, num protowire.Number, v []byte) []byte {
	b = protowire.AppendTag(b, num, protowire.BytesType)
	return protowire.AppendBytes(b, v)
}

func appendString(b []byte, num protowire.Number, v string) []byte {
	if v == "" {
		return b
	}
	b = protowire.AppendTag(b, num, protowire.BytesType)
	return protowire.AppendString(b, v)
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
//
// It reads the wire format itself (internal/wire) and each state with
// crdt.Decode, without building the generated messages first: the mesh
// decodes every message it receives. As crdt.Decode, it refuses a
// singular field (the body, a key state's state) that comes twice.
func DecodeMessage(b []byte, lim Limits) (Message, error) {
	if len(b) > lim.MaxBytes {
		return Message{}, decErr("%d bytes, limit %d", len(b), lim.MaxBytes)
	}
	md := msgDecoder{lim: lim, crdt: crdt.NewDecoder(lim.CRDT)}
	m, err := md.message(b)
	if err != nil {
		if errors.Is(err, wire.ErrMalformed) && !errors.Is(err, ErrDecode) {
			err = fmt.Errorf("%w: %w", ErrDecode, err) // once, here
		}
		return Message{}, err
	}
	return m, nil
}

// msgDecoder holds what the checks of one message share.
type msgDecoder struct {
	lim  Limits
	keys int           // keys read so far
	crdt *crdt.Decoder // shared by the message's states
}

func (md *msgDecoder) message(b []byte) (Message, error) {
	var (
		m    Message
		body []byte
		kind protowire.Number
	)
	err := wire.Each(b, func(f wire.Field) error {
		switch f.Num {
		case 1:
			id, err := md.peerID(f, "sender")
			m.From = id
			return err
		case 2, 3, 4:
			if err := f.Want(protowire.VarintType); err != nil {
				return err
			}
			switch f.Num {
			case 2:
				m.Session = f.V
			case 3:
				m.AckSession = f.V
			default:
				m.Ack = f.V
			}
		case 5, 6, 7, 8:
			if err := f.Want(protowire.BytesType); err != nil {
				return err
			}
			if kind != 0 {
				return decErr("two bodies (fields %d and %d)", kind, f.Num)
			}
			kind, body = f.Num, f.B
		case 9:
			if err := f.Want(protowire.BytesType); err != nil {
				return err
			}
			if len(m.Marks) >= md.lim.MaxKeys {
				return decErr("more than %d marks", md.lim.MaxKeys)
			}
			mk, err := md.mark(f.B)
			if err != nil {
				return err
			}
			m.Marks = append(m.Marks, mk)
		}
		return nil
	})
	if err != nil {
		return Message{}, err
	}
	if m.From == "" {
		return Message{}, decErr("no sender id")
	}
	if m.Session == 0 {
		return Message{}, decErr("session 0")
	}
	switch kind {
	case 5:
		m.Body, err = md.deltas(body)
	case 6:
		m.Body, err = md.digest(body)
	case 7:
		m.Body, err = md.digestReply(body)
	case 8:
		m.Body, err = md.states(body)
	}
	if err != nil {
		return Message{}, err
	}
	return m, nil
}

// peerID reads a peer id field: UTF-8, at most MaxKeyBytes.
func (md *msgDecoder) peerID(f wire.Field, what string) (PeerID, error) {
	if err := f.Want(protowire.BytesType); err != nil {
		return "", err
	}
	if len(f.B) > md.lim.MaxKeyBytes || !utf8.Valid(f.B) {
		return "", decErr("%s id of %d bytes, or not UTF-8", what, len(f.B))
	}
	return PeerID(f.B), nil
}

// mark decodes a Mark message.
func (md *msgDecoder) mark(b []byte) (Mark, error) {
	var mk Mark
	err := wire.Each(b, func(f wire.Field) error {
		switch f.Num {
		case 1:
			id, err := md.peerID(f, "mark peer")
			mk.Peer = id
			return err
		case 2, 3:
			if err := f.Want(protowire.VarintType); err != nil {
				return err
			}
			if f.Num == 2 {
				mk.Session = f.V
			} else {
				mk.Seq = f.V
			}
		}
		return nil
	})
	if err != nil {
		return Mark{}, err
	}
	if mk.Peer == "" || mk.Session == 0 {
		return Mark{}, decErr("mark without a peer id or session")
	}
	return mk, nil
}

// key checks one key against the limits and against the other keys of
// its list (seen), which must be distinct.
func (md *msgDecoder) key(k []byte, seen map[string]struct{}) (string, error) {
	md.keys++
	if md.keys > md.lim.MaxKeys {
		return "", decErr("more than %d keys", md.lim.MaxKeys)
	}
	if len(k) > md.lim.MaxKeyBytes {
		return "", decErr("key of %d bytes, limit %d", len(k), md.lim.MaxKeyBytes)
	}
	if _, dup := seen[string(k)]; dup {
		return "", decErr("key %q twice in one list", k)
	}
	s := string(k)
	seen[s] = struct{}{}
	return s, nil
}

// keyState decodes a KeyState message.
func (md *msgDecoder) keyState(b []byte, seen map[string]struct{}) (KeyState, error) {
	var (
		key, state []byte
		hasState   bool
		deleted    bool
	)
	err := wire.Each(b, func(f wire.Field) error {
		switch f.Num {
		case 1:
			if err := f.Want(protowire.BytesType); err != nil {
				return err
			}
			key = f.B
		case 2:
			if err := f.Want(protowire.BytesType); err != nil {
				return err
			}
			if hasState {
				return decErr("a key state with two states")
			}
			state, hasState = f.B, true
		case 3:
			if err := f.Want(protowire.VarintType); err != nil {
				return err
			}
			deleted = f.V != 0
		}
		return nil
	})
	if err != nil {
		return KeyState{}, err
	}
	k, err := md.key(key, seen)
	if err != nil {
		return KeyState{}, err
	}
	if deleted {
		if hasState {
			return KeyState{}, decErr("deleted key %q with a state", k)
		}
		return KeyState{Key: k, Deleted: true}, nil
	}
	if !hasState {
		return KeyState{}, decErr("key %q without a state", k)
	}
	v, err := md.crdt.Decode(state)
	if err != nil {
		return KeyState{}, fmt.Errorf("%w: key %q: %w", ErrDecode, k, err)
	}
	return KeyState{Key: k, State: v}, nil
}

// keyStates decodes the KeyStates of repeated field num of message b.
func (md *msgDecoder) keyStates(b []byte, num protowire.Number) ([]KeyState, error) {
	// Count them first: the list and the set of keys are made once, at
	// their size (growing a set of hundreds of keys costs more than this
	// pass over the tags).
	n := 0
	if err := wire.EachBytes(b, num, func([]byte) error { n++; return nil }); err != nil {
		return nil, err
	}
	if n == 0 {
		return nil, nil
	}
	out := make([]KeyState, 0, min(n, md.lim.MaxKeys))
	seen := make(map[string]struct{}, min(n, md.lim.MaxKeys))
	err := wire.EachBytes(b, num, func(v []byte) error {
		ks, err := md.keyState(v, seen)
		if err != nil {
			return err
		}
		out = append(out, ks)
		return nil
	})
	return out, err
}

// seqField reads uint64 field num of message b (0 when absent).
func seqField(b []byte, num protowire.Number) (uint64, error) {
	var v uint64
	err := wire.Each(b, func(f wire.Field) error {
		if f.Num != num {
			return nil
		}
		if err := f.Want(protowire.VarintType); err != nil {
			return err
		}
		v = f.V
		return nil
	})
	return v, err
}

func (md *msgDecoder) deltas(b []byte) (*Deltas, error) {
	d := &Deltas{}
	var err error
	if d.FromSeq, err = seqField(b, 1); err != nil {
		return nil, err
	}
	if d.ToSeq, err = seqField(b, 2); err != nil {
		return nil, err
	}
	if d.FromSeq > d.ToSeq {
		return nil, decErr("delta interval [%d, %d)", d.FromSeq, d.ToSeq)
	}
	if d.Deltas, err = md.keyStates(b, 3); err != nil {
		return nil, err
	}
	return d, nil
}

func (md *msgDecoder) digest(b []byte) (*Digest, error) {
	d := &Digest{}
	var err error
	if d.Seq, err = seqField(b, 2); err != nil {
		return nil, err
	}
	seen := map[string]struct{}{}
	err = wire.EachBytes(b, 1, func(v []byte) error {
		var key []byte
		var hash uint64
		err := wire.Each(v, func(f wire.Field) error {
			switch f.Num {
			case 1:
				if err := f.Want(protowire.BytesType); err != nil {
					return err
				}
				key = f.B
			case 2:
				if err := f.Want(protowire.Fixed64Type); err != nil {
					return err
				}
				hash = f.V
			}
			return nil
		})
		if err != nil {
			return err
		}
		k, err := md.key(key, seen)
		if err != nil {
			return err
		}
		d.Digests = append(d.Digests, KeyDigest{Key: k, Hash: hash})
		return nil
	})
	if err != nil {
		return nil, err
	}
	return d, nil
}

func (md *msgDecoder) digestReply(b []byte) (*DigestReply, error) {
	r := &DigestReply{}
	var err error
	if r.Seq, err = seqField(b, 3); err != nil {
		return nil, err
	}
	seen := map[string]struct{}{}
	err = wire.EachBytes(b, 1, func(v []byte) error {
		k, err := md.key(v, seen)
		if err != nil {
			return err
		}
		r.Want = append(r.Want, k)
		return nil
	})
	if err != nil {
		return nil, err
	}
	if r.States, err = md.keyStates(b, 2); err != nil {
		return nil, err
	}
	return r, nil
}

func (md *msgDecoder) states(b []byte) (*States, error) {
	s := &States{}
	var err error
	if s.Seq, err = seqField(b, 1); err != nil {
		return nil, err
	}
	if s.States, err = md.keyStates(b, 2); err != nil {
		return nil, err
	}
	return s, nil
}

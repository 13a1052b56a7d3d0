package crdt

import (
	"bytes"
	"errors"
	"fmt"
	"maps"
	"math"
	"slices"
	"sync"
	"unicode/utf8"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"github.com/statemesh/statemesh/internal/hlc"
	"github.com/statemesh/statemesh/internal/wire"
	"github.com/statemesh/statemesh/protocol/crdtpb"
)

// Limits bound what Decode accepts from untrusted bytes.
type Limits struct {
	// MaxBytes bounds the encoded size.
	MaxBytes int
	// MaxReplicas bounds the replica table.
	MaxReplicas int
	// MaxEntries bounds the total number of counter entries, elements,
	// keys, dots, context runs and ballots in one value.
	MaxEntries int
	// MaxDepth bounds ORMap nesting (a top-level ORMap is depth 1).
	MaxDepth int
	// MaxItemBytes bounds one element, key, register value or node name.
	MaxItemBytes int
}

// DefaultLimits are generous for one key's state yet keep a malicious
// message from costing more than a few hundred MiB to decode.
var DefaultLimits = Limits{
	MaxBytes:     32 << 20,
	MaxReplicas:  1 << 14,
	MaxEntries:   1 << 21,
	MaxDepth:     8,
	MaxItemBytes: 4 << 20,
}

// maxNodeName bounds a replica's node name.
const maxNodeName = 255

// Encode returns the wire form of v (a crdtpb.State message). It is
// deterministic: equal values encode to equal bytes, so encodings can be
// hashed into digests. Replicas are numbered in order of first use in a
// fixed traversal (sorted keys, sorted dots) and the replica table is
// written after the value, which protobuf decoders accept.
func Encode(v Value) []byte { return AppendEncode(nil, v) }

// AppendEncode appends the wire form of v to b.
func AppendEncode(b []byte, v Value) []byte { return appendEncode(b, v, false) }

func appendEncode(b []byte, v Value, sizeOnly bool) []byte {
	e := &encoder{sizeOnly: sizeOnly}
	e.order = e.orderBuf[:0]
	b = v.encode(e, b)
	if p, ok := v.(prunable); ok && len(*p.marks()) > 0 {
		m := *p.marks()
		rs := m.sorted()
		idx := make([]uint64, len(rs))
		for i, r := range rs {
			idx[i] = e.rep(r)
		}
		var ren renames
		if c, ok := v.(renamer); ok {
			ren = *c.renames()
		}
		b = e.message(b, 12, func(b []byte) []byte {
			b = packed(b, 1, len(rs), func(i int) uint64 { return idx[i] })
			b = packed(b, 2, len(rs), func(i int) uint64 { return uint64(m[rs[i]]) })
			if len(ren) == 0 {
				return b
			}
			for _, r := range rs {
				rn := ren[r]
				b = e.message(b, 3, func(b []byte) []byte {
					if rn == nil {
						return b
					}
					b = appendUint(b, 1, e.rep(rn.into))
					b = packed(b, 2, len(rn.pairs), func(i int) uint64 { return rn.pairs[i].from })
					return packed(b, 3, len(rn.pairs), func(i int) uint64 { return rn.pairs[i].to })
				})
			}
			return b
		})
	}
	for _, r := range e.order {
		b = e.message(b, 1, func(b []byte) []byte {
			b = appendString(b, 1, r.Node)
			return appendUint(b, 2, r.Incarnation)
		})
	}
	return b
}

// EncodedSize returns len(Encode(v)). It encodes into a reused buffer, so
// counting bytes allocates nothing once the buffer has grown.
func EncodedSize(v Value) int {
	if n, ok := causalSize(v); ok {
		return n
	}
	bp := sizeBufs.Get().(*[]byte)
	b := appendEncode((*bp)[:0], v, true)
	*bp = b
	sizeBufs.Put(bp)
	return len(b)
}

// sizeBufs holds scratch buffers for EncodedSize.
var sizeBufs = sync.Pool{New: func() any { return new([]byte) }}

// ToProto returns the wire message of v.
func ToProto(v Value) *crdtpb.State {
	var st crdtpb.State
	if err := proto.Unmarshal(Encode(v), &st); err != nil {
		panic(fmt.Sprintf("crdt: own encoding does not parse: %v", err)) // a bug, caught by the fuzz and round-trip tests
	}
	return &st
}

type encoder struct {
	// order lists the replicas in order of first use; idx indexes it once
	// it is too long to search (nil until then).
	order    []ReplicaID
	orderBuf [4]ReplicaID // order's first array: most values name few replicas
	idx      map[ReplicaID]uint32
	// sizeOnly lets map entries come in any order (EncodedSize reads
	// only the length). The order changes no byte count: each entry is
	// a message of its own, and every replica an entry names already has
	// its index, given when the map's context (which holds every dot of
	// the map, nested ones too) was written before the entries.
	sizeOnly bool
}

// encoderScan is how many replicas rep searches for linearly: a value
// names few replicas, usually with the same strings throughout, and
// comparing a handful of them costs less than hashing one.
const encoderScan = 16

func (e *encoder) rep(r ReplicaID) uint64 {
	if e.idx == nil {
		for i, o := range e.order {
			if o == r {
				return uint64(i)
			}
		}
		if len(e.order) < encoderScan {
			e.order = append(e.order, r)
			return uint64(len(e.order) - 1)
		}
		e.idx = make(map[ReplicaID]uint32, 2*encoderScan)
		for i, o := range e.order {
			e.idx[o] = uint32(i)
		}
	}
	i, ok := e.idx[r]
	if !ok {
		i = uint32(len(e.order))
		e.idx[r] = i
		e.order = append(e.order, r)
	}
	return uint64(i)
}

// message appends field num holding the message that body appends. The
// length prefix is reserved as one byte and widened if the body is longer.
func (e *encoder) message(b []byte, num protowire.Number, body func([]byte) []byte) []byte {
	b = protowire.AppendTag(b, num, protowire.BytesType)
	if e.sizeOnly {
		// Only the length counts: the prefix goes after the body, which
		// then need not move when the prefix is wider than a byte.
		at := len(b)
		b = body(b)
		return append(b, make([]byte, protowire.SizeVarint(uint64(len(b)-at)))...)
	}
	return wire.AppendLengthPrefixed(b, body)
}

func appendUint(b []byte, num protowire.Number, v uint64) []byte {
	if v == 0 {
		return b
	}
	b = protowire.AppendTag(b, num, protowire.VarintType)
	return protowire.AppendVarint(b, v)
}

func appendBytes(b []byte, num protowire.Number, v []byte) []byte {
	if len(v) == 0 {
		return b
	}
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

// packed appends a packed repeated varint field.
func packed(b []byte, num protowire.Number, n int, at func(i int) uint64) []byte {
	if n == 0 {
		return b
	}
	b = protowire.AppendTag(b, num, protowire.BytesType)
	return wire.AppendLengthPrefixed(b, func(b []byte) []byte {
		for i := range n {
			b = protowire.AppendVarint(b, at(i))
		}
		return b
	})
}

func (e *encoder) gcounter(b []byte, c *GCounter) []byte {
	// The entries are sorted by replica already: the canonical order.
	b = packed(b, 1, len(c.es), func(i int) uint64 { return e.rep(c.es[i].r) })
	return packed(b, 2, len(c.es), func(i int) uint64 { return c.es[i].n })
}

func (e *encoder) context(b []byte, c *Context) []byte {
	return e.message(b, 1, func(b []byte) []byte {
		for _, r := range c.replicas() {
			rs := c.m[r]
			b = e.message(b, 1, func(b []byte) []byte {
				b = appendUint(b, 1, e.rep(r.ID()))
				return packed(b, 2, 2*len(rs), func(i int) uint64 {
					if i%2 == 0 {
						return rs[i/2].lo
					}
					return rs[i/2].hi
				})
			})
		}
		return b
	})
}

// dots appends a Dots message body for the sorted dots ds.
func (e *encoder) dots(b []byte, ds []Dot) []byte {
	idx := make([]uint64, len(ds))
	for i, d := range ds {
		idx[i] = e.rep(d.Replica.ID())
	}
	b = packed(b, 1, len(ds), func(i int) uint64 { return idx[i] })
	return packed(b, 2, len(ds), func(i int) uint64 { return ds[i].Seq })
}

func (e *encoder) sortedDots(s store) []Dot {
	ds := dotsOf(s)
	if _, ok := s.(dotSet); !ok {
		slices.SortFunc(ds, Dot.Compare)
	}
	return ds
}

// mvEntries appends repeated MVEntry field num. Registers are most of a
// map's bytes, so each entry's length is computed up front rather than
// through message.
func (e *encoder) mvEntries(b []byte, num protowire.Number, s store) []byte {
	f, _ := s.(dotFun)
	for _, fe := range f {
		r := e.rep(fe.d.Replica.ID())
		n := uintSize(1, r) + uintSize(2, fe.d.Seq)
		if len(fe.v) > 0 {
			n += protowire.SizeTag(3) + protowire.SizeBytes(len(fe.v))
		}
		b = protowire.AppendTag(b, num, protowire.BytesType)
		b = protowire.AppendVarint(b, uint64(n))
		b = appendUint(b, 1, r)
		b = appendUint(b, 2, fe.d.Seq)
		b = appendBytes(b, 3, fe.v)
	}
	return b
}

// uintSize is the length of what appendUint appends.
func uintSize(num protowire.Number, v uint64) int {
	if v == 0 {
		return 0
	}
	return protowire.SizeTag(num) + protowire.SizeVarint(v)
}

// setEntries appends repeated ORSetEntry field num; keys are m's sorted
// keys, or nil to sort them here.
func (e *encoder) setEntries(b []byte, num protowire.Number, s store, keys []string) []byte {
	m, _ := s.(dotMap)
	if keys == nil {
		keys = slices.Sorted(maps.Keys(m))
	}
	for _, k := range keys {
		b = e.message(b, num, func(b []byte) []byte {
			b = appendString(b, 1, k)
			return e.message(b, 2, func(b []byte) []byte { return e.dots(b, e.sortedDots(m[k])) })
		})
	}
	return b
}

// mapEntries appends repeated ORMapEntry field num; keys are m's sorted
// keys, or nil to sort them here.
func (e *encoder) mapEntries(b []byte, num protowire.Number, s store, keys []string) []byte {
	m, _ := s.(dotMap)
	entry := func(b []byte, k string, v store) []byte {
		t, key := splitEntryKey(k)
		return e.message(b, num, func(b []byte) []byte {
			b = appendString(b, 1, key)
			b = appendUint(b, 2, uint64(t))
			switch t {
			case TypeEWFlag:
				return e.message(b, 3, func(b []byte) []byte { return e.dots(b, e.sortedDots(v)) })
			case TypeMVRegister:
				return e.message(b, 4, func(b []byte) []byte { return e.mvEntries(b, 1, v) })
			case TypeORSet:
				return e.message(b, 5, func(b []byte) []byte { return e.setEntries(b, 1, v, nil) })
			default:
				return e.message(b, 6, func(b []byte) []byte { return e.mapEntries(b, 1, v, nil) })
			}
		})
	}
	if e.sizeOnly {
		for k, v := range m {
			b = entry(b, k, v)
		}
		return b
	}
	if keys == nil {
		keys = slices.Sorted(maps.Keys(m))
	}
	for _, k := range keys {
		b = entry(b, k, m[k])
	}
	return b
}

func (c *GCounter) encode(e *encoder, b []byte) []byte {
	return e.message(b, 2, func(b []byte) []byte { return e.gcounter(b, c) })
}

func (c *PNCounter) encode(e *encoder, b []byte) []byte {
	return e.message(b, 3, func(b []byte) []byte {
		if !c.p.IsBottom() {
			b = e.message(b, 1, func(b []byte) []byte { return e.gcounter(b, c.p) })
		}
		if !c.n.IsBottom() {
			b = e.message(b, 2, func(b []byte) []byte { return e.gcounter(b, c.n) })
		}
		return b
	})
}

func (s *GSet) encode(e *encoder, b []byte) []byte {
	return e.message(b, 4, func(b []byte) []byte {
		for _, k := range slices.Sorted(maps.Keys(s.m)) {
			b = protowire.AppendTag(b, 1, protowire.BytesType)
			b = protowire.AppendString(b, k)
		}
		return b
	})
}

func (s *ORSet) encode(e *encoder, b []byte) []byte {
	return e.message(b, 5, func(b []byte) []byte {
		b = e.context(b, s.c.ctx)
		return e.setEntries(b, 2, s.c.s, s.c.sortedKeys())
	})
}

func (l *LWWRegister) encode(e *encoder, b []byte) []byte {
	return e.message(b, 6, func(b []byte) []byte {
		if !l.set {
			return b
		}
		b = e.message(b, 1, func(b []byte) []byte {
			b = appendUint(b, 1, uint64(l.ts.WallNanos))
			return appendUint(b, 2, uint64(l.ts.Logical))
		})
		b = appendUint(b, 2, e.rep(l.replica))
		return appendBytes(b, 3, l.value)
	})
}

func (m *MVRegister) encode(e *encoder, b []byte) []byte {
	return e.message(b, 7, func(b []byte) []byte {
		b = e.context(b, m.c.ctx)
		return e.mvEntries(b, 2, m.c.s)
	})
}

func (f *Flag) encode(e *encoder, b []byte) []byte {
	return e.message(b, 8, func(b []byte) []byte {
		if f.on {
			b = appendUint(b, 1, 1)
		}
		return b
	})
}

func (f *EWFlag) encode(e *encoder, b []byte) []byte {
	return e.message(b, 9, func(b []byte) []byte {
		b = e.context(b, f.c.ctx)
		if ds := e.sortedDots(f.c.s); len(ds) > 0 {
			b = e.message(b, 2, func(b []byte) []byte { return e.dots(b, ds) })
		}
		return b
	})
}

func (m *ORMap) encode(e *encoder, b []byte) []byte {
	return e.message(b, 10, func(b []byte) []byte {
		b = e.context(b, m.c.ctx)
		var keys []string // EncodedSize takes the entries in any order
		if !e.sizeOnly {
			keys = m.c.sortedKeys()
		}
		return e.mapEntries(b, 2, m.c.s, keys)
	})
}

func (v *Vote) encode(e *encoder, b []byte) []byte {
	return e.message(b, 11, func(b []byte) []byte {
		for _, r := range slices.SortedFunc(maps.Keys(v.m), ReplicaID.Compare) {
			bl := v.m[r]
			b = e.message(b, 1, func(b []byte) []byte {
				b = appendUint(b, 1, e.rep(r))
				b = appendUint(b, 2, bl.version)
				if bl.vote {
					b = appendUint(b, 3, 1)
				}
				if bl.removed {
					b = appendUint(b, 4, 1)
				}
				return b
			})
		}
		return b
	})
}

// Decode parses and validates an encoded value from untrusted bytes. It
// never panics; a malformed or oversized input yields an error wrapping
// ErrDecode or ErrTooLarge.
//
// The envelope (replica table, value kind, pruning markers) and the
// counters, the states the mesh's replication decodes most, are read
// straight from the bytes (internal/wire); the other kinds go through
// their generated message. Either way the value is built and checked by
// the same code below. Decoding is stricter than the protobuf format in
// one way: a singular field that our encoders write once (the value, the
// markers, a counter half) may not come twice.
func Decode(b []byte, lim Limits) (Value, error) {
	dc := Decoder{lim: lim}
	return dc.Decode(b)
}

// A Decoder decodes states one after another (those of one message, say)
// and remembers the replica ids it has read: a replica named again, as
// the states of one sender name the same few replicas over and over,
// costs neither an allocation nor a validation. It is not safe for
// concurrent use.
type Decoder struct {
	lim  Limits
	seen []seenReplica // at most decoderReplicas
	d    decoder       // reused for each state
}

type seenReplica struct {
	raw string // the Replica message's bytes
	id  ReplicaID
}

// decoderReplicas bounds what a Decoder remembers (searched linearly).
const decoderReplicas = 16

// NewDecoder returns a Decoder that applies lim to each state.
func NewDecoder(lim Limits) *Decoder { return &Decoder{lim: lim} }

// Decode is the package's Decode.
func (dc *Decoder) Decode(b []byte) (Value, error) {
	if len(b) > dc.lim.MaxBytes {
		return nil, fmt.Errorf("%w: %d bytes, limit %d", ErrTooLarge, len(b), dc.lim.MaxBytes)
	}
	d := &dc.d
	*d = decoder{lim: dc.lim, known: dc, interned: d.interned[:0]}
	d.reps = d.repBuf[:0]
	v, err := d.state(b)
	if err != nil {
		return nil, decodeErr(err) // and not a typed nil
	}
	return v, nil
}

// FromProto validates a wire message and builds its value.
func FromProto(st *crdtpb.State, lim Limits) (Value, error) {
	b, err := proto.Marshal(st)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrDecode, err)
	}
	lim.MaxBytes = len(b) // a message has no encoded size to bound
	return Decode(b, lim)
}

type decoder struct {
	lim    Limits
	known  *Decoder // replicas read before
	reps   []ReplicaID
	repBuf [4]ReplicaID // reps of a small table
	// interned holds reps[i] interned once a dot or a context names it
	// (zero until then).
	interned []replica
	entries  int
}

func errf(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrDecode}, args...)...)
}

// decodeErr is err as Decode returns it: the wire reader's errors (the
// decoder returns them as they are) wrapped in ErrDecode.
func decodeErr(err error) error {
	if errors.Is(err, wire.ErrMalformed) {
		return fmt.Errorf("%w: %w", ErrDecode, err)
	}
	return err
}

func (d *decoder) spend(n int) error {
	d.entries += n
	if n < 0 || d.entries > d.lim.MaxEntries {
		return fmt.Errorf("%w: more than %d entries", ErrTooLarge, d.lim.MaxEntries)
	}
	return nil
}

func (d *decoder) item(b []byte, what string) error {
	if len(b) > d.lim.MaxItemBytes {
		return fmt.Errorf("%w: %s of %d bytes, limit %d", ErrTooLarge, what, len(b), d.lim.MaxItemBytes)
	}
	return nil
}

func (d *decoder) rep(i uint32) (ReplicaID, error) {
	if int(i) >= len(d.reps) {
		return ReplicaID{}, errf("replica index %d out of range (%d replicas)", i, len(d.reps))
	}
	return d.reps[i], nil
}

// replica is rep, interned.
func (d *decoder) replica(i uint32) (replica, error) {
	r, err := d.rep(i)
	if err != nil {
		return replica{}, err
	}
	for len(d.interned) < len(d.reps) { // zero: none interned yet
		d.interned = append(d.interned, replica{})
	}
	if d.interned[i] == (replica{}) {
		d.interned[i] = intern(r)
	}
	return d.interned[i], nil
}

// State fields (crdt.proto): the replicas, then the value's oneof
// (gcounter = 2 to vote = 11), then the pruning markers.
const (
	stateReplicas = 1
	statePruned   = 12
)

// state decodes a State message: its replica table, then its value, then
// its pruning markers.
func (d *decoder) state(b []byte) (Value, error) {
	var (
		kind   protowire.Number // the value's field; 0: none
		val    []byte
		pruned []byte // nil: none
	)
	err := wire.Each(b, func(f wire.Field) error {
		if f.Num < stateReplicas || f.Num > statePruned {
			return nil
		}
		if err := f.Want(protowire.BytesType); err != nil {
			return err
		}
		switch {
		case f.Num == stateReplicas:
			if len(d.reps) == d.lim.MaxReplicas {
				return fmt.Errorf("%w: more than %d replicas", ErrTooLarge, d.lim.MaxReplicas)
			}
			r, err := d.replicaID(f.B)
			if err != nil {
				return err
			}
			d.reps = append(d.reps, r)
		case f.Num == statePruned:
			if pruned != nil {
				return errf("pruning markers twice")
			}
			pruned = f.B
		default: // the value's oneof
			if kind != 0 {
				return errf("a state with two values (fields %d and %d)", kind, f.Num)
			}
			kind, val = f.Num, f.B
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	if err := checkReplicas(d.reps); err != nil {
		return nil, err
	}
	v, err := d.value(kind, val)
	if err != nil || len(pruned) == 0 {
		return v, err
	}
	var pm crdtpb.Pruned
	if err := proto.Unmarshal(pruned, &pm); err != nil {
		return nil, errf("pruning markers: %v", err)
	}
	m, err := d.markers(&pm)
	if err != nil || len(m) == 0 {
		return v, err
	}
	p, ok := v.(prunable)
	if !ok {
		return nil, errf("a %s carries pruning markers", v.Type())
	}
	for _, r := range m.sorted() {
		if p.holds(r) {
			return nil, errf("%s holds contributions of replica %s, which it marks pruned", v.Type(), r)
		}
	}
	ren, err := d.renames(&pm)
	if err != nil {
		return nil, err
	}
	if len(ren) > 0 {
		c, ok := v.(renamer)
		if !ok {
			return nil, errf("a %s carries renamed dots", v.Type())
		}
		*c.renames() = ren
	}
	*p.marks() = m
	return v, nil
}

// replicaID decodes a Replica message, or finds it among those read
// before.
func (d *decoder) replicaID(b []byte) (ReplicaID, error) {
	for _, s := range d.known.seen {
		if s.raw == string(b) {
			return s.id, nil
		}
	}
	r, err := replicaID(b)
	if err == nil && len(d.known.seen) < decoderReplicas {
		d.known.seen = append(d.known.seen, seenReplica{string(b), r})
	}
	return r, err
}

// replicaID decodes a Replica message.
func replicaID(b []byte) (ReplicaID, error) {
	var r ReplicaID
	err := wire.Each(b, func(f wire.Field) error {
		switch f.Num {
		case 1:
			if err := f.Want(protowire.BytesType); err != nil {
				return err
			}
			r.Node = string(f.B)
		case 2:
			if err := f.Want(protowire.VarintType); err != nil {
				return err
			}
			r.Incarnation = f.V
		}
		return nil
	})
	if err != nil {
		return ReplicaID{}, err
	}
	if err := ValidateReplica(r); err != nil {
		return ReplicaID{}, errf("%v", err)
	}
	return r, nil
}

// checkReplicas rejects a replica table that lists a replica twice.
func checkReplicas(rs []ReplicaID) error {
	if len(rs) <= 16 { // a few comparisons cost less than a map
		for i, r := range rs {
			if slices.Contains(rs[:i], r) {
				return errf("replica %s listed twice", r)
			}
		}
		return nil
	}
	seen := make(map[ReplicaID]struct{}, len(rs))
	for _, r := range rs {
		if _, dup := seen[r]; dup {
			return errf("replica %s listed twice", r)
		}
		seen[r] = struct{}{}
	}
	return nil
}

// renames decodes the renamings of pruned replicas: none, or one per
// marker (possibly empty); each with a valid owner other than the pruned
// replica, as many new as old sequence numbers, none zero, the old ones
// ascending.
func (d *decoder) renames(pm *crdtpb.Pruned) (renames, error) {
	rl := pm.GetRenamed()
	if len(rl) == 0 {
		return nil, nil
	}
	rs := pm.GetReplica()
	if len(rl) != len(rs) {
		return nil, errf("pruning markers have %d replicas and %d renamings", len(rs), len(rl))
	}
	var out renames
	for i, x := range rl {
		from, to := x.GetFrom(), x.GetTo()
		if len(from) == 0 && len(to) == 0 {
			continue
		}
		if len(from) != len(to) {
			return nil, errf("a renaming has %d old and %d new dots", len(from), len(to))
		}
		if err := d.spend(len(from)); err != nil {
			return nil, err
		}
		r, err := d.rep(rs[i])
		if err != nil {
			return nil, err
		}
		into, err := d.rep(x.GetInto())
		if err != nil {
			return nil, err
		}
		if into == r {
			return nil, errf("replica %s renamed into itself", r)
		}
		rn := &renaming{into: into, pairs: make([]renamePair, len(from))}
		for j := range from {
			if from[j] == 0 || to[j] == 0 {
				return nil, errf("a renaming of replica %s names dot 0", r)
			}
			if j > 0 && from[j] <= from[j-1] {
				return nil, errf("a renaming of replica %s not in ascending order", r)
			}
			rn.pairs[j] = renamePair{from[j], to[j]}
		}
		if out == nil {
			out = renames{}
		}
		out[r] = rn
	}
	return out, nil
}

// markers decodes pruning markers: distinct replicas, ascending.
func (d *decoder) markers(pm *crdtpb.Pruned) (markers, error) {
	rs, ats := pm.GetReplica(), pm.GetAt()
	if len(rs) != len(ats) {
		return nil, errf("pruning markers have %d replicas and %d times", len(rs), len(ats))
	}
	if err := d.spend(len(rs)); err != nil {
		return nil, err
	}
	m := markers{}
	var prev ReplicaID
	for i, ri := range rs {
		r, err := d.rep(ri)
		if err != nil {
			return nil, err
		}
		if i > 0 && prev.Compare(r) >= 0 {
			return nil, errf("pruning markers not in ascending replica order at %s", r)
		}
		prev = r
		m[r] = ats[i]
	}
	if len(m) == 0 {
		return nil, nil
	}
	return m, nil
}

// value decodes the value of a state (its replica table already read):
// kind is its field in State's oneof, b its message.
func (d *decoder) value(kind protowire.Number, b []byte) (Value, error) {
	switch kind {
	case 0:
		return nil, errf("no value")
	case 2:
		return d.gcounter(b)
	case 3:
		var p, n []byte
		err := wire.Each(b, func(f wire.Field) error {
			if f.Num != 1 && f.Num != 2 {
				return nil
			}
			if err := f.Want(protowire.BytesType); err != nil {
				return err
			}
			half := &p
			if f.Num == 2 {
				half = &n
			}
			if *half != nil {
				return errf("counter half %d twice", f.Num)
			}
			*half = f.B
			return nil
		})
		if err != nil {
			return nil, err
		}
		pc, err := d.gcounter(p)
		if err != nil {
			return nil, err
		}
		nc, err := d.gcounter(n)
		if err != nil {
			return nil, err
		}
		return &PNCounter{p: pc, n: nc}, nil
	case 8:
		on := false
		err := wire.Each(b, func(f wire.Field) error {
			if f.Num != 1 {
				return nil
			}
			on = f.V != 0
			return f.Want(protowire.VarintType)
		})
		if err != nil {
			return nil, err
		}
		return &Flag{on: on}, nil
	}
	// The other kinds: through their generated message.
	var m proto.Message
	switch kind {
	case 4:
		m = &crdtpb.GSet{}
	case 5:
		m = &crdtpb.ORSet{}
	case 6:
		m = &crdtpb.LWWRegister{}
	case 7:
		m = &crdtpb.MVRegister{}
	case 9:
		m = &crdtpb.EWFlag{}
	case 10:
		m = &crdtpb.ORMap{}
	case 11:
		m = &crdtpb.Vote{}
	default:
		return nil, errf("unknown value kind %d", kind)
	}
	if err := proto.Unmarshal(b, m); err != nil {
		return nil, errf("%v", err)
	}
	switch x := m.(type) {
	case *crdtpb.GSet:
		return d.gset(x)
	case *crdtpb.LWWRegister:
		return d.lww(x)
	case *crdtpb.Vote:
		return d.vote(x)
	case *crdtpb.ORSet:
		c, err := d.causal(x.GetContext(), func(ctx *Context, seen map[Dot]struct{}) (store, error) {
			return d.setStore(x.GetEntries(), ctx, seen)
		})
		if err != nil {
			return nil, err
		}
		return &ORSet{c: indexed(c)}, nil
	case *crdtpb.MVRegister:
		c, err := d.causal(x.GetContext(), func(ctx *Context, seen map[Dot]struct{}) (store, error) {
			return d.mvStore(x.GetEntries(), ctx, seen)
		})
		if err != nil {
			return nil, err
		}
		return &MVRegister{c: c}, nil
	case *crdtpb.EWFlag:
		c, err := d.causal(x.GetContext(), func(ctx *Context, seen map[Dot]struct{}) (store, error) {
			return d.dotSet(x.GetDots(), ctx, seen)
		})
		if err != nil {
			return nil, err
		}
		return &EWFlag{c: c}, nil
	default:
		om := m.(*crdtpb.ORMap)
		c, err := d.causal(om.GetContext(), func(ctx *Context, seen map[Dot]struct{}) (store, error) {
			return d.mapStore(om.GetEntries(), ctx, seen, 1)
		})
		if err != nil {
			return nil, err
		}
		return &ORMap{c: indexed(c)}, nil
	}
}

// ValidateReplica checks a replica id: a non-empty UTF-8 node name of at
// most 255 bytes.
func ValidateReplica(r ReplicaID) error {
	if r.Node == "" || len(r.Node) > maxNodeName || !utf8.ValidString(r.Node) {
		return fmt.Errorf("%w: replica node name must be 1..%d bytes of UTF-8, got %q", ErrInvalidArg, maxNodeName, r.Node)
	}
	return nil
}

func indexed(c causal) causal {
	c.indexed = true
	return c
}

// gcounter decodes a GCounter message (an absent one, b empty, is zero).
func (d *decoder) gcounter(b []byte) (*GCounter, error) {
	var (
		rbuf [8]uint32
		cbuf [8]uint64
		reps = rbuf[:0]
		cnts = cbuf[:0]
	)
	err := wire.Each(b, func(f wire.Field) (err error) {
		switch f.Num {
		case 1:
			reps, err = wire.Varints(reps, f, wire.U32)
		case 2:
			cnts, err = wire.Varints(cnts, f, wire.U64)
		}
		return err
	})
	if err != nil {
		return nil, err
	}
	if len(reps) != len(cnts) {
		return nil, errf("counter has %d replicas and %d counts", len(reps), len(cnts))
	}
	if err := d.spend(len(reps)); err != nil {
		return nil, err
	}
	var c *GCounter
	switch len(reps) {
	case 0:
		return &GCounter{}, nil
	case 1: // a delta, usually: one allocation
		c = oneEntry(gEntry{})
	default:
		c = &GCounter{es: make([]gEntry, len(reps))}
	}
	for i, ri := range reps {
		r, err := d.rep(ri)
		if err != nil {
			return nil, err
		}
		if cnts[i] == 0 {
			return nil, errf("zero counter entry for %s", r)
		}
		c.es[i] = gEntry{r, cnts[i]}
	}
	cmp := func(a, b gEntry) int { return a.r.Compare(b.r) }
	if !slices.IsSortedFunc(c.es, cmp) { // our encoders sort them
		slices.SortFunc(c.es, cmp)
	}
	for i := 1; i < len(c.es); i++ {
		if c.es[i].r == c.es[i-1].r {
			return nil, errf("counter entry for %s twice", c.es[i].r)
		}
	}
	return c, nil
}

func (d *decoder) gset(g *crdtpb.GSet) (*GSet, error) {
	s := NewGSet()
	if err := d.spend(len(g.GetElements())); err != nil {
		return nil, err
	}
	for _, e := range g.GetElements() {
		if err := d.item(e, "element"); err != nil {
			return nil, err
		}
		if _, dup := s.m[string(e)]; dup {
			return nil, errf("set element %q twice", e)
		}
		s.m[string(e)] = struct{}{}
	}
	return s, nil
}

func (d *decoder) lww(l *crdtpb.LWWRegister) (*LWWRegister, error) {
	if l.GetTimestamp() == nil {
		if l.GetReplica() != 0 || len(l.GetValue()) != 0 {
			return nil, errf("unset register with a writer or value")
		}
		return NewLWWRegister(), nil
	}
	if err := d.item(l.GetValue(), "register value"); err != nil {
		return nil, err
	}
	r, err := d.rep(l.GetReplica())
	if err != nil {
		return nil, err
	}
	ts := hlc.Timestamp{WallNanos: l.Timestamp.GetWallNanos(), Logical: l.Timestamp.GetLogical()}
	return &LWWRegister{set: true, ts: ts, replica: r, value: bytes.Clone(l.GetValue())}, nil
}

func (d *decoder) vote(v *crdtpb.Vote) (*Vote, error) {
	out := NewVote()
	if err := d.spend(len(v.GetBallots())); err != nil {
		return nil, err
	}
	for _, b := range v.GetBallots() {
		r, err := d.rep(b.GetReplica())
		if err != nil {
			return nil, err
		}
		if _, dup := out.m[r]; dup {
			return nil, errf("ballot of %s twice", r)
		}
		if b.GetVersion() == 0 && !b.GetRemoved() {
			return nil, errf("ballot of %s has version 0", r)
		}
		if b.GetVersion() == 0 && b.GetVote() {
			return nil, errf("removed ballot of %s with a vote but no version", r)
		}
		out.m[r] = ballot{version: b.GetVersion(), vote: b.GetVote(), removed: b.GetRemoved()}
	}
	return out, nil
}

func (d *decoder) context(pc *crdtpb.Context) (*Context, error) {
	c := NewContext()
	for _, rr := range pc.GetReplicas() {
		r, err := d.replica(rr.GetReplica())
		if err != nil {
			return nil, err
		}
		if _, dup := c.m[r]; dup {
			return nil, errf("context lists %s twice", r)
		}
		rs := rr.GetRuns()
		if len(rs) == 0 || len(rs)%2 != 0 {
			return nil, errf("context runs of %s: need pairs, got %d numbers", r, len(rs))
		}
		if err := d.spend(len(rs) / 2); err != nil {
			return nil, err
		}
		out := make(runs, 0, len(rs)/2)
		for i := 0; i < len(rs); i += 2 {
			lo, hi := rs[i], rs[i+1]
			if lo == 0 || lo > hi {
				return nil, errf("context run %d..%d of %s", lo, hi, r)
			}
			if n := len(out); n > 0 && (out[n-1].hi == math.MaxUint64 || lo <= out[n-1].hi+1) {
				return nil, errf("context runs of %s overlap, touch or are unsorted", r)
			}
			out = append(out, span{lo, hi})
		}
		c.m[r] = out
	}
	return c, nil
}

func (d *decoder) causal(pc *crdtpb.Context, build func(*Context, map[Dot]struct{}) (store, error)) (causal, error) {
	ctx, err := d.context(pc)
	if err != nil {
		return causal{}, err
	}
	s, err := build(ctx, map[Dot]struct{}{})
	if err != nil {
		return causal{}, err
	}
	return causal{s: s, ctx: ctx}, nil
}

// dot validates one dot: known replica, in the context, seen only once in
// the whole value.
func (d *decoder) dot(ri uint32, seq uint64, ctx *Context, seen map[Dot]struct{}) (Dot, error) {
	r, err := d.replica(ri)
	if err != nil {
		return Dot{}, err
	}
	dt := Dot{r, seq}
	if !ctx.Contains(dt) {
		return Dot{}, errf("dot %s is not in the context", dt)
	}
	if _, dup := seen[dt]; dup {
		return Dot{}, errf("dot %s appears twice", dt)
	}
	seen[dt] = struct{}{}
	return dt, nil
}

func (d *decoder) dotSet(pd *crdtpb.Dots, ctx *Context, seen map[Dot]struct{}) (store, error) {
	if len(pd.GetReplica()) != len(pd.GetSeq()) {
		return nil, errf("dots have %d replicas and %d sequence numbers", len(pd.GetReplica()), len(pd.GetSeq()))
	}
	if err := d.spend(len(pd.GetSeq())); err != nil {
		return nil, err
	}
	var out dotSet
	for i, ri := range pd.GetReplica() {
		dt, err := d.dot(ri, pd.Seq[i], ctx, seen)
		if err != nil {
			return nil, err
		}
		out = append(out, dt)
	}
	if len(out) == 0 {
		return nil, nil
	}
	slices.SortFunc(out, Dot.Compare)
	return out, nil
}

func (d *decoder) setStore(es []*crdtpb.ORSetEntry, ctx *Context, seen map[Dot]struct{}) (store, error) {
	if err := d.spend(len(es)); err != nil {
		return nil, err
	}
	m := dotMap{}
	for _, e := range es {
		if err := d.item(e.GetElement(), "element"); err != nil {
			return nil, err
		}
		k := string(e.GetElement())
		if _, dup := m[k]; dup {
			return nil, errf("set element %q twice", k)
		}
		ds, err := d.dotSet(e.GetDots(), ctx, seen)
		if err != nil {
			return nil, err
		}
		if ds == nil {
			return nil, errf("set element %q has no dots", k)
		}
		m[k] = ds
	}
	if len(m) == 0 {
		return nil, nil
	}
	return m, nil
}

func (d *decoder) mvStore(es []*crdtpb.MVEntry, ctx *Context, seen map[Dot]struct{}) (store, error) {
	if err := d.spend(len(es)); err != nil {
		return nil, err
	}
	var f dotFun
	for _, e := range es {
		if err := d.item(e.GetValue(), "register value"); err != nil {
			return nil, err
		}
		dt, err := d.dot(e.GetReplica(), e.GetSeq(), ctx, seen)
		if err != nil {
			return nil, err
		}
		f = append(f, funEntry{dt, bytes.Clone(e.GetValue())})
	}
	slices.SortFunc(f, func(x, y funEntry) int { return x.d.Compare(y.d) })
	if len(f) == 0 {
		return nil, nil
	}
	return f, nil
}

func (d *decoder) mapStore(es []*crdtpb.ORMapEntry, ctx *Context, seen map[Dot]struct{}, depth int) (store, error) {
	if depth > d.lim.MaxDepth {
		return nil, fmt.Errorf("%w: maps nested deeper than %d", ErrTooLarge, d.lim.MaxDepth)
	}
	if err := d.spend(len(es)); err != nil {
		return nil, err
	}
	m := dotMap{}
	for _, e := range es {
		if err := d.item(e.GetKey(), "map key"); err != nil {
			return nil, err
		}
		t := Type(e.GetType())
		if e.GetType() < 0 || e.GetType() > 255 || !Nestable(t) {
			return nil, errf("map entry %q has type %v, which cannot be nested", e.GetKey(), e.GetType())
		}
		k := entryKey(t, e.GetKey())
		if _, dup := m[k]; dup {
			return nil, errf("map entry %q of type %s twice", e.GetKey(), t)
		}
		var s store
		var err error
		switch x := e.Store.(type) {
		case *crdtpb.ORMapEntry_Ewflag:
			if t != TypeEWFlag {
				return nil, errf("map entry %q: %s with an EWFlag store", e.GetKey(), t)
			}
			s, err = d.dotSet(x.Ewflag, ctx, seen)
		case *crdtpb.ORMapEntry_Mvregister:
			if t != TypeMVRegister {
				return nil, errf("map entry %q: %s with an MVRegister store", e.GetKey(), t)
			}
			s, err = d.mvStore(x.Mvregister.GetEntries(), ctx, seen)
		case *crdtpb.ORMapEntry_Orset:
			if t != TypeORSet {
				return nil, errf("map entry %q: %s with an ORSet store", e.GetKey(), t)
			}
			s, err = d.setStore(x.Orset.GetEntries(), ctx, seen)
		case *crdtpb.ORMapEntry_Ormap:
			if t != TypeORMap {
				return nil, errf("map entry %q: %s with an ORMap store", e.GetKey(), t)
			}
			s, err = d.mapStore(x.Ormap.GetEntries(), ctx, seen, depth+1)
		default:
			return nil, errf("map entry %q has no store", e.GetKey())
		}
		if err != nil {
			return nil, err
		}
		if s == nil {
			return nil, errf("map entry %q is empty", e.GetKey())
		}
		m[k] = s
	}
	if len(m) == 0 {
		return nil, nil
	}
	return m, nil
}

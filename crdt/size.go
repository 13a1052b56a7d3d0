package crdt

import (
	"google.golang.org/protobuf/encoding/protowire"
)

// causalSize returns len(Encode(v)) for an ORMap or ORSet without pruning
// markers, computed without writing the encoding (EncodedSize: the deltas
// engine counts the bytes of every message it sends, most of them maps).
// It reports false for other values, which the encoder measures.
//
// It follows the encoder's layout (encoding.go) field by field, and
// relies on what the encoder does: a value's context is written first, in
// replica order, so replica i of the context gets index i; every dot of
// the store is in the context, so no other replica is numbered; and the
// replica table lists each of them once. The tests check the result
// against len(Encode(v)) for every value they build (checkRoundTrip).
func causalSize(v Value) (int, bool) {
	var c *causal
	var field protowire.Number
	switch x := v.(type) {
	case *ORMap:
		c, field = &x.c, 10
	case *ORSet:
		c, field = &x.c, 5
	default:
		return 0, false
	}
	if len(c.pruned) > 0 {
		return 0, false
	}
	rs := c.ctx.replicas()
	z := sizer{}
	if len(rs) > 0 {
		z.first = rs[0]
	}
	if len(rs) > 128 { // indexes of more than one byte
		z.idx = make(map[replica]uint64, len(rs))
		for i, r := range rs {
			z.idx[r] = uint64(i)
		}
	}
	n := z.context(c.ctx, rs)
	if field == 10 {
		n += z.mapEntries(2, c.s)
	} else {
		n += z.setEntries(2, c.s)
	}
	n = sizeField(field, n)
	for _, r := range rs { // the replica table
		id := r.ID()
		n += sizeField(1, sizeString(1, id.Node)+uintSize(2, id.Incarnation))
	}
	return n, true
}

// sizer measures the parts of one value's encoding.
type sizer struct {
	first replica            // the replica of index 0
	idx   map[replica]uint64 // every replica's index; nil if all are below 128
}

// uintRep is the size of a replica's index as a uint field (omitted when 0).
func (z *sizer) uintRep(r replica) int {
	if z.idx != nil {
		return uintSize(1, z.idx[r])
	}
	if r == z.first {
		return 0
	}
	return 2 // tag and a one-byte varint
}

// varintRep is the size of a replica's index in a packed field.
func (z *sizer) varintRep(r replica) int {
	if z.idx != nil {
		return protowire.SizeVarint(z.idx[r])
	}
	return 1
}

func (z *sizer) context(c *Context, rs []replica) int {
	n := 0
	for i, r := range rs {
		body := uintSize(1, uint64(i))
		if runs := c.m[r]; len(runs) > 0 {
			l := 0
			for _, s := range runs {
				l += protowire.SizeVarint(s.lo) + protowire.SizeVarint(s.hi)
			}
			body += sizeField(2, l)
		}
		n += sizeField(1, body)
	}
	return sizeField(1, n)
}

// dots is the size of a Dots message body holding the dots of s.
func (z *sizer) dots(s store) int {
	reps, seqs := 0, 0
	switch x := s.(type) {
	case dotSet:
		for _, d := range x {
			reps += z.varintRep(d.Replica)
			seqs += protowire.SizeVarint(d.Seq)
		}
	default:
		s.eachDot(func(d Dot) {
			reps += z.varintRep(d.Replica)
			seqs += protowire.SizeVarint(d.Seq)
		})
	}
	if seqs == 0 {
		return 0
	}
	return sizeField(1, reps) + sizeField(2, seqs)
}

func (z *sizer) mvEntries(num protowire.Number, s store) int {
	f, _ := s.(dotFun)
	n := 0
	for _, fe := range f {
		body := z.uintRep(fe.d.Replica) + uintSize(2, fe.d.Seq)
		if len(fe.v) > 0 {
			body += sizeField(3, len(fe.v))
		}
		n += sizeField(num, body)
	}
	return n
}

func (z *sizer) setEntries(num protowire.Number, s store) int {
	m, _ := s.(dotMap)
	n := 0
	for k, v := range m {
		n += sizeField(num, sizeString(1, k)+sizeField(2, z.dots(v)))
	}
	return n
}

func (z *sizer) mapEntries(num protowire.Number, s store) int {
	m, _ := s.(dotMap)
	n := 0
	for k, v := range m {
		t, key := splitEntryKey(k)
		body := sizeString(1, key) + uintSize(2, uint64(t))
		switch t {
		case TypeEWFlag:
			body += sizeField(3, z.dots(v))
		case TypeMVRegister:
			body += sizeField(4, z.mvEntries(1, v))
		case TypeORSet:
			body += sizeField(5, z.setEntries(1, v))
		default:
			body += sizeField(6, z.mapEntries(1, v))
		}
		n += sizeField(num, body)
	}
	return n
}

// sizeField is the size of field num holding n bytes.
func sizeField(num protowire.Number, n int) int {
	return protowire.SizeTag(num) + protowire.SizeBytes(n)
}

// sizeString is the size of what appendString appends.
func sizeString(num protowire.Number, s string) int {
	if s == "" {
		return 0
	}
	return sizeField(num, len(s))
}

// Package wire reads protocol buffers messages field by field, for the
// decoders on the replication hot path (crdt states, deltas messages),
// which build their values straight from the bytes instead of through
// generated message structs and back.
//
// It reads the protobuf wire format with google.golang.org/protobuf's
// protowire and adds only what those decoders share: one field at a time
// with its value, wire-type checks with clear errors, and repeated varint
// fields in either encoding (packed, as our encoders write them, or one
// value per field, which the format allows). Its errors wrap
// ErrMalformed; a decoder wraps them in its own error once, where it
// returns. For the encoders, which write nested messages in place, it has
// AppendLengthPrefixed.
package wire

import (
	"errors"
	"fmt"

	"google.golang.org/protobuf/encoding/protowire"
)

// ErrMalformed is wrapped by every error of this package.
var ErrMalformed = errors.New("malformed protobuf")

// Field is one field of a message: its number and wire type, and its
// value (V for varint and fixed types, B for length-delimited ones; B
// aliases the input).
type Field struct {
	Num  protowire.Number
	Type protowire.Type
	V    uint64
	B    []byte
}

// Next reads the field at the start of b and returns it with the rest of
// b. Groups, which our messages never hold, are skipped whole and
// returned with no value.
func Next(b []byte) (Field, []byte, error) {
	// Fast path: a one-byte tag with a one-byte varint or length, the
	// usual shape of the small fields of our messages.
	if len(b) >= 2 && b[0] < 0x80 && b[1] < 0x80 && b[0]>>3 != 0 {
		num, typ := protowire.Number(b[0]>>3), protowire.Type(b[0]&7)
		switch {
		case typ == protowire.VarintType:
			return Field{Num: num, Type: typ, V: uint64(b[1])}, b[2:], nil
		case typ == protowire.BytesType && int(b[1]) <= len(b)-2:
			end := 2 + int(b[1])
			return Field{Num: num, Type: typ, B: b[2:end:end]}, b[end:], nil
		}
	}
	return next(b)
}

func next(b []byte) (Field, []byte, error) {
	num, typ, n := protowire.ConsumeTag(b)
	if n < 0 {
		return Field{}, nil, fmt.Errorf("%w: tag: %v", ErrMalformed, protowire.ParseError(n))
	}
	if num > protowire.MaxValidNumber { // ConsumeTag checks only the lower bound
		return Field{}, nil, fmt.Errorf("%w: field number %d", ErrMalformed, num)
	}
	b = b[n:]
	f := Field{Num: num, Type: typ}
	switch typ {
	case protowire.VarintType:
		f.V, n = protowire.ConsumeVarint(b)
	case protowire.Fixed64Type:
		f.V, n = protowire.ConsumeFixed64(b)
	case protowire.Fixed32Type:
		var v uint32
		v, n = protowire.ConsumeFixed32(b)
		f.V = uint64(v)
	case protowire.BytesType:
		f.B, n = protowire.ConsumeBytes(b)
	default:
		n = protowire.ConsumeFieldValue(num, typ, b)
	}
	if n < 0 {
		return Field{}, nil, fmt.Errorf("%w: field %d: %v", ErrMalformed, num, protowire.ParseError(n))
	}
	return f, b[n:], nil
}

// Each calls fn with every field of message b, in order. It stops at the
// first error: a malformed field (wrapping ErrMalformed) or fn's, as is.
func Each(b []byte, fn func(f Field) error) error {
	for len(b) > 0 {
		f, rest, err := Next(b)
		if err != nil {
			return err
		}
		b = rest
		if err := fn(f); err != nil {
			return err
		}
	}
	return nil
}

// EachBytes calls fn with the value of every occurrence of
// length-delimited field num of message b.
func EachBytes(b []byte, num protowire.Number, fn func(v []byte) error) error {
	return Each(b, func(f Field) error {
		if f.Num != num {
			return nil
		}
		if err := f.Want(protowire.BytesType); err != nil {
			return err
		}
		return fn(f.B)
	})
}

// Want checks that f has wire type t.
func (f Field) Want(t protowire.Type) error {
	if f.Type != t {
		return fmt.Errorf("%w: field %d has wire type %d, want %d", ErrMalformed, f.Num, f.Type, t)
	}
	return nil
}

// Varints appends the values of one occurrence of a repeated varint field
// (packed or not) to dst, each converted with conv (uint32 fields
// truncate, as the protobuf decoders do).
func Varints[T any](dst []T, f Field, conv func(uint64) T) ([]T, error) {
	switch f.Type {
	case protowire.VarintType:
		return append(dst, conv(f.V)), nil
	case protowire.BytesType:
		b := f.B
		for len(b) > 0 {
			v, n := protowire.ConsumeVarint(b)
			if n < 0 {
				return nil, fmt.Errorf("%w: packed field %d: %v", ErrMalformed, f.Num, protowire.ParseError(n))
			}
			dst = append(dst, conv(v))
			b = b[n:]
		}
		return dst, nil
	}
	return nil, fmt.Errorf("%w: repeated varint field %d has wire type %d", ErrMalformed, f.Num, f.Type)
}

// U32 and U64 are the conversions of uint32 and uint64 fields.
func U32(v uint64) uint32 { return uint32(v) }

// U64: see U32.
func U64(v uint64) uint64 { return v }

// AppendLengthPrefixed appends the length-prefixed bytes that body
// appends: a nested message written in place, without a buffer of its
// own. The prefix is reserved as one byte and widened (the body moved)
// when the body is 128 bytes or longer.
func AppendLengthPrefixed(b []byte, body func([]byte) []byte) []byte {
	at := len(b)
	b = append(b, 0)
	b = body(b)
	n := len(b) - at - 1
	if n < 0x80 {
		b[at] = byte(n)
		return b
	}
	w := protowire.SizeVarint(uint64(n))
	b = append(b, make([]byte, w-1)...)
	copy(b[at+w:], b[at+1:at+1+n])
	protowire.AppendVarint(b[at:at], uint64(n))
	return b
}

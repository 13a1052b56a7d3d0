package wire

import (
	"errors"
	"slices"
	"testing"

	"google.golang.org/protobuf/encoding/protowire"
)

// TestNext reads every kind of field, on the fast path and off it.
func TestNext(t *testing.T) {
	var b []byte
	b = protowire.AppendTag(b, 1, protowire.VarintType)
	b = protowire.AppendVarint(b, 5) // fast path
	b = protowire.AppendTag(b, 2, protowire.VarintType)
	b = protowire.AppendVarint(b, 1<<40) // long varint
	b = protowire.AppendTag(b, 3, protowire.BytesType)
	b = protowire.AppendBytes(b, []byte("abc")) // fast path
	b = protowire.AppendTag(b, 4, protowire.BytesType)
	b = protowire.AppendBytes(b, make([]byte, 200)) // long length
	b = protowire.AppendTag(b, 5, protowire.Fixed64Type)
	b = protowire.AppendFixed64(b, 7)
	b = protowire.AppendTag(b, 6, protowire.Fixed32Type)
	b = protowire.AppendFixed32(b, 8)
	b = protowire.AppendTag(b, 1000, protowire.VarintType) // two-byte tag
	b = protowire.AppendVarint(b, 9)
	want := []Field{
		{Num: 1, Type: protowire.VarintType, V: 5},
		{Num: 2, Type: protowire.VarintType, V: 1 << 40},
		{Num: 3, Type: protowire.BytesType, B: []byte("abc")},
		{Num: 4, Type: protowire.BytesType, B: make([]byte, 200)},
		{Num: 5, Type: protowire.Fixed64Type, V: 7},
		{Num: 6, Type: protowire.Fixed32Type, V: 8},
		{Num: 1000, Type: protowire.VarintType, V: 9},
	}
	for i, w := range want {
		f, rest, err := Next(b)
		if err != nil {
			t.Fatalf("field %d: %v", i, err)
		}
		if f.Num != w.Num || f.Type != w.Type || f.V != w.V || !slices.Equal(f.B, w.B) {
			t.Fatalf("field %d: got %+v, want %+v", i, f, w)
		}
		b = rest
	}
	if len(b) != 0 {
		t.Fatalf("%d bytes left", len(b))
	}
}

func TestNextMalformed(t *testing.T) {
	for name, b := range map[string][]byte{
		"field number 0":          {0x00, 0x01},
		"field number too large":  protowire.AppendVarint(nil, uint64(protowire.MaxValidNumber+1)<<3),
		"truncated varint":        {0x08, 0x80},
		"length past the end":     {0x12, 0x05, 'a'},
		"length past the end (2)": {0x12, 0x80, 0x01, 'a'},
		"truncated fixed64":       {0x29, 1, 2, 3},
		"end group without start": {0x0c},
	} {
		if _, _, err := Next(b); !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: error %v, want ErrMalformed", name, err)
		}
	}
}

func TestVarints(t *testing.T) {
	packed := Field{Num: 1, Type: protowire.BytesType, B: protowire.AppendVarint(protowire.AppendVarint(nil, 1), 1<<33)}
	got, err := Varints([]uint32{7}, packed, U32)
	if err != nil || !slices.Equal(got, []uint32{7, 1, 0}) { // uint32 truncates, as protobuf does
		t.Fatalf("packed: %v, %v", got, err)
	}
	got64, err := Varints(nil, Field{Num: 1, Type: protowire.VarintType, V: 1 << 33}, U64)
	if err != nil || !slices.Equal(got64, []uint64{1 << 33}) {
		t.Fatalf("unpacked: %v, %v", got64, err)
	}
	if _, err := Varints(nil, Field{Num: 1, Type: protowire.BytesType, B: []byte{0x80}}, U64); !errors.Is(err, ErrMalformed) {
		t.Fatalf("truncated packed varint: %v", err)
	}
	if _, err := Varints(nil, Field{Num: 1, Type: protowire.Fixed64Type}, U64); !errors.Is(err, ErrMalformed) {
		t.Fatalf("fixed64 as a varint field: %v", err)
	}
	if err := (Field{Num: 2, Type: protowire.VarintType}).Want(protowire.BytesType); !errors.Is(err, ErrMalformed) {
		t.Fatalf("Want: %v", err)
	}
}

func TestEach(t *testing.T) {
	var b []byte
	b = protowire.AppendTag(b, 1, protowire.BytesType)
	b = protowire.AppendBytes(b, []byte("a"))
	b = protowire.AppendTag(b, 2, protowire.VarintType)
	b = protowire.AppendVarint(b, 7)
	b = protowire.AppendTag(b, 1, protowire.BytesType)
	b = protowire.AppendBytes(b, []byte("b"))
	var got []string
	if err := EachBytes(b, 1, func(v []byte) error { got = append(got, string(v)); return nil }); err != nil || !slices.Equal(got, []string{"a", "b"}) {
		t.Fatalf("EachBytes: %v, %v", got, err)
	}
	if err := EachBytes(b, 2, func([]byte) error { return nil }); !errors.Is(err, ErrMalformed) {
		t.Fatalf("EachBytes over a varint field: %v", err)
	}
	stop := errors.New("stop")
	n := 0
	if err := Each(b, func(Field) error { n++; return stop }); err != stop || n != 1 {
		t.Fatalf("Each did not stop at fn's error: %v after %d fields", err, n)
	}
	if err := Each(append(b, 0x08), func(Field) error { return nil }); !errors.Is(err, ErrMalformed) {
		t.Fatalf("Each over a truncated field: %v", err)
	}
}

// Package crdt implements statemesh's delta-state CRDTs (Almeida, Shoker,
// Baquero, "Delta State Replicated Data Types", 2018).
//
// Every type is a pure value: no I/O, no goroutines, no clock reads. Every
// mutator applies its change and returns the delta d it made, so that for a
// state X and mutator m, X ⊔ d = m(X). Deltas are values of the same type and
// are joined, encoded and decoded like any state.
//
// Joins report whether they inflated the receiver, and Extract returns the
// part of an incoming delta that is new to a state (the "RR" optimisation of
// Enes et al., "Efficient Synchronization of State-based CRDTs", ICDE 2019):
// the join of exactly those join-irreducible parts of the delta that are not
// already below the state.
//
// Causal types (ORSet, MVRegister, EWFlag, ORMap) are dot stores paired
// with a causal context, so removals need no per-element tombstones.
//
// Prune folds the contributions of a replica that is gone for good into
// another replica, so that state stops growing with every replica that
// ever wrote (see prune.go for what it means per type and for the
// conditions its caller must ensure).
//
// Values are not safe for concurrent use.
package crdt

import (
	"errors"
	"fmt"

	"github.com/statemesh/statemesh/protocol/crdtpb"
)

// Type names a CRDT type. Its numbers are those of the wire form.
type Type uint8

const (
	TypeGCounter    = Type(crdtpb.Type_TYPE_GCOUNTER)
	TypePNCounter   = Type(crdtpb.Type_TYPE_PNCOUNTER)
	TypeGSet        = Type(crdtpb.Type_TYPE_GSET)
	TypeORSet       = Type(crdtpb.Type_TYPE_ORSET)
	TypeLWWRegister = Type(crdtpb.Type_TYPE_LWWREGISTER)
	TypeMVRegister  = Type(crdtpb.Type_TYPE_MVREGISTER)
	TypeFlag        = Type(crdtpb.Type_TYPE_FLAG)
	TypeEWFlag      = Type(crdtpb.Type_TYPE_EWFLAG)
	TypeORMap       = Type(crdtpb.Type_TYPE_ORMAP)
	TypeVote        = Type(crdtpb.Type_TYPE_VOTE)
)

var typeNames = map[Type]string{
	TypeGCounter: "GCounter", TypePNCounter: "PNCounter", TypeGSet: "GSet",
	TypeORSet: "ORSet", TypeLWWRegister: "LWWRegister", TypeMVRegister: "MVRegister",
	TypeFlag: "Flag", TypeEWFlag: "EWFlag", TypeORMap: "ORMap", TypeVote: "Vote",
}

func (t Type) String() string {
	if n, ok := typeNames[t]; ok {
		return n
	}
	return fmt.Sprintf("Type(%d)", uint8(t))
}

// Valid reports whether t names a type of this package.
func (t Type) Valid() bool { _, ok := typeNames[t]; return ok }

// Errors returned by this package.
var (
	ErrTypeMismatch = errors.New("crdt: type mismatch")
	ErrUnknownType  = errors.New("crdt: unknown type")
	ErrDecode       = errors.New("crdt: malformed encoding")
	ErrTooLarge     = errors.New("crdt: encoding exceeds limits")
	ErrInvalidArg   = errors.New("crdt: invalid argument")
)

// Value is any CRDT state (or delta) of this package.
type Value interface {
	// Type returns the value's type.
	Type() Type
	// Clone returns a deep copy that shares nothing with the receiver.
	Clone() Value
	// Equal reports whether o is the same type and state.
	Equal(o Value) bool
	// IsBottom reports whether the value is the lattice's bottom (the empty
	// state: joining it changes nothing).
	IsBottom() bool
	// Size counts the value's elements in the unit of Enes et al.: counter
	// entries, set elements, map entries, register values.
	Size() int

	join(o Value) bool
	extract(o Value) Value
	encode(e *encoder, b []byte) []byte
}

// New returns the bottom value of type t.
func New(t Type) (Value, error) {
	switch t {
	case TypeGCounter:
		return NewGCounter(), nil
	case TypePNCounter:
		return NewPNCounter(), nil
	case TypeGSet:
		return NewGSet(), nil
	case TypeORSet:
		return NewORSet(), nil
	case TypeLWWRegister:
		return NewLWWRegister(), nil
	case TypeMVRegister:
		return NewMVRegister(), nil
	case TypeFlag:
		return NewFlag(), nil
	case TypeEWFlag:
		return NewEWFlag(), nil
	case TypeORMap:
		return NewORMap(), nil
	case TypeVote:
		return NewVote(), nil
	}
	return nil, fmt.Errorf("%w: %d", ErrUnknownType, uint8(t))
}

// Join merges d into x in place and reports whether x inflated (strictly
// grew). It fails, leaving x untouched, when the types differ.
func Join(x, d Value) (bool, error) {
	if x.Type() != d.Type() {
		return false, fmt.Errorf("%w: join %s into %s", ErrTypeMismatch, d.Type(), x.Type())
	}
	return x.join(d), nil
}

// Extract returns the part of d that is new to x: the join of the
// join-irreducible parts of d that x does not already include. It returns a
// bottom value when d adds nothing, and x ⊔ Extract(x, d) = x ⊔ d always.
// Neither argument is modified, and the result shares nothing with them.
func Extract(x, d Value) (Value, error) {
	if x.Type() != d.Type() {
		return nil, fmt.Errorf("%w: extract %s from %s", ErrTypeMismatch, d.Type(), x.Type())
	}
	return x.extract(d), nil
}

// Leq reports whether d ⊑ x, that is x ⊔ d = x.
func Leq(d, x Value) (bool, error) {
	e, err := Extract(x, d)
	if err != nil {
		return false, err
	}
	return e.IsBottom(), nil
}

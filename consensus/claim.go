package consensus

import (
	"bytes"
	"context"
	"errors"
)

// Claim is a first-writer-wins register on the value entity e: the first
// Claim writes value, and it and every later Claim (from any node) return
// that first value. It is how the mesh decides, once and for all, which
// node prunes a removed replica. A timed-out write is ambiguous as for
// PutValue: Claim then returns ErrTimeout and a later Claim tells who won.
// A deleted entity counts as claimed by nobody, and the next Claim writes
// it again.
//
// With over set, a claim held by over is replaced too: a claim whose
// holder is gone for good can be taken over.
func (h *Host) Claim(ctx context.Context, e Entity, value, over []byte) ([]byte, error) {
	for {
		v, found, err := h.GetValue(ctx, e)
		if err != nil {
			return nil, err
		}
		if found && !v.Deleted && (over == nil || !bytes.Equal(v.State, over)) {
			return v.State, nil
		}
		// Write over exactly what was read; losing the race is a conflict,
		// and the next read returns the winner.
		if _, err = h.PutValue(ctx, e, value, v.Version); err == nil {
			return value, nil
		}
		if !errors.Is(err, ErrConflict) {
			return nil, err
		}
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
	}
}

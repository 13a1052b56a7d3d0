package consensus

import (
	"errors"
	"fmt"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/statemesh/statemesh/protocol/consensuspb"
)

// Errors returned by a Host; match them with errors.Is. Each one says
// whether the operation was applied, which is what a caller (and the
// proxy's error table) needs to decide between retrying and reporting.
var (
	// ErrConflict: the entity's sequence number or the value's version was
	// not the expected one. Nothing was applied.
	ErrConflict = errors.New("consensus: conflict")
	// ErrInvalid: the request was malformed or exceeded a limit. Nothing
	// was applied.
	ErrInvalid = errors.New("consensus: invalid request")
	// ErrNotLeader: no node that leads the entity's shard could be reached
	// to take the operation. Nothing was applied; retry later.
	ErrNotLeader = errors.New("consensus: shard leader not reachable")
	// ErrTimeout: the deadline passed while the outcome was unknown. The
	// operation may or may not have been applied (and may still be); a
	// retry with the same request id is applied at most once.
	ErrTimeout = errors.New("consensus: timed out, outcome unknown")
	// ErrUnavailable: the shard could not take the operation (no quorum,
	// no leader yet) before the deadline. Nothing was applied.
	ErrUnavailable = errors.New("consensus: shard unavailable")
	// ErrNoHandler: no command handler is registered for the entity type.
	ErrNoHandler = errors.New("consensus: no handler for entity type")
	// ErrRejected: the command handler returned an error; nothing was
	// persisted. The error wraps the handler's message.
	ErrRejected = errors.New("consensus: command rejected")
	// ErrClosed: the Host is closed or closing.
	ErrClosed = errors.New("consensus: closed")
)

// Rejection is the error of a command its handler refused. It matches
// ErrRejected, and keeps the handler's gRPC status code and message when
// the handler's error carried one (status.FromError), also when the
// command ran on another node, so that a caller such as the proxy can
// answer with the handler's own code.
type Rejection struct {
	// Code is the handler's status code; codes.OK if its error had none.
	Code    codes.Code
	Message string
	err     error // the handler's error, when it ran on this node
}

// NewRejection is the Rejection of a handler's error (fakes of the Host
// use it too).
func NewRejection(err error) *Rejection {
	r := &Rejection{Message: err.Error(), err: err}
	if st, ok := status.FromError(err); ok {
		r.Code, r.Message = st.Code(), st.Message()
	}
	return r
}

func (r *Rejection) Error() string        { return ErrRejected.Error() + ": " + r.Message }
func (r *Rejection) Is(target error) bool { return target == ErrRejected }
func (r *Rejection) Unwrap() error        { return r.err }

// codeErrors maps wire codes to sentinels, in both directions.
var codeErrors = map[consensuspb.Code]error{
	consensuspb.Code_CODE_CONFLICT:    ErrConflict,
	consensuspb.Code_CODE_INVALID:     ErrInvalid,
	consensuspb.Code_CODE_NOT_LEADER:  ErrNotLeader,
	consensuspb.Code_CODE_TIMEOUT:     ErrTimeout,
	consensuspb.Code_CODE_UNAVAILABLE: ErrUnavailable,
	consensuspb.Code_CODE_NO_HANDLER:  ErrNoHandler,
	consensuspb.Code_CODE_REJECTED:    ErrRejected,
	consensuspb.Code_CODE_CLOSED:      ErrClosed,
}

// codeOf returns the wire code of err (CODE_OK for nil). An error this
// package does not know is reported as a timeout: its outcome is unknown.
func codeOf(err error) consensuspb.Code {
	if err == nil {
		return consensuspb.Code_CODE_OK
	}
	for c, e := range codeErrors {
		if errors.Is(err, e) {
			return c
		}
	}
	return consensuspb.Code_CODE_TIMEOUT
}

// errorOf turns a wire code and message back into an error wrapping the
// sentinel (nil for CODE_OK). An unknown code from a newer peer is an
// unknown outcome.
func errorOf(c consensuspb.Code, msg string) error {
	if c == consensuspb.Code_CODE_OK {
		return nil
	}
	e, ok := codeErrors[c]
	if !ok {
		e = ErrTimeout
	}
	if msg == "" || msg == e.Error() {
		return e
	}
	return &codedError{sentinel: e, msg: msg}
}

// codedError carries a peer's message while matching its sentinel.
type codedError struct {
	sentinel error
	msg      string
}

func (e *codedError) Error() string { return e.msg }
func (e *codedError) Unwrap() error { return e.sentinel }

// wrapf formats an error that matches sentinel.
func wrapf(sentinel error, format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{sentinel}, args...)...)
}

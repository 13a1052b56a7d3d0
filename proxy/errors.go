package proxy

import (
	"context"
	"errors"
	"fmt"
	"net/http"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/statemesh/statemesh/consensus"
	"github.com/statemesh/statemesh/mesh"
)

// Errors of the proxy itself; match them with errors.Is.
var (
	// ErrUnknownMethod: no discovered service has the called method.
	ErrUnknownMethod = errors.New("proxy: unknown service or method")
	// ErrBadRequest: the request could not be decoded, or has no entity id.
	ErrBadRequest = errors.New("proxy: bad request")
	// ErrFunction: the function misbehaved (bad bytes, a reply of the
	// wrong type, a dropped stream). Only the command fails.
	ErrFunction = errors.New("proxy: function error")
	// ErrNotSupported: not routed by this proxy yet (streaming methods
	// of entities other than server streams of CRDT entities; client
	// streams over HTTP; ORMap values other than ORSets, flags and
	// ORMaps, see errCRDTType), or a backend is missing.
	ErrNotSupported = errors.New("proxy: not supported")
	// ErrSpec: the function's EntitySpec is invalid.
	ErrSpec = errors.New("proxy: invalid entity spec")
	// ErrVersion: the function speaks another major protocol version.
	ErrVersion = errors.New("proxy: protocol version mismatch")
	// ErrClosed: the proxy is closing.
	ErrClosed = errors.New("proxy: closed")
)

// errorRow is one line of the error table.
type errorRow struct {
	err  error
	code codes.Code
	http int
}

// errorTable maps every error the proxy can meet to a gRPC code and an
// HTTP status, first match wins. The HTTP column is the standard gRPC to
// HTTP mapping (google.rpc.Code's documentation), which is also what
// vanguard applies to the gRPC status on the way out; it is kept here so
// that the table is the one place to read.
var errorTable = []errorRow{
	{ErrBadRequest, codes.InvalidArgument, http.StatusBadRequest},
	{ErrUnknownMethod, codes.Unimplemented, http.StatusNotImplemented},
	{ErrNotSupported, codes.Unimplemented, http.StatusNotImplemented},
	{ErrFunction, codes.Internal, http.StatusInternalServerError},
	{ErrClosed, codes.Unavailable, http.StatusServiceUnavailable},
	{consensus.ErrConflict, codes.Aborted, http.StatusConflict},
	{consensus.ErrInvalid, codes.InvalidArgument, http.StatusBadRequest},
	{consensus.ErrNoHandler, codes.Unimplemented, http.StatusNotImplemented},
	// A rejection carries the function's own code (see failureError);
	// this row is the fallback when it does not.
	{consensus.ErrRejected, codes.FailedPrecondition, http.StatusBadRequest},
	{consensus.ErrTimeout, codes.DeadlineExceeded, http.StatusGatewayTimeout},
	{consensus.ErrUnavailable, codes.Unavailable, http.StatusServiceUnavailable},
	{consensus.ErrNotLeader, codes.Unavailable, http.StatusServiceUnavailable},
	{consensus.ErrClosed, codes.Unavailable, http.StatusServiceUnavailable},
	{mesh.ErrClosed, codes.Unavailable, http.StatusServiceUnavailable},
	{mesh.ErrInvalidKey, codes.InvalidArgument, http.StatusBadRequest},
	// The function's delta is for another CRDT type than the entity's.
	{mesh.ErrTypeMismatch, codes.Internal, http.StatusInternalServerError},
	// A deleted CRDT entity cannot be written again.
	{mesh.ErrDeleted, codes.FailedPrecondition, http.StatusBadRequest},
	{mesh.ErrTimeout, codes.DeadlineExceeded, http.StatusGatewayTimeout},
	{mesh.ErrUnavailable, codes.Unavailable, http.StatusServiceUnavailable},
	{mesh.ErrOverloaded, codes.ResourceExhausted, http.StatusTooManyRequests},
	{context.DeadlineExceeded, codes.DeadlineExceeded, http.StatusGatewayTimeout},
	{context.Canceled, codes.Canceled, 499},
}

// failureError is a Failure the function answered a command with. As an
// event-sourced handler's error it reaches the caller of
// consensus.Host.Command as a *consensus.Rejection with the same code and
// message (GRPCStatus), also from another node.
type failureError struct {
	code codes.Code
	desc string
}

func (e *failureError) Error() string {
	return fmt.Sprintf("function failure (%v): %s", e.code, e.desc)
}

// GRPCStatus is the status the caller gets.
func (e *failureError) GRPCStatus() *status.Status { return status.New(e.code, e.desc) }

// failureCode turns a Failure's grpc_status_code into a code: 0 and
// out-of-range values are Unknown, as function.proto says.
func failureCode(n int32) codes.Code {
	if n <= 0 || n > int32(codes.Unauthenticated) {
		return codes.Unknown
	}
	return codes.Code(n)
}

// toStatus turns any error into the gRPC status the caller sees.
func toStatus(err error) *status.Status {
	if err == nil {
		return nil
	}
	// The function's own failure (here or, through consensus, on another
	// node) keeps its exact message; status.FromError would replace a
	// wrapped status's message with the whole error text.
	var fe *failureError
	if errors.As(err, &fe) {
		return fe.GRPCStatus()
	}
	var r *consensus.Rejection
	if errors.As(err, &r) && r.Code != codes.OK {
		return status.New(r.Code, r.Message)
	}
	if s, ok := status.FromError(err); ok {
		return s
	}
	for _, r := range errorTable {
		if errors.Is(err, r.err) {
			return status.New(r.code, err.Error())
		}
	}
	return status.New(codes.Unknown, err.Error())
}

// httpStatus is the HTTP status of err (the table's second column).
func httpStatus(err error) int {
	for _, r := range errorTable {
		if errors.Is(err, r.err) {
			return r.http
		}
	}
	return http.StatusInternalServerError
}

// httpStatusOf is the HTTP status of a gRPC code, by the standard mapping
// (the table's columns side by side, for the codes the table lacks), for
// the responses the proxy writes itself rather than through vanguard.
func httpStatusOf(c codes.Code) int {
	for _, r := range errorTable {
		if r.code == c {
			return r.http
		}
	}
	switch c {
	case codes.OK:
		return http.StatusOK
	case codes.NotFound:
		return http.StatusNotFound
	case codes.AlreadyExists:
		return http.StatusConflict
	case codes.PermissionDenied:
		return http.StatusForbidden
	case codes.Unauthenticated:
		return http.StatusUnauthorized
	case codes.OutOfRange:
		return http.StatusBadRequest
	}
	return http.StatusInternalServerError
}

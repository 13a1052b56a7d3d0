package proxybench

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"strconv"
)

// RESP (the Redis serialization protocol, version 2), as much as INCR and
// PING need: commands are arrays of bulk strings; replies are simple
// strings, errors, integers, bulk strings and arrays.

// ErrProtocol is returned, wrapped, for a reply that is not RESP.
var ErrProtocol = errors.New("proxybench: RESP protocol error")

// RedisError is an error reply ("-ERR ...").
type RedisError string

func (e RedisError) Error() string { return "redis: " + string(e) }

// AppendCommand appends args as a RESP array of bulk strings.
func AppendCommand(b []byte, args ...string) []byte {
	b = append(b, '*')
	b = strconv.AppendInt(b, int64(len(args)), 10)
	b = append(b, '\r', '\n')
	for _, a := range args {
		b = append(b, '$')
		b = strconv.AppendInt(b, int64(len(a)), 10)
		b = append(b, '\r', '\n')
		b = append(b, a...)
		b = append(b, '\r', '\n')
	}
	return b
}

// maxBulk bounds a bulk string or array length we accept (Redis's own
// limit is 512 MB; we read counters).
const maxBulk = 64 << 20

// ReadReply reads one reply: a simple string (string), an integer
// (int64), a bulk string ([]byte, nil for the null bulk string), an array
// ([]any, nil for the null array) or an error reply (RedisError, returned
// as the error).
func ReadReply(r *bufio.Reader) (any, error) {
	line, err := readLine(r)
	if err != nil {
		return nil, err
	}
	if len(line) == 0 {
		return nil, fmt.Errorf("%w: empty line", ErrProtocol)
	}
	body := line[1:]
	switch line[0] {
	case '+':
		return string(body), nil
	case '-':
		return nil, RedisError(body)
	case ':':
		n, err := strconv.ParseInt(string(body), 10, 64)
		if err != nil {
			return nil, fmt.Errorf("%w: integer %q", ErrProtocol, body)
		}
		return n, nil
	case '$':
		n, err := strconv.Atoi(string(body))
		if err != nil || n < -1 || n > maxBulk {
			return nil, fmt.Errorf("%w: bulk length %q", ErrProtocol, body)
		}
		if n == -1 {
			return []byte(nil), nil
		}
		b := make([]byte, n+2)
		if _, err := io.ReadFull(r, b); err != nil {
			return nil, err
		}
		if b[n] != '\r' || b[n+1] != '\n' {
			return nil, fmt.Errorf("%w: bulk string not terminated by CRLF", ErrProtocol)
		}
		return b[:n], nil
	case '*':
		n, err := strconv.Atoi(string(body))
		if err != nil || n < -1 || n > maxBulk {
			return nil, fmt.Errorf("%w: array length %q", ErrProtocol, body)
		}
		if n == -1 {
			return []any(nil), nil
		}
		out := make([]any, n)
		for i := range out {
			v, err := ReadReply(r)
			var re RedisError
			switch {
			case errors.As(err, &re):
				v = re // an error inside an array is an element
			case err != nil:
				return nil, err
			}
			out[i] = v
		}
		return out, nil
	}
	return nil, fmt.Errorf("%w: unknown type byte %q", ErrProtocol, line[0])
}

// readLine reads up to CRLF and returns the line without it.
func readLine(r *bufio.Reader) ([]byte, error) {
	line, err := r.ReadSlice('\n')
	if err != nil {
		if errors.Is(err, bufio.ErrBufferFull) {
			return nil, fmt.Errorf("%w: line too long", ErrProtocol)
		}
		return nil, err
	}
	if len(line) < 2 || line[len(line)-2] != '\r' {
		return nil, fmt.Errorf("%w: line not terminated by CRLF", ErrProtocol)
	}
	return line[:len(line)-2], nil
}

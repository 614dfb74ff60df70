package httpx

import (
	"fmt"
	"net/http"

	"github.com/mfaflow/mfaflow/pkg/fault"
)

// MaxIdempotencyKeyBytes bounds an Idempotency-Key header (draft-ietf-httpapi-idempotency-key
// leaves the length to the server; 255 holds any UUID or ULID with room for a prefix).
const MaxIdempotencyKeyBytes = 255

// IdempotencyKey reads the Idempotency-Key request header of an initiation. keyed is false
// without one; more than one, or one that is not 1 to MaxIdempotencyKeyBytes visible ASCII
// characters, is a 400. A retry with the same key (same user, same route) answers with what
// the first attempt started instead of starting another.
func IdempotencyKey(r *http.Request) (key string, keyed bool, err error) {
	vs := r.Header.Values("Idempotency-Key")
	if len(vs) == 0 {
		return "", false, nil
	}
	if len(vs) > 1 || !validIdempotencyKey(vs[0]) {
		return "", false, fault.New(fault.BadRequest, fmt.Sprintf("Idempotency-Key must be one header of 1 to %d visible ASCII characters", MaxIdempotencyKeyBytes))
	}
	return vs[0], true, nil
}

func validIdempotencyKey(key string) bool {
	if key == "" || len(key) > MaxIdempotencyKeyBytes {
		return false
	}
	for i := 0; i < len(key); i++ {
		if key[i] < 0x21 || key[i] > 0x7e {
			return false
		}
	}
	return true
}

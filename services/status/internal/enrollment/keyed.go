package enrollment

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"errors"
	"fmt"

	"github.com/google/uuid"
	"github.com/mfaflow/mfaflow/pkg/ids"
)

// Idempotency keys. A client that did not get the answer to an initiation (a timeout, a lost
// connection, a replica killed mid-request) sends it again with the same Idempotency-Key; the
// retry must find what the first attempt made instead of starting a second enrollment or
// authentication. The ids of a keyed initiation are therefore not random but derived from the
// user, the kind of initiation and the key with an HMAC under a server secret (KeySecret): every
// replica derives the same ids, the store's create-if-absent on the id is the atomic claim, and
// nothing extra is stored. The server secret keeps the ids unguessable even for a client that
// picks weak keys, because status and exchange ids are capabilities (the SSE stream, the QR).

// ErrKeyedUnavailable: the service has no secret to derive keyed ids with.
var ErrKeyedUnavailable = errors.New("idempotency keys are not configured")

// Scopes of keyed ids: the same key names different things on different routes.
const (
	KeyScopeEnrollment = "enrollment"
)

// KeyScopeAuthentication is the scope of a keyed sign-in of method.
func KeyScopeAuthentication(method string) string { return "authentication/" + method }

// KeyedIDs derives the status id and exchange id of sub's initiation in scope sent with
// Idempotency-Key key. An enrollment's status id is ids.StatusIDFor its exchange id, as
// for every enrollment the initiation service starts.
func (s *Service) KeyedIDs(scope, sub, key string) (id, exchangeID string, err error) {
	if len(s.KeySecret) == 0 {
		return "", "", ErrKeyedUnavailable
	}
	if key == "" {
		return "", "", fmt.Errorf("%w: an empty Idempotency-Key", ErrBadRequest)
	}
	m := hmac.New(sha256.New, s.KeySecret)
	// Lengths first, so that no two (scope, sub, key) triples feed the same bytes.
	fmt.Fprintf(m, "%d:%s%d:%s%d:%s", len(scope), scope, len(sub), sub, len(key), key)
	sum := m.Sum(nil)
	exchangeID = uuidFrom(sum[16:32])
	if scope == KeyScopeEnrollment {
		return ids.StatusIDFor(exchangeID), exchangeID, nil
	}
	return uuidFrom(sum[:16]), exchangeID, nil
}

// uuidFrom makes 16 bytes of an HMAC a UUID (version 8, RFC 9562: custom), so keyed ids look
// like and validate as every other id.
func uuidFrom(b []byte) string {
	var u uuid.UUID
	copy(u[:], b)
	u[6] = u[6]&0x0f | 0x80
	u[8] = u[8]&0x3f | 0x80
	return u.String()
}

// Keyed returns the enrollment or authentication stored under a keyed id, if the first attempt
// got as far as storing it: ok is false when there is none. One of another user or kind is
// not an answer (the HMAC makes that a collision nobody will see, but the check is cheap); one
// of another user is not found, since Get hides it.
func (s *Service) Keyed(ctx context.Context, id string, caller Caller, kind Kind) (e Enrollment, ok bool, err error) {
	// Get, not Store.Get: one past its expiry is answered EXPIRED, as a poll would show it.
	e, err = s.Get(ctx, id, caller)
	if errors.Is(err, ErrNotFound) {
		return Enrollment{}, false, nil
	}
	if err != nil {
		return Enrollment{}, false, err
	}
	if e.Kind != kind {
		return Enrollment{}, false, fmt.Errorf("%w: the Idempotency-Key names another initiation", ErrConflict)
	}
	return e, true, nil
}

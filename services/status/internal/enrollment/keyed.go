package enrollment

import (
	"context"
	"errors"
	"fmt"

	"github.com/mfaflow/mfaflow/pkg/ids"
)

// Idempotency keys. A client that did not get the answer to an initiation (a timeout, a lost
// connection, a replica killed mid-request) sends it again with the same Idempotency-Key; the
// retry must find what the first attempt made instead of starting a second enrollment. The ids
// of a keyed initiation are therefore not random but derived from the user, the scope and the
// key (ids.Keyed, under a server secret, KeySecret): every replica derives the same ids, the
// store's create-if-absent on the id is the atomic claim, and nothing extra is stored.

// ErrKeyedUnavailable: the service has no secret to derive keyed ids with.
var ErrKeyedUnavailable = errors.New("idempotency keys are not configured")

// KeyScope is the scope of an enrollment's keyed ids (sign-ins have their own, per method).
const KeyScope = "enrollment"

// KeyedIDs derives the status id and exchange id of sub's enrollment sent with Idempotency-Key
// key. The status id is ids.StatusIDFor its exchange id, as for every enrollment the
// initiation service starts.
func (s *Service) KeyedIDs(sub, key string) (id, exchangeID string, err error) {
	if len(s.KeySecret) == 0 {
		return "", "", ErrKeyedUnavailable
	}
	if key == "" {
		return "", "", fmt.Errorf("%w: an empty Idempotency-Key", ErrBadRequest)
	}
	_, exchangeID = ids.Keyed(s.KeySecret, KeyScope, sub, key)
	return ids.StatusIDFor(exchangeID), exchangeID, nil
}

// Keyed returns the enrollment stored under a keyed id, if the first attempt got as far as
// storing it: ok is false when there is none. One of another user is not found, since Get hides
// it.
func (s *Service) Keyed(ctx context.Context, id string, caller Caller) (e Enrollment, ok bool, err error) {
	// Get, not Store.Get: one past its expiry is answered EXPIRED, as a poll would show it.
	e, err = s.Get(ctx, id, caller)
	if errors.Is(err, ErrNotFound) {
		return Enrollment{}, false, nil
	}
	if err != nil {
		return Enrollment{}, false, err
	}
	return e, true, nil
}

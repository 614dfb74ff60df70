package natsapi

import (
	"errors"

	"github.com/mfaflow/mfaflow/pkg/ids"
)

// MaxIDLen bounds status and exchange ids. Initiation makes them with uuid.NewString (36
// characters); the store refuses anything longer than this, so no longer id can exist.
const MaxIDLen = ids.MaxLen

// ErrInvalidID: an id that no enrollment can have. It is refused before it becomes part of a
// NATS subject, a KV key or a map key (a 4 KB id once made NATS drop the connection with
// "maximum control line exceeded"; `*`, `>` or `a.b` would be wildcards or extra tokens).
var ErrInvalidID = errors.New("invalid enrollment id")

// ValidID reports whether id can be a status or exchange id: 1 to MaxIDLen characters of
// [A-Za-z0-9_-]. That is exactly what the status store accepts as a key token, and it holds
// every id initiation creates (UUIDs). Such an id is also a single, wildcard-free subject token.
func ValidID(id string) bool { return ids.Valid(id) }

// Package ids holds the one rule for the ids mfaflow makes and accepts (status ids, exchange
// ids, ph_ids): 1 to MaxLen characters of [A-Za-z0-9_-]. Every id mfaflow creates (UUIDs)
// passes, and anything that passes is a single, wildcard-free NATS subject token and a valid KV
// key token, so checking it before an id reaches a subject, a key or a map keeps a 4 KB or a
// `*`/`>`/`a.b` id from ever doing harm there.
package ids

import "errors"

// MaxLen bounds an id; no id mfaflow makes is longer.
const MaxLen = 128

// ErrInvalid is the error of an id that Valid refuses: one no status object, exchange or device
// can have. Adapters refuse such an id before it becomes part of a NATS subject, a KV key or a
// map key (a 4 KB id once made NATS drop the connection with "maximum control line exceeded").
var ErrInvalid = errors.New("invalid id")

// Valid reports whether id can be an mfaflow id.
func Valid(id string) bool {
	if id == "" || len(id) > MaxLen {
		return false
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
			return false
		}
	}
	return true
}

package ids

import (
	"crypto/sha1"
	"encoding/hex"
)

// statusIDNamespace is the UUID namespace of StatusIDFor.
var statusIDNamespace = [16]byte{0x8f, 0x3a, 0x61, 0x2e, 0x4b, 0x7c, 0x4d, 0x19, 0xa2, 0x5e, 0x0b, 0x93, 0xc4, 0x16, 0xd8, 0x7f}

// StatusIDFor is the status id the initiation service gives the enrollment of exchangeID: the
// name-based (version 5, SHA-1) UUID of the exchange id in a fixed namespace. The status
// service finds an enrollment so named from its exchange id alone, without an index entry, and
// two enrollments cannot share an exchange id because they would share the status id.
//
// It lives here, not in the commands contract, because two domains apply it (initiation names
// enrollments with it, status finds them by it) and domain packages import no contract.
//
// The exchange id stays the only capability: the status id appears in URLs, events and logs,
// and the exchange id cannot be computed from it (that would need a SHA-1 preimage).
func StatusIDFor(exchangeID string) string {
	h := sha1.New()
	h.Write(statusIDNamespace[:])
	h.Write([]byte(exchangeID))
	var u [16]byte
	copy(u[:], h.Sum(nil))
	u[6] = u[6]&0x0f | 0x50 // version 5
	u[8] = u[8]&0x3f | 0x80 // RFC 9562 variant
	var b [36]byte
	hex.Encode(b[0:8], u[0:4])
	b[8] = '-'
	hex.Encode(b[9:13], u[4:6])
	b[13] = '-'
	hex.Encode(b[14:18], u[6:8])
	b[18] = '-'
	hex.Encode(b[19:23], u[8:10])
	b[23] = '-'
	hex.Encode(b[24:], u[10:])
	return string(b[:])
}

package ids

import (
	"crypto/hmac"
	"crypto/sha256"
	"fmt"
)

// Keyed derives the ids of an initiation sent with an Idempotency-Key: a status id and an
// exchange id from the user, the scope of the initiation (the same key names different things
// on different routes) and the key, with an HMAC under a server secret that every replica
// shares. Every replica derives the same ids, so the store's create-if-absent on the id is the
// atomic claim of a retried initiation; the secret keeps the ids unguessable even for a client
// that picks weak keys, because status and exchange ids are capabilities. Both are UUIDs
// (version 8, RFC 9562: custom), so they validate as every other id. Two domains use it
// (enrollments, which name themselves StatusIDFor the exchange id instead, and sign-ins).
func Keyed(secret []byte, scope, sub, key string) (statusID, exchangeID string) {
	m := hmac.New(sha256.New, secret)
	// Lengths first, so that no two (scope, sub, key) triples feed the same bytes.
	fmt.Fprintf(m, "%d:%s%d:%s%d:%s", len(scope), scope, len(sub), sub, len(key), key)
	sum := m.Sum(nil)
	return uuidFrom(sum[:16]), uuidFrom(sum[16:32])
}

// uuidFrom makes 16 bytes of an HMAC a version 8 UUID.
func uuidFrom(b []byte) string {
	var u [16]byte
	copy(u[:], b)
	u[6] = u[6]&0x0f | 0x80
	u[8] = u[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", u[0:4], u[4:6], u[6:8], u[8:10], u[10:16])
}

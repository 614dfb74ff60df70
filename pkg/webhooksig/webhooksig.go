// Package webhooksig is how mfaflow signs the HTTP requests it sends to an operator's webhooks
// (push wake-ups, SMS by webhook) and how a receiver checks them: one scheme, so one receiver
// library serves every hook.
//
//	X-Mfaflow-Timestamp: 1767225600
//	X-Mfaflow-Signature: v1=<hex HMAC-SHA256(secret, timestamp + "." + body)>
//	X-Mfaflow-Delivery: <id, the same on every retry of one delivery>
//
// A receiver reads the raw body (before any JSON decoding), recomputes the HMAC over the
// timestamp header, a ".", and the body, and compares in constant time; it rejects a timestamp
// more than a few minutes from its clock (a replayed request is then useless) and drops a
// delivery id it has seen (a retry after a lost response). Verify does all but the dedupe.
package webhooksig

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// Header names of a signed request.
const (
	HeaderTimestamp = "X-Mfaflow-Timestamp"
	HeaderSignature = "X-Mfaflow-Signature"
	HeaderDelivery  = "X-Mfaflow-Delivery"
)

// Errors of Verify.
var (
	ErrSignature = errors.New("webhook: signature does not match")
	ErrTimestamp = errors.New("webhook: timestamp missing, malformed or outside the allowed age")
)

// Sign returns the X-Mfaflow-Signature value of body sent at timestamp (unix seconds, as sent
// in X-Mfaflow-Timestamp).
func Sign(secret []byte, timestamp string, body []byte) string {
	return "v1=" + hex.EncodeToString(mac(secret, timestamp, body))
}

// SetHeaders signs body as sent at now and sets the three headers on h.
func SetHeaders(h http.Header, secret []byte, delivery string, now time.Time, body []byte) {
	ts := strconv.FormatInt(now.Unix(), 10)
	h.Set(HeaderTimestamp, ts)
	h.Set(HeaderSignature, Sign(secret, ts, body))
	h.Set(HeaderDelivery, delivery)
}

// Verify checks a request as a receiver should: the signature over timestamp and the raw body,
// and a timestamp no further than maxAge from now, either way (a replay is stale; a clock far
// ahead is wrong). It returns ErrTimestamp or ErrSignature.
func Verify(secret []byte, timestamp, signature string, body []byte, now time.Time, maxAge time.Duration) error {
	sec, err := strconv.ParseInt(timestamp, 10, 64)
	if err != nil {
		return ErrTimestamp
	}
	if d := now.Sub(time.Unix(sec, 0)); d > maxAge || d < -maxAge {
		return fmt.Errorf("%w: %v from now", ErrTimestamp, -d.Round(time.Second))
	}
	got, ok := strings.CutPrefix(signature, "v1=")
	if !ok {
		return ErrSignature
	}
	sum, err := hex.DecodeString(got)
	if err != nil {
		return ErrSignature
	}
	if !hmac.Equal(sum, mac(secret, timestamp, body)) {
		return ErrSignature
	}
	return nil
}

// VerifyRequest is Verify on the headers of r, whose body the caller has read into body.
func VerifyRequest(secret []byte, r *http.Request, body []byte, now time.Time, maxAge time.Duration) error {
	return Verify(secret, r.Header.Get(HeaderTimestamp), r.Header.Get(HeaderSignature), body, now, maxAge)
}

func mac(secret []byte, timestamp string, body []byte) []byte {
	m := hmac.New(sha256.New, secret)
	m.Write([]byte(timestamp))
	m.Write([]byte{'.'})
	m.Write(body)
	return m.Sum(nil)
}

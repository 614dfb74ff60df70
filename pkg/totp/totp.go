// Package totp holds mfaflow's rules for time-based one-time passwords (RFC 6238) on top of
// github.com/pquerna/otp: how secrets are made, which time steps a code may come from, and how
// a used code is kept from being accepted twice.
//
// The HOTP arithmetic itself is left to pquerna/otp so that mfaflow computes exactly the codes
// that authenticator apps compute; this package only decides which codes count.
package totp

import (
	"crypto/rand"
	"crypto/subtle"
	"encoding/base32"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/pquerna/otp"
	"github.com/pquerna/otp/hotp"
)

// Params are the otpauth URI parameters of a credential. They are plain values (not otp types)
// because they are stored with the credential and written into the otpauth URI verbatim, and
// most authenticator apps silently ignore anything but the defaults — so a non-default value
// must be a deliberate choice that travels with the credential.
type Params struct {
	// Algorithm is the HMAC hash as spelled in otpauth URIs: "SHA1", "SHA256" or "SHA512".
	Algorithm string
	// Digits is the code length; 6 to 8 as RFC 4226 allows.
	Digits int
	// Period is the length of a time step in seconds.
	Period int
}

// Default is what every mainstream authenticator app understands; anything else risks an app
// that accepts the QR but shows codes that never validate.
var Default = Params{Algorithm: "SHA1", Digits: 6, Period: 30}

// SecretBytes is the secret length: RFC 4226 requires at least 128 bits and recommends 160,
// which is also the SHA-1 block-friendly size every app handles.
const SecretBytes = 20

// secretEncoding is unpadded because several authenticator apps reject or mangle '=' in the
// secret parameter of an otpauth URI, and 20 bytes never need padding anyway.
var secretEncoding = base32.StdEncoding.WithPadding(base32.NoPadding)

// NewSecret returns a fresh random secret in the form authenticator apps expect to be given:
// SecretBytes bytes from crypto/rand, base32 upper case without padding (32 characters).
func NewSecret() (string, error) {
	var b [SecretBytes]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("totp: reading random secret: %w", err)
	}
	return secretEncoding.EncodeToString(b[:]), nil
}

// Step is the RFC 6238 counter for t. It floors rather than truncates so that the counter is
// monotonic in t everywhere, and it is what Check returns and what callers store as lastStep.
// It panics if p.Period is not positive, as an invalid Params is a programming error.
func Step(t time.Time, p Params) int64 {
	period := int64(p.Period)
	if period <= 0 {
		panic("totp: Params.Period must be positive")
	}
	s := t.Unix()
	q := s / period
	if s%period != 0 && s < 0 {
		q--
	}
	return q
}

// Code is the code an authenticator app shows at t. mfaflow itself only needs it in tests and
// tools; servers verify with Check.
func Code(secret string, t time.Time, p Params) (string, error) {
	opts, err := options(p)
	if err != nil {
		return "", err
	}
	if err := checkSecret(secret); err != nil {
		return "", err
	}
	step := Step(t, p)
	if step < 0 {
		return "", fmt.Errorf("totp: time %v is before the Unix epoch", t)
	}
	return codeAt(secret, step, opts)
}

// Check decides whether code is valid for secret at now. It accepts codes from the time steps
// Step(now)-skew through Step(now)+skew, to absorb clock drift and typing time, but never a step
// at or below lastStep: a code that was accepted once must not be accepted again (RFC 6238 §5.2),
// so callers store the returned step and pass it back as lastStep. Zero means no code has been
// accepted yet, since real steps are far above it.
//
// If code matches more than one step, the highest is returned, so that storing it rules out every
// step the same digits could be replayed against. Every candidate is computed and compared in
// constant time whatever matches, so the response time says nothing about which step (if any)
// matched.
//
// A code of the wrong length or with non-digits is just a wrong code (ok false, nil error); errors
// are reserved for a malformed secret or invalid parameters, which are faults of the caller.
func Check(secret, code string, now time.Time, p Params, skew int, lastStep int64) (step int64, ok bool, err error) {
	opts, err := options(p)
	if err != nil {
		return 0, false, err
	}
	if skew < 0 {
		return 0, false, fmt.Errorf("totp: negative skew %d", skew)
	}
	if err := checkSecret(secret); err != nil {
		return 0, false, err
	}
	// The expected length is public, so refusing early leaks nothing; the digit check only
	// spares the HMACs and is equally public.
	if len(code) != p.Digits || !allDigits(code) {
		return 0, false, nil
	}

	now0 := Step(now, p)
	given := []byte(code)
	var matched int64
	found := 0
	for s := now0 - int64(skew); s <= now0+int64(skew); s++ {
		if s < 0 {
			// Only reachable with a clock before the epoch; there is no code for a negative
			// counter, and the skipped work depends on time alone, not on the secret.
			continue
		}
		want, err := codeAt(secret, s, opts)
		if err != nil {
			return 0, false, err
		}
		eq := subtle.ConstantTimeCompare([]byte(want), given)
		fresh := ctGreater(s, lastStep)
		hit := eq & fresh
		matched = ctSelect64(hit, s, matched)
		found |= hit
	}
	if found == 0 {
		return 0, false, nil
	}
	return matched, true, nil
}

// codeAt goes through hotp with an explicit counter rather than totp.GenerateCodeCustom with a
// time: the latter recomputes the counter through float64 from a time, and Check already has
// the exact integer step.
func codeAt(secret string, step int64, opts hotp.ValidateOpts) (string, error) {
	c, err := hotp.GenerateCodeCustom(secret, uint64(step), opts)
	if err != nil {
		return "", fmt.Errorf("totp: %w", err)
	}
	return c, nil
}

// options turns Params into pquerna/otp options, refusing anything the otpauth format or
// RFC 4226 does not allow instead of letting the library panic or silently default.
func options(p Params) (hotp.ValidateOpts, error) {
	var alg otp.Algorithm
	switch p.Algorithm {
	case "SHA1":
		alg = otp.AlgorithmSHA1
	case "SHA256":
		alg = otp.AlgorithmSHA256
	case "SHA512":
		alg = otp.AlgorithmSHA512
	default:
		return hotp.ValidateOpts{}, fmt.Errorf("totp: unsupported algorithm %q", p.Algorithm)
	}
	if p.Digits < 6 || p.Digits > 8 {
		return hotp.ValidateOpts{}, fmt.Errorf("totp: unsupported digits %d", p.Digits)
	}
	if p.Period <= 0 {
		return hotp.ValidateOpts{}, fmt.Errorf("totp: unsupported period %d", p.Period)
	}
	return hotp.ValidateOpts{Digits: otp.Digits(p.Digits), Algorithm: alg}, nil
}

// errEmptySecret exists because an empty key still yields HMACs, i.e. codes that anyone can
// compute; pquerna/otp accepts it, so this package must not.
var errEmptySecret = errors.New("totp: empty secret")

// checkSecret rejects what pquerna/otp would reject (not base32) and, in addition, an empty
// secret. It applies the same leniency as the library (case, padding, surrounding space) so
// that the two never disagree about which secrets are usable.
func checkSecret(secret string) error {
	s := strings.ToUpper(strings.TrimSpace(secret))
	s = strings.TrimRight(s, "=")
	if s == "" {
		return errEmptySecret
	}
	if _, err := secretEncoding.DecodeString(s); err != nil {
		return fmt.Errorf("totp: %w", otp.ErrValidateSecretInvalidBase32)
	}
	return nil
}

func allDigits(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

// ctGreater returns 1 if a > b and 0 otherwise, without a data-dependent branch.
func ctGreater(a, b int64) int {
	// b-a is negative exactly when a > b; steps and lastStep are far from overflow.
	return int(uint64(b-a) >> 63)
}

// ctSelect64 returns x if v == 1 and y if v == 0, without a data-dependent branch.
func ctSelect64(v int, x, y int64) int64 {
	mask := -int64(v)
	return (x & mask) | (y &^ mask)
}

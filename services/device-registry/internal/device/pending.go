package device

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"time"

	"github.com/mfaflow/mfaflow/events/method"
	"github.com/mfaflow/mfaflow/pkg/totp"
)

// Pending is the credential of an enrollment in progress, before any code claimed it. The
// registry does not store it: CreatePending seals it (secret included) and the status service
// keeps the sealed value in the enrollment's document, which it cannot open, and hands it back
// with the code. The registry stores a credential only once a code proves that an app holds
// the secret (VerifyPending), so an initiation costs it no write and an enrollment nobody
// finishes leaves nothing behind here.
//
// The sealed value is bound (as associated data) to its enrollment and user: it opens only for
// the status id and sub it was made for, so a store writer cannot move it to another
// enrollment. It lives only as long as the enrollment is open; the status service drops it
// when the enrollment ends.
type Pending struct {
	Secret    string
	Params    totp.Params
	CreatedAt time.Time
	ExpiresAt time.Time
	// A factor whose codes are sent (EMAIL, SMS; oob.go) has no secret: Method names it, and
	// Destination is the address (normalised; Masked as shown), Region a number's region,
	// Locale the language of its messages, CodeHash the keyed hash of the code last sent and
	// CodeExpiresAt when that code stops working.
	Method        string
	Destination   string
	Masked        string
	Region        string
	Locale        string
	CodeHash      []byte
	CodeExpiresAt time.Time
	// A passkey (WEBAUTHN; webauthn.go) has the RelyingParty's registration session and the
	// friendly name the user asked for, if any.
	Session      []byte
	FriendlyName string
}

// sent reports whether p is a factor whose codes are sent rather than computed by an app.
func (p Pending) sent() bool { return p.Method == method.Email || p.Method == method.SMS }

// pendingDoc is Pending's sealed encoding; the field names are short because it travels in
// every enrollment document.
type pendingDoc struct {
	Secret    string `json:"s"`
	Algorithm string `json:"a"`
	Digits    int    `json:"d"`
	Period    int    `json:"p"`
	CreatedAt int64  `json:"c"` // unix milliseconds
	ExpiresAt int64  `json:"x"` // unix milliseconds, 0 for none
	// Codes by email and SMS (Pending.sent).
	Method        string `json:"m,omitempty"`
	Destination   string `json:"t,omitempty"`
	Masked        string `json:"mt,omitempty"`
	Region        string `json:"r,omitempty"`
	Locale        string `json:"l,omitempty"`
	CodeHash      []byte `json:"h,omitempty"`
	CodeExpiresAt int64  `json:"cx,omitempty"` // unix milliseconds
	// Passkeys (WEBAUTHN).
	Session      []byte `json:"ws,omitempty"`
	FriendlyName string `json:"n,omitempty"`
}

func pendingAAD(statusID, sub string) []byte {
	return []byte("mfaflow/pending-credential/v1\x00" + statusID + "\x00" + sub)
}

func (p Pending) seal(sealer Sealer, statusID, sub string) ([]byte, error) {
	d := pendingDoc{Secret: p.Secret, Algorithm: p.Params.Algorithm, Digits: p.Params.Digits, Period: p.Params.Period,
		CreatedAt: p.CreatedAt.UnixMilli(), Method: p.Method, Destination: p.Destination, Masked: p.Masked,
		Region: p.Region, Locale: p.Locale, CodeHash: p.CodeHash, Session: p.Session, FriendlyName: p.FriendlyName}
	if !p.CodeExpiresAt.IsZero() {
		d.CodeExpiresAt = p.CodeExpiresAt.UnixMilli()
	}
	if !p.ExpiresAt.IsZero() {
		d.ExpiresAt = p.ExpiresAt.UnixMilli()
	}
	plain, err := json.Marshal(d)
	if err != nil {
		return nil, fmt.Errorf("encode pending credential: %w", err)
	}
	defer clear(plain)
	sealed, err := sealer.Seal(plain, pendingAAD(statusID, sub))
	if err != nil {
		return nil, fmt.Errorf("seal pending credential: %w", err)
	}
	return sealed, nil
}

// openPending opens a sealed Pending of enrollment statusID of sub. Any failure (another
// enrollment's value, a retired key, an altered value) is ErrNotFound: for this enrollment
// there is no such credential.
func openPending(sealer Sealer, sealed []byte, statusID, sub string) (Pending, error) {
	plain, err := sealer.Open(sealed, pendingAAD(statusID, sub))
	if err != nil {
		return Pending{}, fmt.Errorf("open pending credential: %w", ErrNotFound)
	}
	defer clear(plain)
	var d pendingDoc
	if err := json.Unmarshal(plain, &d); err != nil || d.Secret == "" && d.Destination == "" && len(d.Session) == 0 {
		return Pending{}, fmt.Errorf("decode pending credential: %w", ErrNotFound)
	}
	p := Pending{Secret: d.Secret, Params: totp.Params{Algorithm: d.Algorithm, Digits: d.Digits, Period: d.Period},
		CreatedAt: time.UnixMilli(d.CreatedAt).UTC(), Method: d.Method, Destination: d.Destination, Masked: d.Masked,
		Region: d.Region, Locale: d.Locale, CodeHash: d.CodeHash, Session: d.Session, FriendlyName: d.FriendlyName}
	if d.CodeExpiresAt != 0 {
		p.CodeExpiresAt = time.UnixMilli(d.CodeExpiresAt).UTC()
	}
	if d.ExpiresAt != 0 {
		p.ExpiresAt = time.UnixMilli(d.ExpiresAt).UTC()
	}
	return p, nil
}

// pendingID names a sealed pending credential without revealing anything of it: a stored
// claim remembers which one it came from, so that a claim made from a value the enrollment
// has since replaced (a retried initiation handed out a new secret) gives way to the new one.
func pendingID(sealed []byte) string {
	h := sha256.Sum256(sealed)
	return hex.EncodeToString(h[:12])
}

// credential is the stored credential a code made of p: still unverified (Activate verifies
// it once the enrollment is ENROLLED), its secret sealed again under the ph_id as every stored
// secret is.
func (p Pending) credential(sealer Sealer, statusID, sub, sealedPending string) (Credential, error) {
	phid := PHIDFor(statusID)
	// A sent-code factor's sealed value is its address: it is as private as a secret.
	secret, m := p.Secret, method.TOTP
	if p.sent() {
		secret, m = p.Destination, p.Method
	}
	sealed, err := sealer.Seal([]byte(secret), []byte(phid))
	if err != nil {
		return Credential{}, fmt.Errorf("seal secret: %w", err)
	}
	return Credential{
		PHID:         phid,
		Sub:          sub,
		StatusID:     statusID,
		Method:       m,
		Destination:  p.Masked,
		SealedSecret: sealed,
		Params:       p.Params,
		CreatedAt:    p.CreatedAt,
		ExpiresAt:    p.ExpiresAt,
		PendingID:    sealedPending,
	}, nil
}

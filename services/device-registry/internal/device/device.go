// Package device is the device registry's domain: TOTP credentials, from the pending secret
// handed out at enrollment to the verified device a user names and removes.
//
// The registry is the only holder of TOTP secrets, so the rules that protect them live here:
// a secret is sealed before it reaches a store, bound to its credential's ph_id; it never
// appears in an error, an event or a log; a code is accepted at most once (the accepted time
// step is stored); a removed credential keeps no secret. Every change is a compare-and-set on
// the stored credential and carries its CloudEvent in the same write (transactional outbox).
//
// The package imports no transport: it declares the Store, Sealer and Clock it needs and the
// adapters around it satisfy them.
package device

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/mfaflow/mfaflow/pkg/outbox"
	"github.com/mfaflow/mfaflow/pkg/totp"
)

// DefaultName is the friendly name of a device whose companion did not report one, so that a
// device list never shows an empty name.
const DefaultName = "Authenticator"

// MaxNameLength bounds a friendly name in characters (runes), after trimming.
const MaxNameLength = 64

// Domain errors. Transports map them to stable codes in one place each; stores translate
// their driver's errors into them.
var (
	// ErrNotFound: no such credential, or it belongs to someone else (the two are not told
	// apart, so ph_ids cannot be probed).
	ErrNotFound = errors.New("credential not found")
	// ErrConflict: the request contradicts the stored state, e.g. a second credential for one
	// enrollment or an activation by a different device.
	ErrConflict = errors.New("credential conflict")
	// ErrExpired: the pending credential outlived its enrollment.
	ErrExpired = errors.New("pending credential expired")
	// ErrStale: the stored credential changed since it was read; read again and retry.
	ErrStale = errors.New("credential changed concurrently")
	// ErrInvalid: the request itself is malformed (a bad name, a missing id). The error in the
	// chain is an *InvalidError that says what is wrong.
	ErrInvalid = errors.New("invalid request")
)

// InvalidError is a malformed request. Reason is worded for the user and holds no internals,
// so transports may pass it on; errors.Is(err, ErrInvalid) matches it.
type InvalidError struct {
	Reason string
}

func (e *InvalidError) Error() string { return "invalid request: " + e.Reason }

// Is makes every InvalidError match ErrInvalid.
func (e *InvalidError) Is(target error) bool { return target == ErrInvalid }

func invalid(reason string) error { return &InvalidError{Reason: reason} }

// Credential is one TOTP secret of a user: pending while its enrollment runs, a device once a
// code proved that an authenticator holds the secret.
type Credential struct {
	// PHID identifies the credential everywhere (the device's id in the API and in events).
	PHID string
	// DeviceID is the authenticator device's own id, set on activation.
	DeviceID string
	// Sub is the user the credential belongs to.
	Sub string
	// StatusID is the enrollment that created the credential.
	StatusID string
	// Method is the verification type: method.TOTP, or method.Email / method.SMS for a factor
	// whose codes are sent (SealedSecret then holds the address).
	Method string
	// Destination is the masked address of an EMAIL or SMS factor (a***@example.org).
	Destination string
	// SealedSecret is the TOTP secret sealed by a Sealer with the PHID as associated data.
	// The plaintext secret is never stored.
	SealedSecret []byte
	// Params are the code parameters the authenticator was told to use.
	Params totp.Params
	// Verified is true once a correct code activated the credential.
	Verified bool
	// FriendlyName is the user's name for the device.
	FriendlyName string
	// Platform is the companion's platform, when it reported one.
	Platform string
	// LastStep is the TOTP time step of the last accepted code; codes at or below it are
	// refused, so no code works twice.
	LastStep int64
	// LastStepFor is the status id of the authentication that LastStep's code completed. A
	// retry of that same authentication with the same code (its first answer lost) is
	// accepted again; any other use of the code is still a replay.
	LastStepFor string
	// CreatedAt is when the pending credential was created.
	CreatedAt time.Time
	// ExpiresAt is when a pending credential stops being activatable (its enrollment's
	// expires_at); zero means no limit. It does not apply once verified.
	ExpiresAt time.Time
	// VerifiedAt is when the credential was activated.
	VerifiedAt time.Time
	// LastUsedAt is when a code was last accepted after activation; zero if never.
	LastUsedAt time.Time
	// PendingID names the sealed pending credential a claim was made from (see Pending); empty
	// for a credential stored at initiation by an earlier version.
	PendingID string
	// PushKey is the companion's public key (EC P-256), when it sent one at enrollment: the
	// device can then log in on the bridge and answer push challenges. Not a secret.
	PushKey *PushKey
	// Passkey is a WEBAUTHN factor's credential record (its public key, not a secret).
	Passkey *Passkey
	// Version is the store's revision of this credential, for compare-and-set. Stores set it.
	Version uint64
}

// String describes c without its sealed secret, so that a credential that ends up in a log
// line or a test failure leaks nothing.
func (c Credential) String() string {
	return fmt.Sprintf("credential{ph_id=%s status_id=%s verified=%t version=%d}", c.PHID, c.StatusID, c.Verified, c.Version)
}

// Store keeps credentials. Implementations translate their errors into ErrNotFound,
// ErrConflict and ErrStale; every backend passes the conformance suite in
// internal/store/storetest.
type Store interface {
	// Create stores a new credential and returns it with Version set. ErrConflict if a
	// credential with the same PHID or the same StatusID exists.
	Create(ctx context.Context, c Credential) (Credential, error)
	// Get returns the credential with ph_id phid, or ErrNotFound.
	Get(ctx context.Context, phid string) (Credential, error)
	// GetByStatusID returns the credential created by enrollment statusID, or ErrNotFound.
	GetByStatusID(ctx context.Context, statusID string) (Credential, error)
	// ListBySub returns every credential of sub, pending or verified, in no particular order.
	ListBySub(ctx context.Context, sub string) ([]Credential, error)
	// ListCredentials returns up to limit credentials whose ph_id sorts after `after`, in
	// ph_id order (a resumable walk of every credential, for rekeying).
	ListCredentials(ctx context.Context, after string, limit int) ([]Credential, error)
	// Update replaces the credential if it is still at c.Version, together with msgs (published
	// afterwards by the backend's outbox relay), and returns it with the new Version.
	// ErrStale if it changed meanwhile, ErrNotFound if it is gone.
	Update(ctx context.Context, c Credential, msgs ...outbox.Message) (Credential, error)
	// Remove deletes the credential if it is still at c.Version, together with msgs. The
	// secret is destroyed at once (what remains until the relay purges it holds no secret);
	// readers see ErrNotFound at once. ErrStale and ErrNotFound as for Update.
	Remove(ctx context.Context, c Credential, msgs ...outbox.Message) error

	// GetLockout returns sub's lockout record, or ErrNotFound if the user has none.
	GetLockout(ctx context.Context, sub string) (Lockout, error)
	// PutLockout writes l together with msgs: a create when l.Version is 0 (ErrStale if one
	// exists by now), else a compare-and-set on l.Version (ErrStale if it changed).
	PutLockout(ctx context.Context, l Lockout, msgs ...outbox.Message) (Lockout, error)
	// GetRecoverySet returns sub's current recovery codes (as hashes), or ErrNotFound.
	GetRecoverySet(ctx context.Context, sub string) (RecoverySet, error)
	// PutRecoverySet writes r together with msgs, create or compare-and-set as PutLockout.
	PutRecoverySet(ctx context.Context, r RecoverySet, msgs ...outbox.Message) (RecoverySet, error)
	// GetProfile returns sub's profile (contact, language, default method, a pending disable
	// link), or ErrNotFound.
	GetProfile(ctx context.Context, sub string) (Profile, error)
	// PutProfile writes p: a create when p.Version is 0 (ErrStale if one exists by now), else a
	// compare-and-set on p.Version.
	PutProfile(ctx context.Context, p Profile) (Profile, error)
}

// VerifiedIndex is a Store that can answer, in one read whatever the user holds, that a user
// has a verified credential of a method: the KV store's user index notes each activation. A
// no means "not known" (a credential activated by an older version, a lost note): the caller
// reads the credentials. Readiness, the first step of every sign-in, asks it first.
type VerifiedIndex interface {
	// Verified returns the noted, verified credentials (ph_ids) of sub of method m.
	Verified(ctx context.Context, sub, m string) ([]string, error)
	// NoteVerified notes c, now verified; best effort.
	NoteVerified(ctx context.Context, c Credential) error
}

// KeyRing is a Sealer with several keys; Current says whether a value is sealed with the key new
// seals use, so Rekey knows what to re-seal.
type KeyRing interface {
	Sealer
	Current(sealed []byte) bool
}

// Sealer encrypts secrets at rest. Associated data binds a sealed secret to its credential, so
// a sealed value copied into another record does not open.
type Sealer interface {
	Seal(plaintext, associatedData []byte) ([]byte, error)
	Open(sealed, associatedData []byte) ([]byte, error)
}

// Clock tells the time; tests inject one to compute codes for a known instant.
type Clock interface {
	Now() time.Time
}

// ClockFunc adapts a function such as time.Now to Clock.
type ClockFunc func() time.Time

// Now calls f.
func (f ClockFunc) Now() time.Time { return f() }

// NewDevice is the authenticator device as the caller of Activate describes it; every field
// may be empty.
type NewDevice struct {
	DeviceID string
	Name     string
	Platform string
	// Key, when set, makes the device push-capable.
	Key *PushKey
}

// PushKey is an EC P-256 public key: its coordinates, base64url without padding (as in a JWK).
type PushKey struct{ X, Y string }

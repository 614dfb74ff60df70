package device

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/mfaflow/mfaflow/events/method"
	"github.com/mfaflow/mfaflow/pkg/factor"
)

// Passkeys (WEBAUTHN; DESIGN.md Part 3). The registry is the relying party: through its
// RelyingParty it makes the creation and request options and verifies what the browser answers;
// the domain keeps the WebAuthn session of a ceremony sealed in the value the status service
// stores with its enrollment or sign-in (as a TOTP pending credential or a sent code's hash: the
// registry writes nothing for a ceremony in progress), derives the user handles, stores the
// passkeys and counts refused assertions towards the lockout. A passkey is stored once its
// registration verifies; its public key is not a secret, so nothing of it is sealed.

// The refusals of passkeys are ErrMethodInactive (no relying party) and pkg/factor's
// ErrInvalidCredential and ErrClonedAuthenticator.

// DefaultPasskeyName names a passkey whose authenticator is not in the AAGUID table and that the
// user did not name.
const DefaultPasskeyName = "Passkey"

// Passkey is a registered WebAuthn credential: the credential record of the specification.
type Passkey struct {
	ID        []byte
	PublicKey []byte
	// UserHandle is the user handle the passkey was registered under (userHandle); every
	// later ceremony of the user uses it, so a rotation of the key it is derived from changes
	// no user's handle.
	UserHandle []byte
	// SignCount is the authenticator's signature counter at the last accepted use; 0 for
	// authenticators without one (most synced passkeys).
	SignCount         uint32
	AAGUID            []byte
	Transports        []string
	AttestationType   string
	AttestationFormat string
	Attachment        string
	// The flags at registration (UserVerified latches once an assertion verified the user;
	// BackupState follows the last assertion).
	UserPresent, UserVerified, BackupEligible, BackupState bool
}

// AAGUIDString is the authenticator model's AAGUID as a UUID, or "" when it reported none.
func (p Passkey) AAGUIDString() string {
	u, err := uuid.FromBytes(p.AAGUID)
	if err != nil || u == uuid.Nil {
		return ""
	}
	return u.String()
}

// The refusals a RelyingParty reports. ErrInvalidCredential and ErrClonedAuthenticator are
// pkg/factor's (as os.ErrNotExist is fs.ErrNotExist), so what the domain returns matches what
// transports map and Authenticate counts.
var (
	// ErrInvalidCredential: a registration or assertion does not verify (origin, RP ID hash,
	// a challenge of another ceremony, signature, attestation, not a passkey of the user).
	ErrInvalidCredential = factor.ErrInvalidCredential
	// ErrClonedAuthenticator: an assertion verified but the passkey's signature counter did
	// not advance. The error in the chain is a *ClonedError that names the passkey.
	ErrClonedAuthenticator = factor.ErrClonedAuthenticator
	// ErrCeremonySession: the session handed back is not one the RelyingParty made.
	ErrCeremonySession = errors.New("passkey ceremony session unreadable")
)

// ClonedError is ErrClonedAuthenticator for the passkey PasskeyID; errors.Is(err,
// ErrClonedAuthenticator) matches it.
type ClonedError struct {
	PasskeyID []byte
}

func (e *ClonedError) Error() string { return ErrClonedAuthenticator.Error() }

// Is makes every ClonedError match ErrClonedAuthenticator.
func (e *ClonedError) Is(target error) bool { return target == ErrClonedAuthenticator }

// PasskeyUser is a user as a relying party sees one: the user handle, the name authenticators
// show, and the user's passkeys.
type PasskeyUser struct {
	Handle   []byte
	Name     string
	Passkeys []Passkey
}

// PasskeyAssertion is what a verified assertion says: the passkey it used as it now is (signature
// count and flags of this assertion) and whether the authenticator verified the user.
type PasskeyAssertion struct {
	Passkey      Passkey
	UserVerified bool
}

// RelyingParty runs the WebAuthn ceremonies of the relying party configured around the domain
// (internal/passkeys implements it with go-webauthn). Options are the JSON browsers parse
// (PublicKeyCredentialCreationOptions, …RequestOptions); a session is the ceremony's state as a
// JSON value, opaque to the domain, which seals it and hands it back to finish the ceremony.
// A session the RelyingParty did not make is ErrCeremonySession.
type RelyingParty interface {
	// BeginRegistration starts registering a passkey of u; the options exclude u's passkeys
	// (an authenticator that has one says so instead of making a second).
	BeginRegistration(u PasskeyUser) (options, session []byte, err error)
	// FinishRegistration verifies response (the browser's credential.toJSON()) against
	// session and returns the new passkey, with the session's user handle. A response that
	// does not verify is ErrInvalidCredential.
	FinishRegistration(session, response []byte, u PasskeyUser) (Passkey, error)
	// BeginLogin starts an assertion with u's passkeys in allowCredentials.
	BeginLogin(u PasskeyUser) (options, session []byte, err error)
	// FinishLogin verifies assertion (the browser's credential.toJSON()) against session and
	// u's passkeys. An assertion that does not verify is ErrInvalidCredential; one whose
	// signature counter did not advance is a *ClonedError.
	FinishLogin(session, assertion []byte, u PasskeyUser) (PasskeyAssertion, error)
}

// WithWebAuthn turns on passkeys with the relying party rp. handleKey keys the user handles
// (a stable, opaque id per user that is not the sub).
func WithWebAuthn(rp RelyingParty, handleKey []byte) Option {
	return func(s *Service) {
		s.webauthn = rp
		s.handleKey = append([]byte(nil), handleKey...)
	}
}

// WebAuthnInactive says why passkeys are off (nil when they work).
func (s *Service) WebAuthnInactive() error {
	if s.webauthn == nil {
		return errors.New("passkeys are not configured")
	}
	return nil
}

func (s *Service) webauthnReady() error {
	if s.webauthn == nil {
		return fmt.Errorf("%s: %w", method.WebAuthn, ErrMethodInactive)
	}
	return nil
}

// userHandle is sub's WebAuthn user handle: stable (the same for every passkey of the user, so
// an authenticator replaces rather than duplicates an account) and not the sub itself (which
// authenticators would otherwise store and may show or sync).
func (s *Service) userHandle(sub string) []byte {
	m := hmac.New(sha256.New, s.handleKey)
	m.Write([]byte("mfaflow webauthn user handle v1\x00" + sub))
	return m.Sum(nil)
}

// passkeysOf returns sub's registered passkeys.
func (s *Service) passkeysOf(ctx context.Context, sub string) ([]Credential, error) {
	all, err := s.store.ListBySub(ctx, sub)
	if err != nil {
		return nil, err
	}
	var out []Credential
	for _, c := range all {
		if c.Verified && c.Sub == sub && c.Method == method.WebAuthn && c.Passkey != nil {
			out = append(out, c)
		}
	}
	return out, nil
}

// user is sub with the passkeys creds, under the handle their passkeys were registered under
// (or the one derived now, for a user without passkeys).
func (s *Service) user(sub string, creds []Credential) PasskeyUser {
	u := PasskeyUser{Handle: s.userHandle(sub), Name: sub}
	for _, c := range creds {
		if len(c.Passkey.UserHandle) > 0 {
			u.Handle = c.Passkey.UserHandle
		}
	}
	for _, c := range creds {
		u.Passkeys = append(u.Passkeys, *c.Passkey)
	}
	return u
}

// PasskeyCeremony is a started registration or assertion: the options the browser gets
// (PublicKeyCredentialCreationOptions or …RequestOptions in the JSON form browsers parse) and the
// sealed session the status service keeps.
type PasskeyCeremony struct {
	Options []byte
	Sealed  []byte
}

// CreatePendingWebAuthn starts the registration of a passkey for sub: the creation options
// exclude the user's passkeys (an authenticator that has one says so instead of making a second)
// and the registration session is sealed as the enrollment's pending credential, bound to
// statusID and sub and expiring with the enrollment. name is the passkey's friendly name, or
// empty.
//
// The account name the authenticator shows and stores with the passkey ("Save a passkey for
// …", the account picker at sign-in) is the user's contact address (an EMAIL factor, or the
// verified email of their token) where there is one: a sub is often an opaque id that a user
// would not recognise. Without one it is the sub.
func (s *Service) CreatePendingWebAuthn(ctx context.Context, statusID, sub string, expiresAt time.Time, name string) (PasskeyCeremony, error) {
	if !validID(statusID) {
		return PasskeyCeremony{}, invalid("status_id is missing or malformed")
	}
	if sub == "" {
		return PasskeyCeremony{}, invalid("sub is missing")
	}
	if err := s.webauthnReady(); err != nil {
		return PasskeyCeremony{}, err
	}
	if strings.TrimSpace(name) != "" {
		var err error
		if name, err = validName(name); err != nil {
			return PasskeyCeremony{}, err
		}
	}
	creds, err := s.passkeysOf(ctx, sub)
	if err != nil {
		return PasskeyCeremony{}, fmt.Errorf("create pending passkey: %w", err)
	}
	u := s.user(sub, creds)
	if addr, _, err := s.Contact(ctx, sub); err == nil && addr != "" {
		u.Name = addr // best effort: without it, the sub
	}
	options, sess, err := s.webauthn.BeginRegistration(u)
	if err != nil {
		return PasskeyCeremony{}, fmt.Errorf("create pending passkey: %w", err)
	}
	p := Pending{Method: method.WebAuthn, Session: sess, FriendlyName: name, CreatedAt: s.clock.Now().UTC(), ExpiresAt: expiresAt.UTC()}
	sealed, err := p.seal(s.sealer, statusID, sub)
	if err != nil {
		return PasskeyCeremony{}, fmt.Errorf("create pending passkey: %w", err)
	}
	return PasskeyCeremony{Options: options, Sealed: sealed}, nil
}

// VerifyPendingWebAuthn verifies the registration response (the browser's
// credential.toJSON()) against the enrollment's sealed registration session and stores the
// passkey as the enrollment's claimed credential, as VerifyPending does for a code: Activate
// registers it once the enrollment is ENROLLED. Any failure to verify (origin, RP ID hash, a
// challenge of another ceremony, signature, attestation) is factor.ErrInvalidCredential and
// stores nothing. A passkey the user has registered already is refused the same way. The same
// response sent again for this enrollment finds its claim and answers it again (a retry after
// a lost answer); the status service refuses it once the enrollment has ended.
func (s *Service) VerifyPendingWebAuthn(ctx context.Context, statusID, sub string, response, sealed []byte) (Claim, error) {
	if !validID(statusID) || sub == "" {
		return Claim{}, ErrNotFound
	}
	if err := s.webauthnReady(); err != nil {
		return Claim{}, err
	}
	p, err := openPending(s.sealer, sealed, statusID, sub)
	if err != nil {
		return Claim{}, fmt.Errorf("verify %s: %w", statusID, err)
	}
	if p.Method != method.WebAuthn {
		return Claim{}, invalid("this enrollment is not a passkey's")
	}
	now := s.clock.Now().UTC()
	if !p.ExpiresAt.IsZero() && !now.Before(p.ExpiresAt) {
		return Claim{}, fmt.Errorf("verify %s: %w", statusID, ErrExpired)
	}
	creds, err := s.passkeysOf(ctx, sub)
	if err != nil {
		return Claim{}, fmt.Errorf("verify %s: %w", statusID, err)
	}
	pk, err := s.webauthn.FinishRegistration(p.Session, response, s.user(sub, creds))
	if errors.Is(err, ErrCeremonySession) {
		return Claim{}, fmt.Errorf("verify %s: session: %w", statusID, ErrNotFound)
	} else if err != nil {
		return Claim{}, fmt.Errorf("verify %s: %w", statusID, err)
	}
	for _, c := range creds {
		if bytes.Equal(c.Passkey.ID, pk.ID) {
			return Claim{}, fmt.Errorf("verify %s: passkey registered already: %w", statusID, factor.ErrInvalidCredential)
		}
	}
	deviceID, err := randomDeviceID()
	if err != nil {
		return Claim{}, fmt.Errorf("verify %s: %w", statusID, err)
	}
	fromID := pendingID(sealed)
	c := Credential{
		PHID: PHIDFor(statusID), DeviceID: deviceID, Sub: sub, StatusID: statusID, Method: method.WebAuthn,
		FriendlyName: p.FriendlyName, Passkey: &pk, CreatedAt: p.CreatedAt, ExpiresAt: p.ExpiresAt, PendingID: fromID,
		// LastStep 1 marks the credential as claimed (Activate requires it), as for sent codes.
		LastStep: 1,
	}
	for range maxAttempts {
		written, err := s.store.Create(ctx, c)
		if errors.Is(err, ErrConflict) {
			old, gerr := s.store.GetByStatusID(ctx, statusID)
			if errors.Is(gerr, ErrNotFound) {
				continue // discarded meanwhile: create again
			}
			if gerr != nil {
				return Claim{}, fmt.Errorf("verify %s: %w", statusID, gerr)
			}
			if old.Sub != sub || old.Verified || old.Passkey == nil || !bytes.Equal(old.Passkey.ID, pk.ID) || old.PendingID != fromID {
				return Claim{}, fmt.Errorf("verify %s: the enrollment's challenge was used already: %w", statusID, factor.ErrInvalidCredential)
			}
			written = old
		} else if err != nil {
			return Claim{}, fmt.Errorf("verify %s: %w", statusID, err)
		}
		if err := s.voidIfReset(ctx, written, p.CreatedAt); err != nil {
			return Claim{}, fmt.Errorf("verify %s: %w", statusID, err)
		}
		return Claim{PHID: written.PHID, DeviceID: written.DeviceID}, nil
	}
	return Claim{}, fmt.Errorf("verify %s: %w", statusID, ErrStale)
}

// passkeyName is the friendly name a passkey gets when the user gave none: its authenticator's
// name where its AAGUID is in the table, else DefaultPasskeyName.
func passkeyName(p Passkey) string {
	if n := aaguidNames()[p.AAGUIDString()]; n != "" {
		return n
	}
	return DefaultPasskeyName
}

// aaguids.json maps the AAGUIDs of well-known passkey providers to their names. Source:
// https://github.com/passkeydeveloper/passkey-authenticator-aaguids, aaguid.json (the
// community-curated list, names only; icons dropped) at commit 47b6f84e (2026-08-07).
//
//go:embed aaguids.json
var aaguidsJSON []byte

var aaguidNames = sync.OnceValue(func() map[string]string {
	m := map[string]string{}
	if err := json.Unmarshal(aaguidsJSON, &m); err != nil {
		panic("device: aaguids.json: " + err.Error())
	}
	return m
})

// passkeySession is the sealed value a passkey sign-in keeps: the WebAuthn session (challenge,
// user handle, the passkeys allowed) and when it stops working. It opens only for its sign-in
// and user.
type passkeySession struct {
	Session   json.RawMessage `json:"s"`
	ExpiresAt int64           `json:"x"` // unix milliseconds
}

func passkeyAAD(statusID, sub string) []byte {
	return []byte("mfaflow/webauthn-assertion/v1\x00" + statusID + "\x00" + sub)
}

// passkeySessionTTL bounds a sign-in's assertion: the status service's sign-in expires earlier
// (MFA_VERIFICATION_TTL, at most an hour).
const passkeySessionTTL = time.Hour

// ChallengeWebAuthn starts a passkey sign-in of sub: request options with the user's passkeys in
// allowCredentials, and the session sealed for sign-in statusID. A locked user gets a
// *factor.LockedError; a user without passkeys factor.ErrNoFactor.
func (s *Service) ChallengeWebAuthn(ctx context.Context, sub, statusID string) (PasskeyCeremony, error) {
	if sub == "" || !validID(statusID) {
		return PasskeyCeremony{}, invalid("sub and status_id are required")
	}
	if err := s.webauthnReady(); err != nil {
		return PasskeyCeremony{}, err
	}
	if err := s.checkLock(ctx, sub); err != nil {
		return PasskeyCeremony{}, err
	}
	creds, err := s.passkeysOf(ctx, sub)
	if err != nil {
		return PasskeyCeremony{}, fmt.Errorf("challenge: %w", err)
	}
	if len(creds) == 0 {
		return PasskeyCeremony{}, fmt.Errorf("challenge: %w", factor.ErrNoFactor)
	}
	options, sess, err := s.webauthn.BeginLogin(s.user(sub, creds))
	if err != nil {
		return PasskeyCeremony{}, fmt.Errorf("challenge: %w", err)
	}
	plain, err := json.Marshal(passkeySession{Session: sess, ExpiresAt: s.clock.Now().Add(passkeySessionTTL).UnixMilli()})
	if err != nil {
		return PasskeyCeremony{}, fmt.Errorf("challenge: %w", err)
	}
	sealed, err := s.sealer.Seal(plain, passkeyAAD(statusID, sub))
	if err != nil {
		return PasskeyCeremony{}, fmt.Errorf("challenge: seal: %w", err)
	}
	return PasskeyCeremony{Options: options, Sealed: sealed}, nil
}

func readyWebAuthn(s *Service, ctx context.Context, sub string) error {
	if err := s.webauthnReady(); err != nil {
		return err
	}
	creds, err := s.passkeysOf(ctx, sub)
	if err != nil {
		return fmt.Errorf("ready: %w", err)
	}
	if len(creds) == 0 {
		return fmt.Errorf("ready: %w", factor.ErrNoFactor)
	}
	return nil
}

// checkWebAuthn verifies a sign-in's assertion (in.code: the browser's credential.toJSON())
// against its sealed session. The sign-in makes the challenge single use (it is AUTHENTICATED
// once). Success records the passkey's new signature count, flags and last use with
// compare-and-set, and says whether the authenticator verified the user. An assertion that does
// not verify is factor.ErrInvalidCredential (Authenticate counts it towards the lockout); a
// signature counter that went backwards is factor.ErrClonedAuthenticator and changes nothing.
func checkWebAuthn(s *Service, ctx context.Context, in checkInput) (Authenticated, error) {
	if err := s.webauthnReady(); err != nil {
		return Authenticated{}, err
	}
	if len(in.challenge) == 0 || !validID(in.statusID) {
		return Authenticated{}, invalid("this sign-in has no passkey challenge")
	}
	plain, err := s.sealer.Open(in.challenge, passkeyAAD(in.statusID, in.sub))
	if err != nil {
		return Authenticated{}, invalid("this sign-in's challenge does not open here")
	}
	var ps passkeySession
	if err := json.Unmarshal(plain, &ps); err != nil {
		return Authenticated{}, invalid("this sign-in's challenge does not open here")
	}
	now := s.clock.Now().UTC()
	if !now.Before(time.UnixMilli(ps.ExpiresAt)) {
		return Authenticated{}, fmt.Errorf("authenticate: challenge expired: %w", factor.ErrInvalidCredential)
	}
	for range maxAttempts {
		creds, err := s.passkeysOf(ctx, in.sub)
		if err != nil {
			return Authenticated{}, fmt.Errorf("authenticate: %w", err)
		}
		a, err := s.webauthn.FinishLogin(ps.Session, []byte(in.code), s.user(in.sub, creds))
		var cloned *ClonedError
		switch {
		case errors.As(err, &cloned):
			phid := "unknown passkey"
			if used := passkeyByID(creds, cloned.PasskeyID); used != nil {
				phid = used.PHID
			}
			return Authenticated{}, fmt.Errorf("authenticate: %s: %w", phid, factor.ErrClonedAuthenticator)
		case errors.Is(err, ErrCeremonySession):
			return Authenticated{}, invalid("this sign-in's challenge does not open here")
		case err != nil:
			return Authenticated{}, fmt.Errorf("authenticate: %w", err)
		}
		used := passkeyByID(creds, a.Passkey.ID)
		if used == nil {
			return Authenticated{}, fmt.Errorf("authenticate: not a passkey of the user: %w", factor.ErrInvalidCredential)
		}
		c := *used
		pk := a.Passkey
		// The handle a passkey was registered under never changes.
		pk.UserHandle = used.Passkey.UserHandle
		c.Passkey = &pk
		c.LastUsedAt = now
		c.LastStepFor = in.statusID
		if _, err := s.store.Update(ctx, c); errors.Is(err, ErrStale) {
			continue // a concurrent sign-in moved the counter: check against it again
		} else if err != nil {
			return Authenticated{}, fmt.Errorf("authenticate: %w", err)
		}
		return Authenticated{Method: method.WebAuthn, PHID: c.PHID, UserVerified: a.UserVerified}, nil
	}
	return Authenticated{}, fmt.Errorf("authenticate: %w", ErrStale)
}

// passkeyByID is the credential among creds whose passkey is id, or nil.
func passkeyByID(creds []Credential, id []byte) *Credential {
	for i, c := range creds {
		if bytes.Equal(c.Passkey.ID, id) {
			return &creds[i]
		}
	}
	return nil
}

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

	"github.com/go-webauthn/webauthn/protocol"
	"github.com/go-webauthn/webauthn/webauthn"
	"github.com/google/uuid"
	"github.com/mfaflow/mfaflow/events/method"
	"github.com/mfaflow/mfaflow/pkg/factor"
)

// Passkeys (WEBAUTHN; DESIGN.md Part 3). The registry is the relying party: it makes the
// creation and request options, keeps the WebAuthn session of a ceremony sealed in the value the
// status service stores with its enrollment or sign-in (as a TOTP pending credential or a sent
// code's hash: the registry writes nothing for a ceremony in progress), and verifies what the
// browser answers with go-webauthn. A passkey is stored once its registration verifies; its
// public key is not a secret, so nothing of it is sealed.

// The refusals of passkeys are ErrMethodInactive (the settings cannot work) and pkg/factor's
// ErrInvalidCredential and ErrClonedAuthenticator.

// DefaultPasskeyName names a passkey whose authenticator is not in the AAGUID table and that the
// user did not name.
const DefaultPasskeyName = "Passkey"

// WebAuthnPolicy is the relying party (pkg/config.WebAuthn): RPID, RPName, Origins and
// UserVerification (preferred or required).
type WebAuthnPolicy struct {
	RPID, RPName     string
	Origins          []string
	UserVerification string
}

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

// WithWebAuthn turns on passkeys for the relying party p. handleKey keys the user handles
// (a stable, opaque id per user that is not the sub). Settings go-webauthn refuses leave
// passkeys inactive; WebAuthnInactive says why.
func WithWebAuthn(p WebAuthnPolicy, handleKey []byte) Option {
	return func(s *Service) {
		uv := protocol.VerificationPreferred
		if p.UserVerification == string(protocol.VerificationRequired) {
			uv = protocol.VerificationRequired
		}
		wa, err := webauthn.New(&webauthn.Config{
			RPID: p.RPID, RPDisplayName: p.RPName, RPOrigins: p.Origins,
			AttestationPreference: protocol.PreferNoAttestation,
			AuthenticatorSelection: protocol.AuthenticatorSelection{
				ResidentKey: protocol.ResidentKeyRequirementPreferred, UserVerification: uv,
			},
		})
		if err != nil {
			s.webauthnOff = fmt.Errorf("the WebAuthn settings do not work: %w", err)
			return
		}
		s.webauthn, s.webauthnOff = wa, nil
		s.handleKey = append([]byte(nil), handleKey...)
	}
}

// WebAuthnInactive says why passkeys are off (nil when they work).
func (s *Service) WebAuthnInactive() error {
	if s.webauthn == nil && s.webauthnOff == nil {
		return errors.New("passkeys are not configured")
	}
	return s.webauthnOff
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

// passkeyUser is a user as go-webauthn sees one.
type passkeyUser struct {
	handle []byte
	sub    string
	creds  []webauthn.Credential
}

func (u passkeyUser) WebAuthnID() []byte                         { return u.handle }
func (u passkeyUser) WebAuthnName() string                       { return u.sub }
func (u passkeyUser) WebAuthnDisplayName() string                { return u.sub }
func (u passkeyUser) WebAuthnCredentials() []webauthn.Credential { return u.creds }

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

func (s *Service) user(sub string, creds []Credential) passkeyUser {
	u := passkeyUser{handle: s.userHandle(sub), sub: sub}
	for _, c := range creds {
		if len(c.Passkey.UserHandle) > 0 {
			u.handle = c.Passkey.UserHandle
		}
	}
	for _, c := range creds {
		u.creds = append(u.creds, toWebAuthn(*c.Passkey))
	}
	return u
}

func toWebAuthn(p Passkey) webauthn.Credential {
	var f protocol.AuthenticatorFlags
	for _, b := range []struct {
		on   bool
		flag protocol.AuthenticatorFlags
	}{{p.UserPresent, protocol.FlagUserPresent}, {p.UserVerified, protocol.FlagUserVerified},
		{p.BackupEligible, protocol.FlagBackupEligible}, {p.BackupState, protocol.FlagBackupState}} {
		if b.on {
			f |= b.flag
		}
	}
	c := webauthn.Credential{
		ID: p.ID, PublicKey: p.PublicKey, AttestationType: p.AttestationType, AttestationFormat: p.AttestationFormat,
		Flags:         webauthn.NewCredentialFlags(f),
		Authenticator: webauthn.Authenticator{AAGUID: p.AAGUID, SignCount: p.SignCount, Attachment: protocol.AuthenticatorAttachment(p.Attachment)},
	}
	for _, t := range p.Transports {
		c.Transport = append(c.Transport, protocol.AuthenticatorTransport(t))
	}
	return c
}

func fromWebAuthn(c webauthn.Credential) Passkey {
	p := Passkey{
		ID: c.ID, PublicKey: c.PublicKey, SignCount: c.Authenticator.SignCount, AAGUID: c.Authenticator.AAGUID,
		AttestationType: c.AttestationType, AttestationFormat: c.AttestationFormat, Attachment: string(c.Authenticator.Attachment),
		UserPresent: c.Flags.UserPresent, UserVerified: c.Flags.UserVerified, BackupEligible: c.Flags.BackupEligible, BackupState: c.Flags.BackupState,
	}
	for _, t := range c.Transport {
		p.Transports = append(p.Transports, string(t))
	}
	return p
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
	creation, session, err := s.webauthn.BeginRegistration(u, webauthn.WithExclusions(webauthn.Credentials(u.creds).CredentialDescriptors()))
	if err != nil {
		return PasskeyCeremony{}, fmt.Errorf("create pending passkey: %w", err)
	}
	options, err := json.Marshal(creation.Response)
	if err != nil {
		return PasskeyCeremony{}, fmt.Errorf("create pending passkey: %w", err)
	}
	sess, err := json.Marshal(session)
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
	var session webauthn.SessionData
	if err := json.Unmarshal(p.Session, &session); err != nil {
		return Claim{}, fmt.Errorf("verify %s: session: %w", statusID, ErrNotFound)
	}
	parsed, err := protocol.ParseCredentialCreationResponseBytes(response)
	if err != nil {
		return Claim{}, fmt.Errorf("verify %s: parse registration: %w", statusID, factor.ErrInvalidCredential)
	}
	creds, err := s.passkeysOf(ctx, sub)
	if err != nil {
		return Claim{}, fmt.Errorf("verify %s: %w", statusID, err)
	}
	u := s.user(sub, creds)
	wc, err := s.webauthn.CreateCredential(u, session, parsed)
	if err != nil {
		return Claim{}, fmt.Errorf("verify %s: %v: %w", statusID, err, factor.ErrInvalidCredential)
	}
	for _, c := range creds {
		if bytes.Equal(c.Passkey.ID, wc.ID) {
			return Claim{}, fmt.Errorf("verify %s: passkey registered already: %w", statusID, factor.ErrInvalidCredential)
		}
	}
	pk := fromWebAuthn(*wc)
	pk.UserHandle = session.UserID
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
	assertion, session, err := s.webauthn.BeginLogin(s.user(sub, creds))
	if err != nil {
		return PasskeyCeremony{}, fmt.Errorf("challenge: %w", err)
	}
	options, err := json.Marshal(assertion.Response)
	if err != nil {
		return PasskeyCeremony{}, fmt.Errorf("challenge: %w", err)
	}
	sess, err := json.Marshal(session)
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
	var session webauthn.SessionData
	if err := json.Unmarshal(plain, &ps); err != nil || json.Unmarshal(ps.Session, &session) != nil {
		return Authenticated{}, invalid("this sign-in's challenge does not open here")
	}
	now := s.clock.Now().UTC()
	if !now.Before(time.UnixMilli(ps.ExpiresAt)) {
		return Authenticated{}, fmt.Errorf("authenticate: challenge expired: %w", factor.ErrInvalidCredential)
	}
	parsed, err := protocol.ParseCredentialRequestResponseBytes([]byte(in.code))
	if err != nil {
		return Authenticated{}, fmt.Errorf("authenticate: parse assertion: %w", factor.ErrInvalidCredential)
	}
	for range maxAttempts {
		creds, err := s.passkeysOf(ctx, in.sub)
		if err != nil {
			return Authenticated{}, fmt.Errorf("authenticate: %w", err)
		}
		var used *Credential
		for i, c := range creds {
			if bytes.Equal(c.Passkey.ID, parsed.RawID) {
				used = &creds[i]
			}
		}
		if used == nil {
			return Authenticated{}, fmt.Errorf("authenticate: not a passkey of the user: %w", factor.ErrInvalidCredential)
		}
		wc, err := s.webauthn.ValidateLogin(s.user(in.sub, creds), session, parsed)
		if err != nil {
			return Authenticated{}, fmt.Errorf("authenticate: %v: %w", err, factor.ErrInvalidCredential)
		}
		if wc.Authenticator.CloneWarning {
			return Authenticated{}, fmt.Errorf("authenticate: %s: %w", used.PHID, factor.ErrClonedAuthenticator)
		}
		c := *used
		pk := fromWebAuthn(*wc)
		pk.UserHandle = used.Passkey.UserHandle
		pk.BackupState = parsed.Response.AuthenticatorData.Flags.HasBackupState()
		c.Passkey = &pk
		c.LastUsedAt = now
		c.LastStepFor = in.statusID
		if _, err := s.store.Update(ctx, c); errors.Is(err, ErrStale) {
			continue // a concurrent sign-in moved the counter: check against it again
		} else if err != nil {
			return Authenticated{}, fmt.Errorf("authenticate: %w", err)
		}
		return Authenticated{Method: method.WebAuthn, PHID: c.PHID, UserVerified: parsed.Response.AuthenticatorData.Flags.HasUserVerified()}, nil
	}
	return Authenticated{}, fmt.Errorf("authenticate: %w", ErrStale)
}

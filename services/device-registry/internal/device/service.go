package device

import (
	"cmp"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/google/uuid"
	"github.com/mfaflow/mfaflow/events"
	"github.com/mfaflow/mfaflow/events/method"
	"github.com/mfaflow/mfaflow/pkg/factor"
	"github.com/mfaflow/mfaflow/pkg/ids"
	"github.com/mfaflow/mfaflow/pkg/outbox"
	"github.com/mfaflow/mfaflow/pkg/totp"
)

// codeSkew is how many time steps either side of now a code may come from: one absorbs clock
// drift and the seconds a user needs to type, without widening the guessing window much.
const codeSkew = 1

// maxAttempts bounds the read-check-write loop of a compare-and-set. A lost race is normal (two
// requests about one credential or user at once; on MongoDB also the relay clearing a
// published outbox, see pkg/mongodoc; the KV relay writes nothing back, see pkg/kvdoc), a lost
// race eight times in a row is not.
const maxAttempts = 8

// eventNamespace derives deterministic CloudEvent ids: the same fact always gets the same id,
// so a retried write or publish is stored on the stream once (Nats-Msg-Id dedupe).
var eventNamespace = uuid.NewSHA1(uuid.NameSpaceURL, []byte("https://mfaflow.dev/device-registry/events"))

// Service holds the registry's rules. It is safe for concurrent use; concurrent writers are
// serialised by the Store's compare-and-set, not by locks, so any number of replicas may run.
type Service struct {
	store       Store
	sealer      Sealer
	clock       Clock
	lockout     LockoutPolicy
	recoveryKey []byte
	// olderRecoveryKeys check recovery sets hashed before a key rotation.
	olderRecoveryKeys [][]byte
	// stepUp redeems the proofs factor changes need (nil: step-up off).
	stepUp StepUp
	// redeemer spends a proof offered in place of another confirmation (WithRedeemer).
	redeemer StepUp
	// Codes by email and SMS (oob.go; off without WithOOB).
	oob       OOBPolicy
	codeKey   []byte
	deliverer Deliverer
	channels  Channels
	counter   Counter
	// Passkeys (webauthn.go; off without WithWebAuthn).
	webauthn  RelyingParty
	handleKey []byte
	// hints are the devices readiness found, for the code check that follows (hint.go).
	hints deviceHints
}

// Option configures a Service.
type Option func(*Service)

// WithLockout sets when wrong sign-in codes lock a user; the default is DefaultLockoutThreshold
// codes, then 1 minute doubling to at most 15.
func WithLockout(p LockoutPolicy) Option { return func(s *Service) { s.lockout = p } }

// WithRecoveryKey sets the key of the keyed hash (HMAC-SHA256) that recovery codes are stored
// as. Without one, recovery codes cannot be generated or used.
func WithRecoveryKey(key []byte) Option {
	return func(s *Service) { s.recoveryKey = append([]byte(nil), key...) }
}

// WithOlderRecoveryKeys adds the recovery keys of retired-but-kept secret keys, so recovery
// codes generated before a rotation keep working until their key leaves the ring.
func WithOlderRecoveryKeys(keys ...[]byte) Option {
	return func(s *Service) { s.olderRecoveryKeys = keys }
}

// NewService returns a Service. A nil clock means the system clock.
func NewService(store Store, sealer Sealer, clock Clock, opts ...Option) *Service {
	if clock == nil {
		clock = ClockFunc(time.Now)
	}
	s := &Service{store: store, sealer: sealer, clock: clock}
	for _, o := range opts {
		o(s)
	}
	s.lockout = s.lockout.withDefaults()
	return s
}

// CreatePending makes the credential of a new enrollment and returns its secret, the only time
// the secret leaves the registry, together with the pending credential sealed for the caller to
// keep (see Pending). Nothing is stored: the status service keeps the sealed pending credential
// in the enrollment's document and hands it back with the code (VerifyPending), so an initiation
// costs the registry no write, and an enrollment nobody finishes leaves nothing here to clean up.
// A repeated call (a retried initiation) makes a new secret: the enrollment keeps whichever
// sealed credential it was given last.
func (s *Service) CreatePending(ctx context.Context, statusID, sub string, expiresAt time.Time) (string, totp.Params, []byte, error) {
	if !validID(statusID) {
		return "", totp.Params{}, nil, invalid("status_id is missing or malformed")
	}
	if sub == "" {
		return "", totp.Params{}, nil, invalid("sub is missing")
	}
	secret, err := totp.NewSecret()
	if err != nil {
		return "", totp.Params{}, nil, fmt.Errorf("create pending credential: %w", err)
	}
	p := Pending{Secret: secret, Params: totp.Default, CreatedAt: s.clock.Now().UTC(), ExpiresAt: expiresAt.UTC()}
	sealed, err := p.seal(s.sealer, statusID, sub)
	if err != nil {
		return "", totp.Params{}, nil, fmt.Errorf("create pending credential: %w", err)
	}
	return secret, p.Params, sealed, nil
}

// phidNamespace derives the ph_id of an enrollment's credential from its status id.
var phidNamespace = uuid.MustParse("5b1f0c9e-3d7a-4e62-9a1d-7c2e8f4b6a13")

// PHIDFor is the ph_id of the credential that CreatePending makes for enrollment statusID: a
// name-based UUID of the status id. One enrollment has one credential, so the ph_id is as unique
// as the status id, and a store can find the credential of an enrollment without an index entry
// of its own (and refuse a second create by the document's key alone). A ph_id is a handle, not
// a capability: every device route checks the owner.
func PHIDFor(statusID string) string {
	return uuid.NewSHA1(phidNamespace, []byte(statusID)).String()
}

// Claim names the device an enrollment will register if its code is accepted: the credential's
// ph_id and the device id the registry will give it.
type Claim struct {
	PHID     string
	DeviceID string
}

// VerifyPending proves possession of the pending credential of enrollment statusID with code,
// without registering anything: the status service commits ENROLLED first and only then asks
// for Activate, so a cancel or an expiry that wins the race leaves no device behind (the
// claimed credential is discarded when the enrollment's ending event arrives, or at once by
// the status service when its commit lost).
//
// sealed is the pending credential CreatePending made (see Pending); the first correct code
// stores it as a claimed credential. Without it (an enrollment begun before pending
// credentials were sealed) the stored pending credential is used. A pending credential made
// before the user's factors were last reset is void (ErrNotFound).
//
// The accepted time step and the claiming device are recorded on the claimed credential: the
// code can never verify a sign-in later, and a second device cannot claim the same credential
// (ErrConflict). The same device (or the frontend again) may verify the same code once more,
// so a retry after a lost answer works. A verified credential is ErrConflict: its enrollment
// is over. Someone else's credential is ErrNotFound.
func (s *Service) VerifyPending(ctx context.Context, statusID, sub, code string, dev NewDevice, sealed []byte) (Claim, error) {
	if !validID(statusID) || sub == "" {
		return Claim{}, ErrNotFound
	}
	deviceID := strings.TrimSpace(dev.DeviceID)
	if deviceID != "" && !validDeviceID(deviceID) {
		return Claim{}, invalid("device_id must be 1 to 128 printable characters")
	}
	if dev.Key != nil {
		if err := validPushKey(*dev.Key); err != nil {
			return Claim{}, err
		}
	}
	code = normaliseCode(code)
	var (
		pending *Pending
		fromID  string
	)
	if len(sealed) > 0 {
		p, err := openPending(s.sealer, sealed, statusID, sub)
		if err != nil {
			return Claim{}, fmt.Errorf("verify %s: %w", statusID, err)
		}
		if p.Method == method.WebAuthn {
			return Claim{}, invalid("a passkey enrollment is completed with its registration response (credential), not a code")
		}
		pending, fromID = &p, pendingID(sealed)
	}
	// With a sealed credential the usual case is that nothing is stored yet: try the create
	// first and read only when it conflicts.
	create := pending != nil
	for range maxAttempts {
		var c Credential
		now := s.clock.Now().UTC()
		if create {
			if !pending.ExpiresAt.IsZero() && !now.Before(pending.ExpiresAt) {
				return Claim{}, fmt.Errorf("verify %s: %w", statusID, ErrExpired)
			}
			var err error
			if c, err = pending.credential(s.sealer, statusID, sub, fromID); err != nil {
				return Claim{}, fmt.Errorf("verify %s: %w", statusID, err)
			}
		} else {
			var err error
			c, err = s.store.GetByStatusID(ctx, statusID)
			if errors.Is(err, ErrNotFound) && pending != nil {
				create = true
				continue
			}
			if err != nil {
				return Claim{}, fmt.Errorf("verify %s: %w", statusID, err)
			}
			if c.Sub != sub {
				return Claim{}, fmt.Errorf("verify %s: %w", statusID, ErrNotFound)
			}
			if c.Verified {
				return Claim{}, fmt.Errorf("verify %s: already activated: %w", statusID, ErrConflict)
			}
			if pending != nil && c.PendingID != fromID {
				// Claimed from a value the enrollment has replaced since (a retried initiation
				// gave it a new secret, and the claim's commit lost): the enrollment's current
				// credential takes its place.
				fresh, err := pending.credential(s.sealer, statusID, sub, fromID)
				if err != nil {
					return Claim{}, fmt.Errorf("verify %s: %w", statusID, err)
				}
				fresh.Version = c.Version
				c = fresh
			}
			if c.DeviceID != "" && deviceID != "" && deviceID != c.DeviceID {
				return Claim{}, fmt.Errorf("verify %s: claimed by another device: %w", statusID, ErrConflict)
			}
			if !c.ExpiresAt.IsZero() && !now.Before(c.ExpiresAt) {
				return Claim{}, fmt.Errorf("verify %s: %w", statusID, ErrExpired)
			}
		}
		// A pending credential accepts its own last step again (a retry of the same code);
		// once activated, every later check refuses it.
		var (
			step int64
			err  error
		)
		if pending != nil && pending.sent() {
			// A sent code (EMAIL, SMS): right if it is the code last sent for this enrollment.
			// LastStep 1 marks the credential as claimed by a right code, as a time step does.
			err = s.checkPendingCode(*pending, statusID, code, now)
			step = 1
		} else {
			step, err = s.check(c, code, now, max(c.LastStep-1, 0))
		}
		if err != nil {
			return Claim{}, fmt.Errorf("verify %s: %w", statusID, err)
		}
		if c.DeviceID == "" {
			c.DeviceID = deviceID
			if c.DeviceID == "" {
				if c.DeviceID, err = randomDeviceID(); err != nil {
					return Claim{}, fmt.Errorf("verify %s: %w", statusID, err)
				}
			}
		}
		if dev.Key != nil {
			c.PushKey = dev.Key
		}
		if n := sanitise(dev.Name); n != "" {
			c.FriendlyName = n
		}
		if p := sanitise(dev.Platform); p != "" {
			c.Platform = p
		}
		c.LastStep = max(c.LastStep, step)
		var written Credential
		if create {
			written, err = s.store.Create(ctx, c)
			if errors.Is(err, ErrConflict) {
				create = false // a concurrent verify stored it first: read it
				continue
			}
		} else {
			written, err = s.store.Update(ctx, c)
			if errors.Is(err, ErrStale) || errors.Is(err, ErrNotFound) {
				continue // a concurrent verify or a discard: look again
			}
		}
		if err != nil {
			return Claim{}, fmt.Errorf("verify %s: %w", statusID, err)
		}
		if pending != nil {
			if err := s.voidIfReset(ctx, written, pending.CreatedAt); err != nil {
				return Claim{}, fmt.Errorf("verify %s: %w", statusID, err)
			}
		}
		return Claim{PHID: written.PHID, DeviceID: written.DeviceID}, nil
	}
	return Claim{}, fmt.Errorf("verify %s: %w", statusID, ErrStale)
}

// voidIfReset discards the claim c, just stored, if the user's factors were reset after its
// pending credential was made (createdAt), and then answers ErrNotFound. Both times are
// milliseconds of registry replicas' clocks, which must agree as closely as TOTP already needs;
// one made in the very millisecond of the reset counts as before it. It reads the reset
// time after the claim is stored, and ResetFactors writes the time before it lists the
// user's credentials: so either this read sees the reset or the reset's listing sees the
// claim, and no enrollment begun before a reset survives it.
func (s *Service) voidIfReset(ctx context.Context, c Credential, createdAt time.Time) error {
	l, err := s.store.GetLockout(ctx, c.Sub)
	if errors.Is(err, ErrNotFound) || err == nil && createdAt.After(l.ResetAt) {
		return nil
	}
	if err != nil {
		return err
	}
	if err := s.DiscardPending(ctx, c.StatusID); err != nil {
		return err
	}
	return fmt.Errorf("begun before the factors were reset: %w", ErrNotFound)
}

// Activate turns the verified-but-pending credential of enrollment statusID into a registered
// device of sub and emits mfa.device.registered in the same write. It is called once the
// enrollment is ENROLLED (by the status service, and again by the consumer of enrolled events
// should that call have been lost), so it checks no code and no expiry: the enrollment's
// outcome is already decided. claim must be what VerifyPending returned, or ErrConflict. A
// repeated activation returns the device unchanged.
func (s *Service) Activate(ctx context.Context, statusID, sub string, claim Claim) (Credential, error) {
	if !validID(statusID) || sub == "" {
		return Credential{}, ErrNotFound
	}
	for range maxAttempts {
		c, err := s.store.GetByStatusID(ctx, statusID)
		if err != nil {
			return Credential{}, fmt.Errorf("activate %s: %w", statusID, err)
		}
		if c.Sub != sub {
			return Credential{}, fmt.Errorf("activate %s: %w", statusID, ErrNotFound)
		}
		if c.PHID != claim.PHID || c.DeviceID == "" || c.DeviceID != claim.DeviceID || c.LastStep == 0 {
			return Credential{}, fmt.Errorf("activate %s: no matching verified claim: %w", statusID, ErrConflict)
		}
		if c.Verified {
			return public(c), nil
		}
		now := s.clock.Now().UTC()
		c.Verified = true
		c.VerifiedAt = now
		if c.FriendlyName == "" && c.Passkey != nil {
			c.FriendlyName = passkeyName(*c.Passkey)
		}
		if c.FriendlyName == "" {
			// An address names itself better than "Authenticator" does.
			c.FriendlyName = cmp.Or(c.Destination, DefaultName)
		}
		msg, err := deviceEvent(events.DeviceRegistered, c.PHID+"/"+string(events.DeviceRegistered), c, "", now)
		if err != nil {
			return Credential{}, fmt.Errorf("activate %s: %w", statusID, err)
		}
		updated, err := s.store.Update(ctx, c, msg)
		if errors.Is(err, ErrStale) {
			continue // re-read: a concurrent activation may have won, which is then idempotent
		}
		if err != nil {
			return Credential{}, fmt.Errorf("activate %s: %w", statusID, err)
		}
		if vi, ok := s.store.(VerifiedIndex); ok {
			_ = vi.NoteVerified(ctx, updated) // a lost note costs a sign-in's readiness a read
		}
		return public(updated), nil
	}
	return Credential{}, fmt.Errorf("activate %s: %w", statusID, ErrStale)
}

// check opens c's secret and checks code at now, refusing any step at or below lastStep. The secret
// lives only inside this function.
func (s *Service) check(c Credential, code string, now time.Time, lastStep int64) (int64, error) {
	secret, err := s.sealer.Open(c.SealedSecret, []byte(c.PHID))
	if err != nil {
		return 0, fmt.Errorf("open secret of %s: %w", c.PHID, err)
	}
	defer clear(secret)
	step, ok, err := totp.Check(string(secret), code, now, c.Params, codeSkew, lastStep)
	if err != nil {
		return 0, fmt.Errorf("check code of %s: %w", c.PHID, err)
	}
	if !ok {
		return 0, factor.ErrInvalidCode
	}
	return step, nil
}

// DiscardPending destroys the pending credential of an enrollment that ended without it
// (expired, cancelled, failed), so no secret outlives its enrollment. No event is emitted
// because no device was ever registered. A verified or unknown credential is left alone, so
// the call is safe to repeat and to receive for any enrollment.
func (s *Service) DiscardPending(ctx context.Context, statusID string) error {
	if !validID(statusID) {
		return nil
	}
	for range maxAttempts {
		c, err := s.store.GetByStatusID(ctx, statusID)
		if errors.Is(err, ErrNotFound) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("discard %s: %w", statusID, err)
		}
		if c.Verified {
			return nil
		}
		c.SealedSecret = nil
		err = s.store.Remove(ctx, c)
		switch {
		case err == nil, errors.Is(err, ErrNotFound):
			return nil
		case errors.Is(err, ErrStale):
			continue // activated or discarded meanwhile: look again
		default:
			return fmt.Errorf("discard %s: %w", statusID, err)
		}
	}
	return fmt.Errorf("discard %s: %w", statusID, ErrStale)
}

// List returns sub's registered devices, newest first. Pending credentials are not devices yet
// and are left out.
func (s *Service) List(ctx context.Context, sub string) ([]Credential, error) {
	all, err := s.store.ListBySub(ctx, sub)
	if err != nil {
		return nil, fmt.Errorf("list devices: %w", err)
	}
	out := make([]Credential, 0, len(all))
	for _, c := range all {
		if c.Verified && c.Sub == sub {
			out = append(out, public(c))
		}
	}
	slices.SortFunc(out, func(a, b Credential) int {
		if d := b.CreatedAt.Compare(a.CreatedAt); d != 0 {
			return d
		}
		return cmp.Compare(a.PHID, b.PHID)
	})
	return out, nil
}

// Rename gives sub's device phid a new friendly name (1 to MaxNameLength printable characters
// after trimming) and emits mfa.device.renamed. Renaming to the current name changes nothing
// and emits nothing.
func (s *Service) Rename(ctx context.Context, sub, phid, name string) (Credential, error) {
	name, err := validName(name)
	if err != nil {
		return Credential{}, err
	}
	for range maxAttempts {
		c, err := s.owned(ctx, sub, phid)
		if err != nil {
			return Credential{}, fmt.Errorf("rename %s: %w", phid, err)
		}
		if c.FriendlyName == name {
			return public(c), nil
		}
		// The version read is part of the id: each rename is a distinct fact, and a retry of
		// the same write (same version) is the same fact.
		id := phid + "/renamed/" + strconv.FormatUint(c.Version, 10)
		c.FriendlyName = name
		msg, err := deviceEvent(events.DeviceRenamed, id, c, "", s.clock.Now())
		if err != nil {
			return Credential{}, fmt.Errorf("rename %s: %w", phid, err)
		}
		updated, err := s.store.Update(ctx, c, msg)
		if errors.Is(err, ErrStale) {
			continue
		}
		if err != nil {
			return Credential{}, fmt.Errorf("rename %s: %w", phid, err)
		}
		return public(updated), nil
	}
	return Credential{}, fmt.Errorf("rename %s: %w", phid, ErrStale)
}

// Remove deletes sub's device phid, destroying its secret at once, and emits
// mfa.device.removed in the same write.
func (s *Service) Remove(ctx context.Context, sub, phid string) error {
	return s.remove(ctx, sub, phid, "")
}

// RemoveAsAdmin is Remove done by administrator actor for the user: the event names the actor.
func (s *Service) RemoveAsAdmin(ctx context.Context, sub, phid, actor string) error {
	if actor == "" {
		return invalid("actor is missing")
	}
	return s.remove(ctx, sub, phid, actor)
}

func (s *Service) remove(ctx context.Context, sub, phid, actor string) error {
	for range maxAttempts {
		c, err := s.owned(ctx, sub, phid)
		if err != nil {
			return fmt.Errorf("remove %s: %w", phid, err)
		}
		if err := s.removeCredential(ctx, c, actor); errors.Is(err, ErrStale) {
			continue
		} else if err != nil {
			return fmt.Errorf("remove %s: %w", phid, err)
		}
		return nil
	}
	return fmt.Errorf("remove %s: %w", phid, ErrStale)
}

// removeCredential deletes the verified credential c as read, with its mfa.device.removed event
// (naming actor, if any); ErrStale if it changed since.
func (s *Service) removeCredential(ctx context.Context, c Credential, actor string) error {
	if c.Method == method.Email {
		// The mail that says this address was removed (and any later one, if it was the last
		// address) must still reach the user.
		if err := s.keepLastEmail(ctx, c); err != nil {
			return err
		}
	}
	msg, err := deviceEvent(events.DeviceRemoved, c.PHID+"/"+string(events.DeviceRemoved), c, actor, s.clock.Now())
	if err != nil {
		return err
	}
	c.SealedSecret = nil
	if err := s.store.Remove(ctx, c, msg); err != nil {
		return err
	}
	s.hints.forget(c.Sub)
	return nil
}

// owned returns the verified credential phid if it belongs to sub. Someone else's device and a
// pending credential are both ErrNotFound: users may not learn that either exists.
func (s *Service) owned(ctx context.Context, sub, phid string) (Credential, error) {
	if !validID(phid) || sub == "" {
		return Credential{}, ErrNotFound
	}
	c, err := s.store.Get(ctx, phid)
	if err != nil {
		return Credential{}, err
	}
	if c.Sub != sub || !c.Verified {
		return Credential{}, ErrNotFound
	}
	return c, nil
}

// deviceEvent builds an mfa.device.* event about c as an outbox message. The payload is built
// field by field from c so that no secret can slip into it.
func deviceEvent(t events.Type, idSeed string, c Credential, actor string, at time.Time) (outbox.Message, error) {
	env, err := events.New(
		uuid.NewSHA1(eventNamespace, []byte(idSeed)).String(),
		events.SourceRegistry, t, c.PHID, at,
		events.Device{
			PHID:         c.PHID,
			DeviceID:     c.DeviceID,
			Sub:          c.Sub,
			Method:       c.Method,
			FriendlyName: c.FriendlyName,
			StatusID:     c.StatusID,
			Actor:        actor,
		})
	if err != nil {
		return outbox.Message{}, fmt.Errorf("build %s event: %w", t, err)
	}
	return outbox.FromEnvelope(env)
}

// public strips what must not leave the domain: callers of the Service never need the sealed
// secret.
func public(c Credential) Credential {
	c.SealedSecret = nil
	return c
}

// validID accepts the ids the registry keys records by (status ids, ph_ids): 1 to 128 of
// [A-Za-z0-9_-]. Anything else cannot name a record, and keeping it out also keeps store
// keys well-formed.
func validID(s string) bool { return ids.Valid(s) }

// validDeviceID accepts a companion's own device id: 1 to 128 printable characters.
func validDeviceID(s string) bool {
	return utf8.RuneCountInString(s) <= 128 && printable(s)
}

// validName checks a user-typed friendly name and returns it trimmed.
func validName(name string) (string, error) {
	name = strings.TrimSpace(name)
	if name == "" {
		return "", invalid("friendly_name must not be empty")
	}
	if utf8.RuneCountInString(name) > MaxNameLength {
		return "", invalid(fmt.Sprintf("friendly_name must be at most %d characters", MaxNameLength))
	}
	if !printable(name) {
		return "", invalid("friendly_name must contain only printable characters")
	}
	return name, nil
}

// sanitise cleans what a companion app reports about itself: unlike a name the user types,
// a device name is not worth failing an activation over, so it is cleaned rather than refused.
func sanitise(s string) string {
	s = strings.Map(func(r rune) rune {
		if unicode.IsPrint(r) {
			return r
		}
		return -1
	}, strings.ToValidUTF8(s, ""))
	s = strings.TrimSpace(s)
	if r := []rune(s); len(r) > MaxNameLength {
		s = strings.TrimSpace(string(r[:MaxNameLength]))
	}
	return s
}

func printable(s string) bool {
	if !utf8.ValidString(s) {
		return false
	}
	for _, r := range s {
		if !unicode.IsPrint(r) {
			return false
		}
	}
	return true
}

// normaliseCode drops the spaces people type or paste into codes ("123 456").
func normaliseCode(code string) string {
	return strings.Map(func(r rune) rune {
		if unicode.IsSpace(r) {
			return -1
		}
		return r
	}, code)
}

// randomDeviceID names a device whose authenticator did not say who it is (a plain TOTP app):
// 8 random bytes as 16 hex characters.
func randomDeviceID() (string, error) {
	var b [8]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("random device id: %w", err)
	}
	return hex.EncodeToString(b[:]), nil
}

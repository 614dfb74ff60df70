package device

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"net/mail"
	"slices"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/mfaflow/mfaflow/events/method"
	"github.com/mfaflow/mfaflow/pkg/factor"
)

// The user's side of the registry (DESIGN.md Part 3: "Telling users what changed", "Disabling
// MFA (ITS)", "The user's MFA state"): where security notifications go, which method the user
// prefers, and disabling MFA by an emailed link.

// Profile is what the registry keeps about a user beyond factors.
type Profile struct {
	Sub string
	// SealedClaimEmail is the verified `email` claim of the user's token (sealed): the contact
	// when the user has no EMAIL factor.
	SealedClaimEmail []byte
	// SealedLastEmail is the address of the user's last EMAIL factor to be removed (sealed), so
	// that the mail saying it went, or that MFA was disabled, still reaches the user.
	SealedLastEmail []byte
	// Locale is the language of the user's messages (the token's `locale` claim).
	Locale string
	// DefaultMethod is the method the user prefers (Rackspace factorType); empty for none.
	DefaultMethod string
	// DisableHash is the keyed hash of the pending disable link's token, DisableExpiresAt its end.
	DisableHash      []byte
	DisableExpiresAt time.Time
	// Version is the store's revision, 0 for a user who has none yet.
	Version uint64
}

// Errors of the user's side.
var (
	// ErrNoContact: the user has no address to mail (no EMAIL factor, no verified email claim).
	ErrNoContact = errors.New("no contact address")
	// ErrLinkExpired: the disable link is unknown, used or past its 15 minutes.
	ErrLinkExpired = errors.New("disable link expired or used")
)

// DisableLinkTTL is how long an emailed disable link works (ITS: 15 minutes).
const DisableLinkTTL = 15 * time.Minute

// profileAAD binds a sealed address to its user and role.
func profileAAD(sub, role string) []byte { return []byte("mfaflow/profile/" + role + "\x00" + sub) }

// changeProfile is the read–modify–compare-and-set of sub's profile: change edits it (a new one
// when the user has none) and says whether to write.
func (s *Service) changeProfile(ctx context.Context, sub string, change func(p *Profile) (bool, error)) (Profile, error) {
	for range maxAttempts {
		p, err := s.store.GetProfile(ctx, sub)
		if errors.Is(err, ErrNotFound) {
			p, err = Profile{Sub: sub}, nil
		}
		if err != nil {
			return Profile{}, err
		}
		write, err := change(&p)
		if err != nil || !write {
			return p, err
		}
		if p, err = s.store.PutProfile(ctx, p); errors.Is(err, ErrStale) {
			continue
		} else if err != nil {
			return Profile{}, err
		}
		return p, nil
	}
	return Profile{}, ErrStale
}

// open opens a sealed address of sub's profile ("" for none or one that no longer opens).
func (s *Service) openProfileAddress(sealed []byte, sub, role string) string {
	if len(sealed) == 0 {
		return ""
	}
	plain, err := s.sealer.Open(sealed, profileAAD(sub, role))
	if err != nil {
		return ""
	}
	return string(plain)
}

// RememberClaims keeps what a user's token says about where to reach them: the `email` claim
// when `email_verified` is true, and `locale`. It writes only when something changed, so the
// caller may call it on every request of the user.
func (s *Service) RememberClaims(ctx context.Context, sub, email string, emailVerified bool, locale string) error {
	if sub == "" {
		return nil
	}
	if a, err := mail.ParseAddress(email); err != nil || a.Address != email || !emailVerified {
		email = ""
	}
	if email == "" && locale == "" {
		return nil
	}
	_, err := s.changeProfile(ctx, sub, func(p *Profile) (bool, error) {
		write := false
		if email != "" && !strings.EqualFold(s.openProfileAddress(p.SealedClaimEmail, sub, "claim"), email) {
			sealed, err := s.sealer.Seal([]byte(email), profileAAD(sub, "claim"))
			if err != nil {
				return false, err
			}
			p.SealedClaimEmail, write = sealed, true
		}
		if locale != "" && locale != p.Locale {
			p.Locale, write = locale, true
		}
		return write, nil
	})
	return err
}

// Contact returns where sub's security notifications go and in which language: the address of
// the most recently verified EMAIL factor, else the remembered verified email claim, else the
// address of the last EMAIL factor removed. ErrNoContact when there is none.
func (s *Service) Contact(ctx context.Context, sub string) (email, locale string, err error) {
	creds, err := s.store.ListBySub(ctx, sub)
	if err != nil {
		return "", "", fmt.Errorf("contact: %w", err)
	}
	var newest *Credential
	for i, c := range creds {
		if usableOOB(c, sub, method.Email) && (newest == nil || c.VerifiedAt.After(newest.VerifiedAt)) {
			newest = &creds[i]
		}
	}
	p, err := s.store.GetProfile(ctx, sub)
	if err != nil && !errors.Is(err, ErrNotFound) {
		return "", "", fmt.Errorf("contact: %w", err)
	}
	if newest != nil {
		if a, err := s.openDestination(*newest); err == nil {
			return a, p.Locale, nil
		}
	}
	if a := s.openProfileAddress(p.SealedClaimEmail, sub, "claim"); a != "" {
		return a, p.Locale, nil
	}
	if a := s.openProfileAddress(p.SealedLastEmail, sub, "last"); a != "" {
		return a, p.Locale, nil
	}
	return "", p.Locale, ErrNoContact
}

// keepLastEmail remembers the address of an EMAIL factor that is being removed (see Profile).
func (s *Service) keepLastEmail(ctx context.Context, c Credential) error {
	addr, err := s.openDestination(c)
	if err != nil {
		return nil // nothing to keep
	}
	_, err = s.changeProfile(ctx, c.Sub, func(p *Profile) (bool, error) {
		sealed, err := s.sealer.Seal([]byte(addr), profileAAD(c.Sub, "last"))
		p.SealedLastEmail = sealed
		return err == nil, err
	})
	return err
}

// State is a user's MFA state (UCloud `connected`, Rackspace `multiFactorEnabled`/`factorType`).
type State struct {
	// Enabled while the user has an active factor: a verified device or an unused recovery code.
	Enabled bool
	// Methods are the methods of the user's active factors, in registration order.
	Methods []string
	// DefaultMethod is the preferred method: the one the user set while they still have a factor
	// of it, else the first of Methods that is not recovery codes (recovery codes when that is
	// all the user has).
	DefaultMethod string
	// Factors counts the verified devices (every method but recovery codes).
	Factors int
	// RecoveryCodesRemaining counts the unused recovery codes.
	RecoveryCodesRemaining int
	// Contact is where notifications go, masked ("" for none).
	Contact string
	// LockedUntil is when sign-in checks open again; zero when not locked.
	LockedUntil time.Time
}

// MFAState returns sub's MFA state.
func (s *Service) MFAState(ctx context.Context, sub string) (State, error) {
	if sub == "" {
		return State{}, invalid("sub is missing")
	}
	creds, err := s.store.ListBySub(ctx, sub)
	if err != nil {
		return State{}, fmt.Errorf("mfa state: %w", err)
	}
	var st State
	has := map[string]bool{}
	for _, c := range creds {
		if c.Verified && c.Sub == sub {
			st.Factors++
			has[c.Method] = true
		}
	}
	remaining, err := s.remainingRecoveryCodes(ctx, sub)
	if err != nil {
		return State{}, fmt.Errorf("mfa state: %w", err)
	}
	st.RecoveryCodesRemaining = remaining
	if remaining > 0 {
		has[method.BackupCode] = true
	}
	for _, m := range method.All() {
		if has[m.Name] {
			st.Methods = append(st.Methods, m.Name)
		}
	}
	// A push-capable device is a TOTP device too; listing PUSH needs a key, which the device
	// list shows, so the methods stay those a factor was enrolled as.
	st.Enabled = len(st.Methods) > 0
	p, err := s.store.GetProfile(ctx, sub)
	if err != nil && !errors.Is(err, ErrNotFound) {
		return State{}, fmt.Errorf("mfa state: %w", err)
	}
	if slices.Contains(st.Methods, p.DefaultMethod) {
		st.DefaultMethod = p.DefaultMethod
	} else {
		// Recovery codes are the fallback, not a method to offer first.
		for _, m := range st.Methods {
			if st.DefaultMethod == "" || st.DefaultMethod == method.BackupCode {
				st.DefaultMethod = m
			}
		}
	}
	if addr, _, err := s.Contact(ctx, sub); err == nil {
		st.Contact = maskEmail(addr)
	}
	l, err := s.LockStatus(ctx, sub)
	if err != nil {
		return State{}, fmt.Errorf("mfa state: %w", err)
	}
	st.LockedUntil = l.LockedUntil
	return st, nil
}

// remainingRecoveryCodes counts sub's unused recovery codes (0 without a set).
func (s *Service) remainingRecoveryCodes(ctx context.Context, sub string) (int, error) {
	set, err := s.store.GetRecoverySet(ctx, sub)
	if errors.Is(err, ErrNotFound) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	n := 0
	for i := range set.Hashes {
		if i >= len(set.Used) || !set.Used[i] {
			n++
		}
	}
	return n, nil
}

// SetDefaultMethod records the method sub prefers; factor.ErrNoFactor when sub has no active
// factor of it.
func (s *Service) SetDefaultMethod(ctx context.Context, sub, name string) (State, error) {
	m, ok := method.ByName(strings.ToUpper(strings.TrimSpace(name)))
	if !ok {
		return State{}, invalid("default_method must be one of " + strings.Join(method.Routes(nil), ", ") + " (upper case)")
	}
	st, err := s.MFAState(ctx, sub)
	if err != nil {
		return State{}, err
	}
	if !slices.Contains(st.Methods, m.Name) {
		return State{}, fmt.Errorf("default method %s: %w", m.Name, factor.ErrNoFactor)
	}
	if _, err := s.changeProfile(ctx, sub, func(p *Profile) (bool, error) {
		if p.DefaultMethod == m.Name {
			return false, nil
		}
		p.DefaultMethod = m.Name
		return true, nil
	}); err != nil {
		return State{}, fmt.Errorf("default method: %w", err)
	}
	st.DefaultMethod = m.Name
	return st, nil
}

// Disabled is what RequestDisable did: Done when MFA is off now, else the link that was mailed
// expires at ExpiresAt.
type Disabled struct {
	Done      bool
	ExpiresAt time.Time
}

// RequestDisable disables MFA for sub (every factor and recovery code removed, mfa.factors.reset
// with reason user_disabled): at once with a fresh step-up proof (stepUpToken), else by a link
// mailed to the contact address that confirmURL (a frontend page) opens with ?token=… appended,
// valid DisableLinkTTL and usable once (ConfirmDisable). ErrNoContact without an address.
func (s *Service) RequestDisable(ctx context.Context, sub, stepUpToken, confirmURL string) (Disabled, error) {
	if sub == "" {
		return Disabled{}, invalid("sub is missing")
	}
	// A user without an active factor has nothing to disable: no reset, no event, no mail.
	if has, err := s.HasActiveFactor(ctx, sub); err != nil {
		return Disabled{}, fmt.Errorf("disable: %w", err)
	} else if !has {
		return Disabled{Done: true}, nil
	}
	if stepUpToken != "" {
		// The proof is always spent here, step-up rule or not: it stands in for the link.
		if s.redeemer == nil {
			return Disabled{}, fmt.Errorf("%w: this deployment cannot check an X-MFA-Token; ask for the link", ErrStepUpRequired)
		}
		if err := s.redeemer.Redeem(ctx, sub, stepUpToken); err != nil {
			return Disabled{}, err
		}
		if _, err := s.resetFactors(ctx, sub, sub, ReasonUserDisabled); err != nil {
			return Disabled{}, err
		}
		return Disabled{Done: true}, nil
	}
	if s.deliverer == nil || len(s.codeKey) == 0 {
		return Disabled{}, fmt.Errorf("disable by link: %w", ErrMethodInactive)
	}
	addr, locale, err := s.Contact(ctx, sub)
	if err != nil {
		return Disabled{}, err
	}
	raw := make([]byte, 32)
	if _, err := rand.Read(raw); err != nil {
		return Disabled{}, err
	}
	token := base64.RawURLEncoding.EncodeToString(raw)
	expires := s.clock.Now().UTC().Add(DisableLinkTTL).Truncate(time.Second)
	if _, err := s.changeProfile(ctx, sub, func(p *Profile) (bool, error) {
		p.DisableHash, p.DisableExpiresAt = s.linkHash(sub, token), expires
		return true, nil
	}); err != nil {
		return Disabled{}, fmt.Errorf("disable by link: %w", err)
	}
	sep := "?"
	if strings.Contains(confirmURL, "?") {
		sep = "&"
	}
	id := uuid.NewString() // a delivery of its own, outside any exchange
	if err := s.deliverer.Deliver(ctx, Message{ID: id, Channel: "email", To: addr, Masked: maskEmail(addr), Kind: KindDisableLink,
		Link: confirmURL + sep + "token=" + token, Locale: locale, Sub: sub, ExpiresAt: expires}); err != nil {
		return Disabled{}, fmt.Errorf("disable by link: deliver: %w", err)
	}
	return Disabled{ExpiresAt: expires}, nil
}

// ConfirmDisable disables MFA for sub with the token of a mailed link (RequestDisable): the
// token is spent first (compare-and-set), so it works once. ErrLinkExpired for an unknown, used
// or expired one.
func (s *Service) ConfirmDisable(ctx context.Context, sub, token string) (Reset, error) {
	if sub == "" || token == "" || len(token) > 128 {
		return Reset{}, ErrLinkExpired
	}
	want := s.linkHash(sub, token)
	now := s.clock.Now()
	if _, err := s.changeProfile(ctx, sub, func(p *Profile) (bool, error) {
		if len(p.DisableHash) == 0 || !hmac.Equal(p.DisableHash, want) || !now.Before(p.DisableExpiresAt) {
			return false, ErrLinkExpired
		}
		p.DisableHash, p.DisableExpiresAt = nil, time.Time{}
		return true, nil
	}); err != nil {
		return Reset{}, err
	}
	return s.resetFactors(ctx, sub, sub, ReasonUserDisabled)
}

// linkHash is the keyed hash a disable link's token is kept as.
func (s *Service) linkHash(sub, token string) []byte {
	m := hmac.New(sha256.New, s.codeKey)
	m.Write([]byte("mfaflow disable link v1\x00" + sub + "\x00" + token))
	return m.Sum(nil)
}

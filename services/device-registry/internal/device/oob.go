package device

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
	"net/mail"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/mfaflow/mfaflow/events/method"
	"github.com/mfaflow/mfaflow/pkg/factor"
	"github.com/mfaflow/mfaflow/pkg/phone"
)

// Codes by email and SMS (DESIGN.md Part 3). The registry holds the addresses as it holds TOTP
// secrets: sealed at rest, bound to their credential, never in an event or a log. It makes every
// one-time code, keeps it only as a keyed hash inside a sealed value the status service stores
// with its enrollment or sign-in (as with TOTP's pending credential: the registry writes
// nothing for a code), and hands the code to the notifier through a Deliverer, sealed again
// for the trip.

// Errors of the code methods.
var (
	// ErrMethodInactive: the notifier cannot deliver on the method's channel now.
	ErrMethodInactive = errors.New("method inactive")
	// ErrAlreadyEnrolled: the user has a factor for this address already.
	ErrAlreadyEnrolled = errors.New("already enrolled")
	// ErrRegionNotAllowed: SMS is not sent to the number's region.
	ErrRegionNotAllowed = errors.New("region not allowed")
)

// TooManyError: an SMS limit refused the message; nothing was sent. RetryAt is when the window
// that is full ends.
type TooManyError struct {
	Limit   string // user, destination, global
	RetryAt time.Time
}

func (e *TooManyError) Error() string { return "too many SMS (" + e.Limit + " limit)" }

// Message is one code to deliver: the adapter seals it for the notifier.
type Message struct {
	ID      string
	Channel string
	To      string
	Masked  string
	Kind    string
	Code    string
	// Link is a confirmation URL with its single-use token (KindDisableLink).
	Link      string
	Locale    string
	Sub       string
	StatusID  string
	ExpiresAt time.Time
}

// The message kinds (the notifier's templates).
const (
	KindEnrollmentCode = "enrollment_code"
	KindSignInCode     = "signin_code"
	KindDisableLink    = "disable_link"
)

// Deliverer hands messages to the notifier. Deliver returns once the message is stored for
// delivery (not delivered).
type Deliverer interface {
	Deliver(ctx context.Context, m Message) error
}

// Channels tells whether the notifier can deliver on a channel now.
type Channels interface {
	// Active errs (an Unavailable fault) while it cannot tell yet: no notifier has answered
	// since this process started, and not for long.
	Active(ctx context.Context, channel string) (bool, error)
}

// Counter counts events per key and window, shared by every replica (the SMS limits).
type Counter interface {
	// Count adds one to key's count in the window starting at window and returns the new
	// count.
	Count(ctx context.Context, key string, window time.Time) (int, error)
}

// OOBPolicy are the rules of codes by email and SMS.
type OOBPolicy struct {
	// Digits of a code (6–8; 0 means 6) and how long it is valid (0 means 5 minutes).
	Digits  int
	CodeTTL time.Duration
	// SMS per hour: per user (0 means 10), per destination (0 means 5), for the whole
	// deployment (0 means 1000). Regions are the allowed region codes (empty: all).
	SMSPerUser, SMSPerDestination, SMSGlobal int
	SMSRegions                               []string
}

func (p OOBPolicy) withDefaults() OOBPolicy {
	if p.Digits < 6 || p.Digits > 8 {
		p.Digits = 6
	}
	if p.CodeTTL <= 0 {
		p.CodeTTL = 5 * time.Minute
	}
	if p.SMSPerUser <= 0 {
		p.SMSPerUser = 10
	}
	if p.SMSPerDestination <= 0 {
		p.SMSPerDestination = 5
	}
	if p.SMSGlobal <= 0 {
		p.SMSGlobal = 1000
	}
	return p
}

// WithOOB turns on codes by email and SMS: codeKey keys the codes' hashes, d delivers them, ch
// says which channels work, counter keeps the SMS limits.
func WithOOB(p OOBPolicy, codeKey []byte, d Deliverer, ch Channels, counter Counter) Option {
	return func(s *Service) {
		s.oob = p.withDefaults()
		s.codeKey = append([]byte(nil), codeKey...)
		s.deliverer, s.channels, s.counter = d, ch, counter
	}
}

// Destination is an address or number a code goes to, as the user gave it.
type Destination struct {
	Method string // method.Email or method.SMS
	// Address is an email address (EMAIL) or a phone number (SMS: E.164, or national with Region).
	Address string
	Region  string
	// Locale picks the language of the message.
	Locale string
}

// OOBChallenge is a code sent: what the status service keeps (Sealed, opaque to it) and shows.
type OOBChallenge struct {
	Sealed     []byte
	PHID       string // the factor the code was sent to (sign-in)
	Masked     string
	DeliveryID string
	// CodeExpiresAt is when the code stops working.
	CodeExpiresAt time.Time
}

// channelOf is the notifier channel of a code method; ok false for other methods.
func channelOf(name string) (string, bool) {
	m, ok := method.ByName(name)
	return m.Channel, ok && m.Channel != ""
}

// normalise checks and normalises d's address: a lower-case-domain email address, or an E.164
// number, with its mask and the region of a number.
func normalise(d Destination) (addr, masked, region string, err error) {
	switch d.Method {
	case method.Email:
		a := strings.TrimSpace(d.Address)
		p, perr := mail.ParseAddress(a)
		if perr != nil || p.Address != a || p.Name != "" || len(a) > 254 || strings.ContainsAny(a, " \t\r\n") {
			return "", "", "", invalid("email is not a valid address (name@example.org)")
		}
		at := strings.LastIndexByte(a, '@')
		a = a[:at] + strings.ToLower(a[at:])
		return a, maskEmail(a), "", nil
	case method.SMS:
		n, perr := phone.Parse(d.Address, d.Region)
		if perr != nil {
			return "", "", "", invalid("phone: " + perr.Error())
		}
		return n.E164, n.Mask(), n.Region, nil
	}
	return "", "", "", invalid("not a method whose codes are sent")
}

// maskEmail shows an address's first character and its domain: a***@example.org.
func maskEmail(a string) string {
	at := strings.LastIndexByte(a, '@')
	if at <= 0 {
		return "***"
	}
	r := []rune(a[:at])
	return string(r[0]) + "***" + a[at:]
}

// newCode draws a code of digits decimal digits, uniformly.
func newCode(digits int) (string, error) {
	limit := new(big.Int).Exp(big.NewInt(10), big.NewInt(int64(digits)), nil)
	n, err := rand.Int(rand.Reader, limit)
	if err != nil {
		return "", err
	}
	return fmt.Sprintf("%0*d", digits, n), nil
}

// codeHash is the keyed hash a code is kept as, bound to what it was sent for (an enrollment's
// or a sign-in's status id), so a code of one exchange never completes another.
func (s *Service) codeHash(binding, code string) []byte {
	m := hmac.New(sha256.New, s.codeKey)
	m.Write([]byte("mfaflow one-time code v1\x00" + binding + "\x00" + code))
	return m.Sum(nil)
}

func (s *Service) oobReady(ctx context.Context, name string) (string, error) {
	ch, ok := channelOf(name)
	if !ok {
		return "", invalid("not a method whose codes are sent")
	}
	if s.deliverer == nil || s.channels == nil || len(s.codeKey) == 0 {
		return "", fmt.Errorf("%s: %w", name, ErrMethodInactive)
	}
	if active, err := s.channels.Active(ctx, ch); err != nil {
		return "", err
	} else if !active {
		return "", fmt.Errorf("%s: %w", name, ErrMethodInactive)
	}
	return ch, nil
}

// deliveryNamespace names deliveries: one id per code sent.
var deliveryNamespace = uuid.MustParse("0d8a6f3e-5c41-4b7e-9e2a-3f6c1b8d4a27")

// send makes a code for binding, checks the SMS limits and hands the message to the notifier.
func (s *Service) send(ctx context.Context, ch, kind, sub, statusID, to, masked, region, locale string) (code string, deliveryID string, codeExpires time.Time, err error) {
	if ch == "sms" {
		if err := s.smsAllowed(ctx, sub, to, region); err != nil {
			return "", "", time.Time{}, err
		}
	}
	code, err = newCode(s.oob.Digits)
	if err != nil {
		return "", "", time.Time{}, err
	}
	nonce := make([]byte, 16)
	if _, err := rand.Read(nonce); err != nil {
		return "", "", time.Time{}, err
	}
	deliveryID = uuid.NewSHA1(deliveryNamespace, append([]byte(statusID+"\x00"), nonce...)).String()
	now := s.clock.Now().UTC()
	codeExpires = now.Add(s.oob.CodeTTL)
	m := Message{ID: deliveryID, Channel: ch, To: to, Masked: masked, Kind: kind, Code: code, Locale: locale,
		Sub: sub, StatusID: statusID, ExpiresAt: codeExpires}
	if err := s.deliverer.Deliver(ctx, m); err != nil {
		return "", "", time.Time{}, fmt.Errorf("deliver: %w", err)
	}
	return code, deliveryID, codeExpires, nil
}

// smsAllowed applies MFA_SMS_REGIONS and the hourly limits per user, per destination and for
// the deployment. The counts are read first and only counted up when all three allow one more,
// so a refused message does not use up the user's allowance.
func (s *Service) smsAllowed(ctx context.Context, sub, e164, region string) error {
	if !phone.AllowedRegion(region, s.oob.SMSRegions) {
		return fmt.Errorf("%s: %w", region, ErrRegionNotAllowed)
	}
	if s.counter == nil {
		return errors.New("sms limits: no counter")
	}
	window := s.clock.Now().UTC().Truncate(time.Hour)
	limits := []struct {
		name, key string
		max       int
	}{
		{"user", "sms.user." + hashKey(sub), s.oob.SMSPerUser},
		{"destination", "sms.to." + hashKey(e164), s.oob.SMSPerDestination},
		{"global", "sms.all", s.oob.SMSGlobal},
	}
	// Each count is taken before it is compared (an atomic increment that answers the new
	// count), so concurrent requests at a limit cannot both pass, as a read-then-count would
	// let them. The counts go from the narrowest to the widest and stop at the first one over:
	// a user at their own limit spends none of the destination's or the deployment's allowance.
	for _, l := range limits {
		n, err := s.counter.Count(ctx, l.key, window)
		if err != nil {
			return fmt.Errorf("sms limits: %w", err)
		}
		if n > l.max {
			return &TooManyError{Limit: l.name, RetryAt: window.Add(time.Hour)}
		}
	}
	return nil
}

// hashKey keeps users and numbers out of counter keys.
func hashKey(s string) string {
	h := sha256.Sum256([]byte("mfaflow counter\x00" + s))
	return fmt.Sprintf("%x", h[:16])
}

// CreatePendingOOB starts the enrollment of an email address or phone number: the code is sent,
// and the pending credential (the address and the code's keyed hash) is sealed for the status
// service to keep, as CreatePending does for TOTP. One factor per address: a user who has
// already enrolled it gets ErrAlreadyEnrolled.
func (s *Service) CreatePendingOOB(ctx context.Context, statusID, sub string, expiresAt time.Time, d Destination) (OOBChallenge, error) {
	if !validID(statusID) {
		return OOBChallenge{}, invalid("status_id is missing or malformed")
	}
	if sub == "" {
		return OOBChallenge{}, invalid("sub is missing")
	}
	ch, err := s.oobReady(ctx, d.Method)
	if err != nil {
		return OOBChallenge{}, err
	}
	addr, masked, region, err := normalise(d)
	if err != nil {
		return OOBChallenge{}, err
	}
	creds, err := s.store.ListBySub(ctx, sub)
	if err != nil {
		return OOBChallenge{}, fmt.Errorf("create pending %s: %w", d.Method, err)
	}
	for _, c := range creds {
		if c.Verified && c.Method == d.Method && c.Sub == sub {
			// Mail systems treat local parts without regard to case, whatever RFC 5321 allows.
			if a, err := s.openDestination(c); err == nil && strings.EqualFold(a, addr) {
				return OOBChallenge{}, ErrAlreadyEnrolled
			}
		}
	}
	p := Pending{Method: d.Method, Destination: addr, Masked: masked, Region: region, Locale: d.Locale,
		CreatedAt: s.clock.Now().UTC(), ExpiresAt: expiresAt.UTC()}
	return s.sendPending(ctx, ch, statusID, sub, p)
}

// ResendPendingOOB sends a new code for the enrollment whose sealed pending credential is sealed:
// the old code stops working (the returned value replaces the enrollment's).
func (s *Service) ResendPendingOOB(ctx context.Context, statusID, sub string, sealed []byte) (OOBChallenge, error) {
	p, err := openPending(s.sealer, sealed, statusID, sub)
	if err != nil {
		return OOBChallenge{}, err
	}
	ch, err := s.oobReady(ctx, p.Method)
	if err != nil {
		return OOBChallenge{}, err
	}
	if !p.ExpiresAt.IsZero() && !s.clock.Now().Before(p.ExpiresAt) {
		return OOBChallenge{}, ErrExpired
	}
	return s.sendPending(ctx, ch, statusID, sub, p)
}

func (s *Service) sendPending(ctx context.Context, ch, statusID, sub string, p Pending) (OOBChallenge, error) {
	code, id, codeExpires, err := s.send(ctx, ch, KindEnrollmentCode, sub, statusID, p.Destination, p.Masked, p.Region, p.Locale)
	if err != nil {
		return OOBChallenge{}, err
	}
	p.CodeHash, p.CodeExpiresAt = s.codeHash(statusID, code), codeExpires
	sealed, err := p.seal(s.sealer, statusID, sub)
	if err != nil {
		return OOBChallenge{}, err
	}
	return OOBChallenge{Sealed: sealed, Masked: p.Masked, DeliveryID: id, CodeExpiresAt: codeExpires}, nil
}

// checkPendingCode checks an enrollment's code against its pending credential.
func (s *Service) checkPendingCode(p Pending, statusID, code string, now time.Time) error {
	if !p.CodeExpiresAt.IsZero() && !now.Before(p.CodeExpiresAt) {
		return factor.ErrInvalidCode // expired: resend for a new one
	}
	if len(code) != s.oob.Digits || !allDigits(code) || !hmac.Equal(s.codeHash(statusID, code), p.CodeHash) {
		return factor.ErrInvalidCode
	}
	return nil
}

// openDestination opens the address of a verified code factor.
func (s *Service) openDestination(c Credential) (string, error) {
	plain, err := s.sealer.Open(c.SealedSecret, []byte(c.PHID))
	if err != nil {
		return "", err
	}
	return string(plain), nil
}

// usableOOB reports whether c can receive codes of method name.
func usableOOB(c Credential, sub, name string) bool {
	return c.Verified && c.Sub == sub && c.Method == name && len(c.SealedSecret) > 0
}

func readyOOB(name string) func(s *Service, ctx context.Context, sub string) error {
	return func(s *Service, ctx context.Context, sub string) error {
		if _, err := s.oobReady(ctx, name); err != nil {
			return err
		}
		creds, err := s.store.ListBySub(ctx, sub)
		if err != nil {
			return fmt.Errorf("ready: %w", err)
		}
		for _, c := range creds {
			if usableOOB(c, sub, name) {
				return nil
			}
		}
		return fmt.Errorf("ready: %w", factor.ErrNoFactor)
	}
}

// signInChallenge is the sealed value a sign-in keeps: which factor the code went to and the
// code's keyed hash. It opens only for its sign-in and user.
type signInChallenge struct {
	PHID      string `json:"p"`
	Hash      []byte `json:"h"`
	ExpiresAt int64  `json:"x"` // unix milliseconds
}

func challengeAAD(statusID, sub string) []byte {
	return []byte("mfaflow/oob-challenge/v1\x00" + statusID + "\x00" + sub)
}

// Challenge sends a sign-in code of method name (EMAIL, SMS) to sub's factor phid, or, with
// phid empty, to the factor used most recently. The returned Sealed value goes with the
// sign-in and comes back with the code (Authenticate). A locked user gets a *factor.LockedError
// and nothing is sent.
func (s *Service) Challenge(ctx context.Context, sub, name, phid, statusID, locale string) (OOBChallenge, error) {
	if sub == "" || !validID(statusID) {
		return OOBChallenge{}, invalid("sub and status_id are required")
	}
	ch, err := s.oobReady(ctx, name)
	if err != nil {
		return OOBChallenge{}, err
	}
	if err := s.checkLock(ctx, sub); err != nil {
		return OOBChallenge{}, err
	}
	creds, err := s.store.ListBySub(ctx, sub)
	if err != nil {
		return OOBChallenge{}, fmt.Errorf("challenge: %w", err)
	}
	var pick *Credential
	for i, c := range creds {
		if !usableOOB(c, sub, name) {
			continue
		}
		if phid != "" {
			if c.PHID == phid {
				pick = &creds[i]
			}
			continue
		}
		if pick == nil || lastActive(c).After(lastActive(*pick)) {
			pick = &creds[i]
		}
	}
	if pick == nil {
		if phid != "" {
			return OOBChallenge{}, fmt.Errorf("challenge: %w", ErrNotFound)
		}
		return OOBChallenge{}, fmt.Errorf("challenge: %w", factor.ErrNoFactor)
	}
	addr, err := s.openDestination(*pick)
	if err != nil {
		return OOBChallenge{}, fmt.Errorf("challenge: open destination: %w", err)
	}
	region := ""
	if name == method.SMS {
		n, err := phone.Parse(addr, "")
		if err != nil {
			return OOBChallenge{}, fmt.Errorf("challenge: stored number: %w", err)
		}
		region = n.Region
	}
	code, id, codeExpires, err := s.send(ctx, ch, KindSignInCode, sub, statusID, addr, pick.Destination, region, locale)
	if err != nil {
		return OOBChallenge{}, err
	}
	plain, err := json.Marshal(signInChallenge{PHID: pick.PHID, Hash: s.codeHash(statusID, code), ExpiresAt: codeExpires.UnixMilli()})
	if err != nil {
		return OOBChallenge{}, err
	}
	sealed, err := s.sealer.Seal(plain, challengeAAD(statusID, sub))
	if err != nil {
		return OOBChallenge{}, fmt.Errorf("challenge: seal: %w", err)
	}
	return OOBChallenge{Sealed: sealed, PHID: pick.PHID, Masked: pick.Destination, DeliveryID: id, CodeExpiresAt: codeExpires}, nil
}

func lastActive(c Credential) time.Time {
	if c.LastUsedAt.After(c.VerifiedAt) {
		return c.LastUsedAt
	}
	return c.VerifiedAt
}

// checkOOB checks a sign-in code of method name against the sign-in's sealed challenge. The
// sign-in itself makes the code single use (it is AUTHENTICATED once); the factor's
// last_used_at is recorded.
func checkOOB(name string) func(s *Service, ctx context.Context, in checkInput) (Authenticated, error) {
	return func(s *Service, ctx context.Context, in checkInput) (Authenticated, error) {
		code := normaliseCode(in.code)
		if len(code) != s.oob.Digits || !allDigits(code) {
			return Authenticated{}, fmt.Errorf("authenticate: %w", factor.ErrMalformedCode)
		}
		if len(in.challenge) == 0 || !validID(in.statusID) {
			return Authenticated{}, invalid("this sign-in has no code sent")
		}
		plain, err := s.sealer.Open(in.challenge, challengeAAD(in.statusID, in.sub))
		if err != nil {
			return Authenticated{}, invalid("this sign-in's code does not open here")
		}
		var ch signInChallenge
		if err := json.Unmarshal(plain, &ch); err != nil {
			return Authenticated{}, invalid("this sign-in's code does not open here")
		}
		now := s.clock.Now().UTC()
		if !now.Before(time.UnixMilli(ch.ExpiresAt)) || !hmac.Equal(s.codeHash(in.statusID, code), ch.Hash) {
			return Authenticated{}, fmt.Errorf("authenticate: %w", factor.ErrInvalidCode)
		}
		for range maxAttempts {
			c, err := s.store.Get(ctx, ch.PHID)
			if errors.Is(err, ErrNotFound) || err == nil && !usableOOB(c, in.sub, name) {
				return Authenticated{}, fmt.Errorf("authenticate: the factor was removed: %w", factor.ErrNoFactor)
			}
			if err != nil {
				return Authenticated{}, fmt.Errorf("authenticate: %w", err)
			}
			c.LastUsedAt = now
			c.LastStepFor = in.statusID
			if _, err := s.store.Update(ctx, c); errors.Is(err, ErrStale) {
				continue
			} else if err != nil {
				return Authenticated{}, fmt.Errorf("authenticate: %w", err)
			}
			return Authenticated{Method: name, PHID: c.PHID}, nil
		}
		return Authenticated{}, fmt.Errorf("authenticate: %w", ErrStale)
	}
}

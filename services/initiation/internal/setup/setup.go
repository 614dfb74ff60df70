// Package setup starts enrollments: it asks the device registry for a pending credential, has
// the status service record the enrollment, and builds what the user scans. It holds the rules
// of the otpauth URI (Key Uri Format plus cidaas's parameters) and imports no transport.
package setup

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/mfaflow/mfaflow/events/method"
	"github.com/mfaflow/mfaflow/pkg/ids"
)

// Verification types. Only TOTP is enrolled through Initiate.
// ErrUnsupportedMethod: the verification type is not offered.
var ErrUnsupportedMethod = errors.New("unsupported verification type")

// ErrSubTooLong: the otpauth URI for this user would not fit in a QR code, because of the
// length of the user id (sub), which appears in it twice. Nothing has been stored.
var ErrSubTooLong = errors.New("the user id (sub) is too long to fit in a QR code")

// MaxURIBytes is the longest otpauth URI a QR code holds: version 40 at error correction level
// M (what internal/qr renders) in byte mode carries 2,331 bytes. The test holds internal/qr to it.
const MaxURIBytes = 2331

// worstCredential is a stand-in as long as any credential the registry makes: a 64-byte
// (SHA-512 sized) secret in base32, the longest algorithm name, 8 digits and a long period.
// An URI built with it is at least as long as the real one.
var worstCredential = Credential{Secret: strings.Repeat("A", 103), Algorithm: "SHA512", Digits: 10, Period: 99999}

// QRFormat says how the QR code is delivered.
type QRFormat string

// The formats.
const (
	QRPNG  QRFormat = "png"
	QRSVG  QRFormat = "svg"
	QRNone QRFormat = "none"
)

// Credential is a pending TOTP credential the registry made.
type Credential struct {
	Secret    string
	Algorithm string
	Digits    int
	Period    int
	// EMAIL and SMS: no secret; the code went to Destination (masked).
	Destination   string
	DeliveryID    string
	CodeExpiresAt time.Time
	// PublicKey is a passkey's (WEBAUTHN) creation options, JSON as browsers parse them.
	PublicKey []byte
	// Pending is the same credential sealed by the registry, for the status service to keep
	// with the enrollment; opaque here.
	Pending []byte
}

// Registry makes pending credentials (the device registry, over NATS). It stores nothing until
// a code claims one, so a credential whose enrollment is never recorded needs no clean-up.
type Registry interface {
	CreatePending(ctx context.Context, statusID, sub string, expiresAt time.Time, proof StepUpProof, f Factor) (Credential, error)
}

// Factor is what to enroll: the method, and for EMAIL and SMS where the codes go (Address: an
// email address, or a phone number in E.164 or national with Region) and the language of their
// messages.
type Factor struct {
	Method  string
	Address string
	Region  string
	Locale  string
	// ContactEmail is the verified email claim of the user's token (where notifications go).
	ContactEmail string
	// FriendlyName names a passkey (WEBAUTHN); optional.
	FriendlyName string
}

// Notifier says which channels codes can be sent on (the notifier service, over NATS).
type Notifier interface {
	// Active errs (an Unavailable fault) while it cannot tell yet: no notifier has answered
	// since this process started, and not for long.
	Active(ctx context.Context, channel string) (bool, error)
}

// StepUpProof is what an initiation brings to the registry's step-up rule (once a user has a
// factor, a new one needs a fresh mfa_token of the user): the X-MFA-Token, or, for a retry of an
// initiation still in progress, Retry, since the first attempt spent the token.
type StepUpProof struct {
	Token string
	Retry bool
}

// Status records enrollments (the status service, over NATS).
type Status interface {
	// Create records the enrollment with its sealed pending credential. Repeated with another
	// credential (a retried keyed initiation), it replaces the stored one while the enrollment
	// is still INITIATED.
	Create(ctx context.Context, statusID, exchangeID, sub, method string, expiresAt time.Time, pending []byte, sent Credential) error
	// KeyedIDs derives the ids of sub's enrollment initiated with Idempotency-Key key, and
	// returns the enrollment already stored under them, if any.
	KeyedIDs(ctx context.Context, sub, key string) (statusID, exchangeID string, existing *Existing, err error)
}

// Existing is what a retried keyed initiation finds of the first attempt's enrollment.
type Existing struct {
	State     string
	ExpiresAt time.Time
}

// KeyReusedError: the Idempotency-Key started an enrollment that has moved on (scanned, enrolled,
// cancelled or expired), so its secret can no longer be handed out again.
type KeyReusedError struct {
	StatusID string
	State    string
}

func (e *KeyReusedError) Error() string {
	return "the Idempotency-Key already started enrollment " + e.StatusID + ", which is " + e.State
}

// QR renders QR codes.
type QR interface {
	PNGDataURI(content string) (string, error)
	SVG(content string) (string, error)
}

// Service starts enrollments.
type Service struct {
	Registry Registry
	Status   Status
	QR       QR
	// Notifier tells whether EMAIL and SMS can be used; nil means they cannot.
	Notifier Notifier
	// WebAuthn says the passkey settings can work (pkg/config.WebAuthn); WEBAUTHN is inactive
	// without.
	WebAuthn bool
	// Issuer names the service in authenticator apps.
	Issuer string
	// PublicURL is the base URL the companion app connects back to (`burl`).
	PublicURL string
	// ClientID is the authenticator client id (`cid`, authenticator_client_id).
	ClientID string
	// TTL is how long an enrollment stays open.
	TTL time.Duration
	Now func() time.Time
}

// Method is a verification type and whether it is on.
type Method struct {
	Type   string
	Active bool
}

// Methods lists the verification types mfaflow offers.
//
// TOTP is enrolled through Initiate; BACKUPCODE (recovery codes) is generated with
// POST /verification-srv/backupcodes instead; PUSH needs no setup of its own: a TOTP
// enrollment whose companion sent a device key over the mobile bridge is push-capable. All
// three sign in through /verification-srv/authentication/{method}.
//
// EMAIL and SMS are active while the notifier can deliver on their channel.
func (s *Service) Methods(ctx context.Context) []Method {
	var out []Method
	for _, m := range method.All() {
		// A method the notifier has not answered for yet is listed inactive.
		active, _ := s.active(ctx, m)
		out = append(out, Method{Type: m.Name, Active: active})
	}
	return out
}

func (s *Service) active(ctx context.Context, m method.Method) (bool, error) {
	switch {
	case m.Name == method.WebAuthn:
		return s.WebAuthn, nil
	case m.Channel == "":
		return true, nil
	case s.Notifier == nil:
		return false, nil
	}
	return s.Notifier.Active(ctx, m.Channel)
}

// ErrMethodInactive: the method cannot be used here now (no mail server or SMS provider; passkey
// settings that cannot work).
var ErrMethodInactive = errors.New("method inactive")

// Initiated is a started enrollment, with everything the user needs to scan it.
type Initiated struct {
	ExchangeID string
	ExpiresAt  time.Time
	ClientID   string
	Sub        string
	StatusID   string
	Secret     string
	URI        string
	// QRCode is a data URI (png), SVG text (svg) or empty (none).
	QRCode string
	// Destination is where an EMAIL or SMS code went, masked; Method is the method enrolled.
	Destination string
	Method      string
	// PublicKey is a passkey enrollment's creation options (WEBAUTHN).
	PublicKey []byte
}

// Initiate starts an enrollment of the method whose route segment is route (totp) for sub.
//
// With an idempotency key (the Idempotency-Key header; "" for none) a retry finds the first
// attempt's enrollment: its ids are derived from the key by the status service, every step is
// repeated idempotently, and an enrollment still INITIATED is answered again with a new secret
// (the first answer may never have arrived; its secret stops working). One that has moved on is
// *KeyReusedError. The enrollment's expiry is the first attempt's.
//
// stepUpToken is the X-MFA-Token: the registry requires and spends it when sub already has a
// factor (ErrStepUpRequired's fault comes back as the error).
//
// f says where the codes of EMAIL and SMS go (its Method is set from route); TOTP ignores it.
func (s *Service) Initiate(ctx context.Context, route, sub string, qr QRFormat, key, stepUpToken string, f Factor) (Initiated, error) {
	m, ok := method.ByRoute(route)
	if !ok || !m.Enrolls {
		return Initiated{}, ErrUnsupportedMethod
	}
	if active, err := s.active(ctx, m); err != nil {
		return Initiated{}, err
	} else if !active {
		return Initiated{}, ErrMethodInactive
	}
	f.Method = m.Name
	now := time.Now
	if s.Now != nil {
		now = s.Now
	}
	exchangeID := uuid.NewString()
	in := Initiated{
		ExchangeID: exchangeID,
		// Named after the exchange id, the enrollment needs no exchange index in the status store.
		StatusID:  ids.StatusIDFor(exchangeID),
		ExpiresAt: now().UTC().Add(s.TTL).Truncate(time.Millisecond),
		ClientID:  s.ClientID,
		Sub:       sub,
	}
	keyed := key != ""
	var existing *Existing
	if keyed {
		var err error
		if in.StatusID, in.ExchangeID, existing, err = s.Status.KeyedIDs(ctx, sub, key); err != nil {
			return Initiated{}, fmt.Errorf("keyed ids: %w", err)
		}
		if existing != nil {
			if existing.State != "INITIATED" {
				return Initiated{}, &KeyReusedError{StatusID: in.StatusID, State: existing.State}
			}
			in.ExpiresAt = existing.ExpiresAt
		}
	}
	if m.Channel != "" || m.SignIn == method.Assertion {
		return s.initiateSent(ctx, in, m, f, stepUpToken, existing != nil)
	}
	// The URI must fit in a QR before anything is stored: a credential and an enrollment that
	// nobody can scan would only linger until they expire.
	if len(s.uri(in, worstCredential)) > MaxURIBytes {
		if len(s.uri(Initiated{ExchangeID: in.ExchangeID}, worstCredential)) > MaxURIBytes {
			return Initiated{}, errors.New("issuer, public URL and client id leave no room in the QR for a user id")
		}
		return Initiated{}, ErrSubTooLong
	}
	cred, err := s.Registry.CreatePending(ctx, in.StatusID, sub, in.ExpiresAt, StepUpProof{Token: stepUpToken, Retry: existing != nil}, f)
	if err != nil {
		return Initiated{}, fmt.Errorf("create credential: %w", err)
	}
	in.URI = s.uri(in, cred)
	if len(in.URI) > MaxURIBytes {
		// The registry made a longer credential than worstCredential: a bug, but nothing is
		// recorded yet.
		return Initiated{}, fmt.Errorf("otpauth URI of %d bytes does not fit in a QR", len(in.URI))
	}
	// The status is recorded before we answer, so a poll right after initiation finds it. A
	// keyed retry creates it again: the status service answers an identical create with the
	// stored enrollment and takes the new credential, and if the first attempt stopped before
	// it, this one completes it.
	if err := s.Status.Create(ctx, in.StatusID, in.ExchangeID, sub, m.Name, in.ExpiresAt, cred.Pending, Credential{}); err != nil {
		return Initiated{}, fmt.Errorf("record enrollment: %w", err)
	}
	in.Secret = cred.Secret
	switch qr {
	case QRSVG:
		in.QRCode, err = s.QR.SVG(in.URI)
	case QRNone:
	default:
		in.QRCode, err = s.QR.PNGDataURI(in.URI)
	}
	if err != nil {
		return Initiated{}, fmt.Errorf("render qr: %w", err)
	}
	return in, nil
}

// initiateSent starts the enrollment of an email address or a phone number (the registry sends
// the code and seals the pending credential, the status service records the enrollment with
// where the code went) or of a passkey (the registry makes the creation options and seals the
// registration session). Nothing to scan, no secret to hand out.
func (s *Service) initiateSent(ctx context.Context, in Initiated, m method.Method, f Factor, stepUpToken string, retry bool) (Initiated, error) {
	cred, err := s.Registry.CreatePending(ctx, in.StatusID, in.Sub, in.ExpiresAt, StepUpProof{Token: stepUpToken, Retry: retry}, f)
	if err != nil {
		return Initiated{}, fmt.Errorf("create credential: %w", err)
	}
	if err := s.Status.Create(ctx, in.StatusID, in.ExchangeID, in.Sub, m.Name, in.ExpiresAt, cred.Pending, cred); err != nil {
		return Initiated{}, fmt.Errorf("record enrollment: %w", err)
	}
	in.Destination, in.Method, in.PublicKey = cred.Destination, m.Name, cred.PublicKey
	return in, nil
}

// uri builds the otpauth URI: the Key Uri Format authenticator apps read
// (otpauth://totp/ISSUER:ACCOUNT?secret=…&issuer=…&algorithm=…&digits=…&period=…) plus cidaas's
// eid (exchange id), burl (where the companion reports back), cid, sub and t.
//
// It writes what url.Values.Encode and url.URL.String would (keys in sorted order, values
// query-escaped, the label path-escaped) without their map and intermediate strings; the test
// holds it to them.
func (s *Service) uri(in Initiated, cred Credential) string {
	var b strings.Builder
	b.Grow(200 + 3*(2*len(s.Issuer)+2*len(in.Sub)+len(s.PublicURL)+len(cred.Secret)+len(s.ClientID)+len(in.ExchangeID)))
	b.WriteString("otpauth://totp")
	b.WriteString((&url.URL{Path: "/" + s.Issuer + ":" + in.Sub}).EscapedPath())
	param := func(sep byte, k, v string) {
		b.WriteByte(sep)
		b.WriteString(k)
		b.WriteByte('=')
		b.WriteString(url.QueryEscape(v))
	}
	param('?', "algorithm", cred.Algorithm)
	param('&', "burl", s.PublicURL)
	param('&', "cid", s.ClientID)
	param('&', "digits", strconv.Itoa(cred.Digits))
	param('&', "eid", in.ExchangeID)
	param('&', "issuer", s.Issuer)
	param('&', "period", strconv.Itoa(cred.Period))
	param('&', "secret", cred.Secret)
	param('&', "sub", in.Sub)
	param('&', "t", "totp")
	return b.String()
}

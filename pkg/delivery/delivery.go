// Package delivery is the contract between the services that decide a message must reach a user
// (the device registry for one-time codes; later the notifier's own event consumer) and the
// notifier, the only process that holds mail and SMS credentials (DESIGN.md Part 3, "Delivery:
// the notifier service").
//
// A delivery request travels on the JetStream stream MFA_DELIVERIES (work queue, subject
// mfa.deliveries.v1.<channel>) so that it survives a notifier restart, and it is sealed with
// MFA_DELIVERY_KEY (AES-256-GCM) because it carries a one-time code and an address: nothing
// secret may rest in plain text in a stream or a data dir. The stream's Nats-Msg-Id is the
// delivery id, so a publisher's retry is stored once; the notifier delivers each id at least
// once and records what it delivered, so a redelivery is not sent again.
package delivery

import (
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/nats-io/nats.go/jetstream"
)

// The stream and its subjects.
const (
	Stream = "MFA_DELIVERIES"
	// SubjectPrefix + channel is where a request for that channel is published.
	SubjectPrefix  = "mfa.deliveries.v1."
	StreamSubjects = SubjectPrefix + ">"
	// Consumer is the notifier replicas' shared durable consumer.
	Consumer = "notifier"
)

// Channels.
const (
	Email = "email"
	SMS   = "sms"
)

// Kinds of message. A kind names the template the notifier renders.
const (
	// EnrollmentCode proves an address while enrolling it as a factor.
	EnrollmentCode = "enrollment_code"
	// SignInCode is a sign-in's one-time code.
	SignInCode = "signin_code"
	// DisableLink asks the user to confirm disabling MFA (ITS): Link is the confirmation URL
	// with its single-use token, valid until ExpiresAt.
	DisableLink = "disable_link"
)

// Request is one message to deliver. It is sealed whole (Seal) before it is published.
type Request struct {
	// ID is the delivery id: the same on every retry (the mail's Message-ID, the SMS webhook's
	// X-Mfaflow-Delivery), and the Nats-Msg-Id of the published request.
	ID      string `json:"id"`
	Channel string `json:"channel"`
	// To is the address (email) or the E.164 number (sms).
	To string `json:"to"`
	// Masked is To as answers and events may show it.
	Masked string `json:"masked"`
	Kind   string `json:"kind"`
	// Code is the one-time code of EnrollmentCode and SignInCode.
	Code string `json:"code,omitempty"`
	// Link is the confirmation URL of DisableLink (it holds a single-use token: a secret).
	Link string `json:"link,omitempty"`
	// Locale picks the template's language (en, de); empty is the notifier's default.
	Locale string `json:"locale,omitempty"`
	Sub    string `json:"sub"`
	// StatusID is the enrollment or sign-in whose status object shows the delivery; the
	// notifier reports the outcome to the status service under it.
	StatusID string `json:"status_id,omitempty"`
	// ExpiresAt is when the message is no use any more (the code's expiry): the notifier
	// retries until then and then gives up (mfa.delivery.failed).
	ExpiresAt time.Time `json:"expires_at"`
}

// Subject is the subject a request for channel is published on.
func Subject(channel string) string { return SubjectPrefix + channel }

// Validate reports what makes r undeliverable.
func (r Request) Validate() error {
	switch {
	case r.ID == "" || r.To == "" || r.Kind == "" || r.Sub == "":
		return errors.New("delivery: id, to, kind and sub are required")
	case r.Channel != Email && r.Channel != SMS:
		return fmt.Errorf("delivery: unknown channel %q", r.Channel)
	case r.ExpiresAt.IsZero():
		return errors.New("delivery: expires_at is required")
	}
	return nil
}

// KeySize is the length of MFA_DELIVERY_KEY.
const KeySize = 32

// aad binds a sealed request to this format, so a value sealed for another purpose with the
// same key does not open as a request.
var aad = []byte("mfaflow delivery request v1")

// Seal encrypts r with key (AES-256-GCM, random nonce).
func Seal(key []byte, r Request) ([]byte, error) {
	if err := r.Validate(); err != nil {
		return nil, err
	}
	aead, err := newAEAD(key)
	if err != nil {
		return nil, err
	}
	plain, err := json.Marshal(r)
	if err != nil {
		return nil, err
	}
	nonce := make([]byte, aead.NonceSize(), aead.NonceSize()+len(plain)+aead.Overhead())
	if _, err := rand.Read(nonce); err != nil {
		return nil, err
	}
	return aead.Seal(nonce, nonce, plain, aad), nil
}

// ErrUnreadable: a sealed request did not open (another key, or damaged).
var ErrUnreadable = errors.New("delivery: request does not open with this key")

// Open decrypts a request sealed with key.
func Open(key, sealed []byte) (Request, error) {
	aead, err := newAEAD(key)
	if err != nil {
		return Request{}, err
	}
	if len(sealed) < aead.NonceSize()+aead.Overhead() {
		return Request{}, ErrUnreadable
	}
	n := aead.NonceSize()
	plain, err := aead.Open(nil, sealed[:n], sealed[n:], aad)
	if err != nil {
		return Request{}, ErrUnreadable
	}
	var r Request
	if err := json.Unmarshal(plain, &r); err != nil {
		return Request{}, fmt.Errorf("%w: %v", ErrUnreadable, err)
	}
	return r, r.Validate()
}

func newAEAD(key []byte) (cipher.AEAD, error) {
	if len(key) != KeySize {
		return nil, fmt.Errorf("delivery: key must be %d bytes, got %d", KeySize, len(key))
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	return cipher.NewGCM(block)
}

// StreamConfig is MFA_DELIVERIES as mfaflow creates it: a work queue (a request is gone once the
// notifier acknowledged it), file storage, requests older than the longest code life dropped,
// and a dedupe window over which a publisher's retry of the same id is stored once.
func StreamConfig() jetstream.StreamConfig {
	return jetstream.StreamConfig{
		Name:        Stream,
		Description: "mfaflow deliveries for the notifier (sealed: codes and addresses are never in plain text)",
		Subjects:    []string{StreamSubjects},
		Storage:     jetstream.FileStorage,
		Retention:   jetstream.WorkQueuePolicy,
		MaxAge:      time.Hour,
		Duplicates:  10 * time.Minute,
	}
}

// Publisher publishes sealed requests on MFA_DELIVERIES.
type Publisher struct {
	JS  jetstream.JetStream
	Key []byte
}

// Publish seals r and publishes it with its id as Nats-Msg-Id; it returns once the stream has
// stored it.
func (p *Publisher) Publish(ctx context.Context, r Request) error {
	sealed, err := Seal(p.Key, r)
	if err != nil {
		return err
	}
	if _, err := p.JS.Publish(ctx, Subject(r.Channel), sealed, jetstream.WithMsgID(r.ID)); err != nil {
		return fmt.Errorf("publish delivery: %w", err)
	}
	return nil
}

// MaskEmail shows an address's first character and its domain: a***@example.org.
func MaskEmail(addr string) string {
	at := strings.LastIndexByte(addr, '@')
	if at <= 0 {
		return "***"
	}
	r, _ := utf8.DecodeRuneInString(addr)
	return string(r) + "***" + addr[at:]
}

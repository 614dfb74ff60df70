package mongo

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/mfaflow/mfaflow/pkg/ids"
	"github.com/mfaflow/mfaflow/pkg/mongodoc"
	"github.com/mfaflow/mfaflow/pkg/outbox"
	"github.com/mfaflow/mfaflow/services/status/internal/signin"
	"github.com/mfaflow/mfaflow/services/status/internal/store"
	"go.mongodb.org/mongo-driver/v2/bson"
)

// SignInStore implements signin.Store on the enrollments collection of a Store (Store.SignIns),
// with the same indexes, told apart from enrollments by the document's kind.
type SignInStore struct {
	docs *mongodoc.Store[signInDoc]
}

var _ signin.Store = (*SignInStore)(nil)

// kindSignIn is the kind of a sign-in's document. The word is the storage contract: documents
// written before the sign-in had its own aggregate carry it.
const kindSignIn = "authentication"

// signInDoc is the stored model of a sign-in; field names are the storage contract (the common
// ones are enrollmentDoc's).
type signInDoc struct {
	ID             string    `bson:"id"`
	ExchangeID     string    `bson:"exchange_id"`
	Sub            string    `bson:"sub"`
	Method         string    `bson:"method"`
	State          string    `bson:"state"`
	CreatedAt      time.Time `bson:"created_at"`
	UpdatedAt      time.Time `bson:"updated_at"`
	ExpiresAt      time.Time `bson:"expires_at"`
	PHID           string    `bson:"ph_id,omitempty"`
	FailedAttempts int       `bson:"failed_attempts,omitempty"`
	Seq            int64     `bson:"seq,omitempty"`
	// Kind is always kindSignIn.
	Kind      string            `bson:"kind"`
	Initiator string            `bson:"initiator,omitempty"`
	ClientID  string            `bson:"client_id,omitempty"`
	Context   map[string]string `bson:"context,omitempty"`
	AuthTime  *time.Time        `bson:"auth_time,omitempty"`
	// StepUpUsedAt: the sign-in's mfa_token was spent as a step-up proof.
	StepUpUsedAt *time.Time `bson:"step_up_used_at,omitempty"`
	// Push sign-ins only: the number the frontend shows and the device's candidates.
	Number     string   `bson:"number,omitempty"`
	Candidates []string `bson:"candidates,omitempty"`
	// EMAIL and SMS sign-ins only: the code sent, and its sealed keyed hash (the registry's).
	Sent      *store.SentDoc `bson:"sent,omitempty"`
	Challenge []byte         `bson:"challenge,omitempty"`
	// WEBAUTHN sign-ins only: the passkey's authenticator verified the user (amr "user"), and
	// the request options the initiation answered (JSON), while the sign-in is open.
	UserVerified bool   `bson:"user_verified,omitempty"`
	PublicKey    []byte `bson:"public_key,omitempty"`
	// OpenUntil is ExpiresAt while the sign-in is not terminal, absent after: the sweep's index.
	OpenUntil *time.Time `bson:"open_until,omitempty"`
	// GCAt is when the document may be deleted.
	GCAt time.Time `bson:"gc_at"`
}

func toSignInDoc(a signin.Authentication) signInDoc {
	d := signInDoc{
		ID: a.ID, ExchangeID: a.ExchangeID, Sub: a.Sub, Method: a.Method, State: string(a.State),
		CreatedAt: a.CreatedAt, UpdatedAt: a.UpdatedAt, ExpiresAt: a.ExpiresAt,
		PHID: a.PHID, FailedAttempts: a.FailedAttempts, Seq: int64(a.Seq), Kind: kindSignIn,
		Initiator: a.Initiator, ClientID: a.ClientID, Context: a.Context,
		Number: a.Number, Candidates: a.Candidates, Sent: store.ToSentDoc(a.Sent), Challenge: a.Challenge, UserVerified: a.UserVerified, PublicKey: a.PublicKey,
		GCAt: later(a.UpdatedAt, a.ExpiresAt).Add(Retention),
	}
	if !a.AuthTime.IsZero() {
		at := a.AuthTime
		d.AuthTime = &at
	}
	if !a.StepUpUsedAt.IsZero() {
		at := a.StepUpUsedAt
		d.StepUpUsedAt = &at
	}
	if !a.State.Terminal() {
		open := a.ExpiresAt
		d.OpenUntil = &open
	}
	return d
}

func toSignIn(d signInDoc, version uint64) signin.Authentication {
	a := signin.Authentication{
		ID: d.ID, ExchangeID: d.ExchangeID, Sub: d.Sub, Method: d.Method, State: signin.State(d.State),
		CreatedAt: d.CreatedAt, UpdatedAt: d.UpdatedAt, ExpiresAt: d.ExpiresAt,
		PHID: d.PHID, FailedAttempts: d.FailedAttempts, Version: version, Seq: uint64(d.Seq),
		Initiator: d.Initiator, ClientID: d.ClientID, Context: d.Context,
		Number: d.Number, Candidates: d.Candidates, Sent: d.Sent.Sent(), Challenge: d.Challenge, UserVerified: d.UserVerified, PublicKey: d.PublicKey,
	}
	if d.AuthTime != nil {
		a.AuthTime = *d.AuthTime
	}
	if d.StepUpUsedAt != nil {
		a.StepUpUsedAt = *d.StepUpUsedAt
	}
	return a
}

// Create implements signin.Store: one insert; the unique indexes on _id and exchange_id refuse
// a second status object with either.
func (s *SignInStore) Create(ctx context.Context, a signin.Authentication, msgs ...outbox.Message) (signin.Authentication, error) {
	if !ids.Valid(a.ID) || !ids.Valid(a.ExchangeID) {
		return a, fmt.Errorf("create sign-in: %w: malformed id", signin.ErrBadRequest)
	}
	v, err := s.docs.Create(ctx, a.ID, toSignInDoc(a), msgs...)
	if err != nil {
		if errors.Is(err, mongodoc.ErrExists) {
			return a, fmt.Errorf("create sign-in: %w: id or exchange id taken", signin.ErrConflict)
		}
		return a, fmt.Errorf("create sign-in: %w", err)
	}
	a.Version = v
	return a, nil
}

// Get implements signin.Store: an enrollment's document is not found.
func (s *SignInStore) Get(ctx context.Context, id string) (signin.Authentication, error) {
	if !ids.Valid(id) {
		return signin.Authentication{}, signin.ErrNotFound
	}
	d, v, err := s.docs.Get(ctx, id)
	if errors.Is(err, mongodoc.ErrNotFound) || err == nil && d.Kind != kindSignIn {
		return signin.Authentication{}, signin.ErrNotFound
	}
	if err != nil {
		return signin.Authentication{}, fmt.Errorf("get sign-in: %w", err)
	}
	return toSignIn(d, v), nil
}

// GetByExchangeID implements signin.Store through the exchange_id index.
func (s *SignInStore) GetByExchangeID(ctx context.Context, exchangeID string) (signin.Authentication, error) {
	if !ids.Valid(exchangeID) {
		return signin.Authentication{}, signin.ErrNotFound
	}
	found, err := s.docs.Find(ctx, bson.D{{Key: mongodoc.DocField("exchange_id"), Value: exchangeID}}, 1)
	if err != nil {
		return signin.Authentication{}, fmt.Errorf("get sign-in by exchange id: %w", err)
	}
	if len(found) == 0 || found[0].Doc.Kind != kindSignIn {
		return signin.Authentication{}, signin.ErrNotFound
	}
	return toSignIn(found[0].Doc, found[0].Version), nil
}

// Update implements signin.Store.
func (s *SignInStore) Update(ctx context.Context, a signin.Authentication, msgs ...outbox.Message) (signin.Authentication, error) {
	if !ids.Valid(a.ID) {
		return a, signin.ErrNotFound
	}
	v, err := s.docs.Update(ctx, a.ID, a.Version, toSignInDoc(a), msgs...)
	switch {
	case errors.Is(err, mongodoc.ErrStale):
		return a, signin.ErrStale
	case errors.Is(err, mongodoc.ErrNotFound):
		return a, signin.ErrNotFound
	case errors.Is(err, mongodoc.ErrExists):
		return a, fmt.Errorf("update sign-in: %w: exchange id taken", signin.ErrConflict)
	case err != nil:
		return a, fmt.Errorf("update sign-in: %w", err)
	}
	a.Version = v
	return a, nil
}

// DueForExpiry implements signin.Store through the open_until index, as Store.DueForExpiry.
func (s *SignInStore) DueForExpiry(ctx context.Context, now time.Time) ([]signin.Authentication, error) {
	found, err := s.docs.Find(ctx, bson.D{
		{Key: mongodoc.DocField("open_until"), Value: bson.D{{Key: "$lte", Value: now}}},
		{Key: mongodoc.DocField("kind"), Value: kindSignIn},
	}, dueBatch)
	if err != nil {
		return nil, fmt.Errorf("list open sign-ins: %w", err)
	}
	var out []signin.Authentication
	for _, f := range found {
		if a := toSignIn(f.Doc, f.Version); a.DueToExpire(now) {
			out = append(out, a)
		}
	}
	return out, nil
}

package kv

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/mfaflow/mfaflow/pkg/ids"
	"github.com/mfaflow/mfaflow/pkg/kvdoc"
	"github.com/mfaflow/mfaflow/pkg/outbox"
	"github.com/mfaflow/mfaflow/services/status/internal/signin"
	"github.com/mfaflow/mfaflow/services/status/internal/store"
)

// SignInStore implements signin.Store on the bucket of a Store (Store.SignIns): the same keys
// (e.<status_id>, x.<exchange_id>, o.<expiry>.<status_id>) as enrollments, told apart by the
// document's kind.
type SignInStore struct {
	s     *Store
	docs  *kvdoc.Store[signInDoc]
	sweep sweepCursor
}

var _ signin.Store = (*SignInStore)(nil)

// kindSignIn is the kind of a sign-in's document. The word is the storage contract: documents
// written before the sign-in had its own aggregate carry it.
const kindSignIn = "authentication"

// signInDoc is the stored model of a sign-in; field names are the storage contract (the common
// ones are enrollmentDoc's).
type signInDoc struct {
	ID             string    `json:"id"`
	ExchangeID     string    `json:"exchange_id"`
	Sub            string    `json:"sub"`
	Method         string    `json:"method"`
	State          string    `json:"state"`
	CreatedAt      time.Time `json:"created_at"`
	UpdatedAt      time.Time `json:"updated_at"`
	ExpiresAt      time.Time `json:"expires_at"`
	PHID           string    `json:"ph_id,omitempty"`
	FailedAttempts int       `json:"failed_attempts,omitempty"`
	Seq            uint64    `json:"seq,omitempty"`
	// Kind is always kindSignIn.
	Kind      string            `json:"kind"`
	Initiator string            `json:"initiator,omitempty"`
	ClientID  string            `json:"client_id,omitempty"`
	Context   map[string]string `json:"context,omitempty"`
	AuthTime  time.Time         `json:"auth_time,omitzero"`
	// StepUpUsedAt: the sign-in's mfa_token was spent as a step-up proof.
	StepUpUsedAt time.Time `json:"step_up_used_at,omitzero"`
	// Push sign-ins only: the number the frontend shows and the device's candidates.
	Number     string   `json:"number,omitempty"`
	Candidates []string `json:"candidates,omitempty"`
	// EMAIL and SMS sign-ins only: the code sent, and its sealed keyed hash (the registry's).
	Sent      *store.SentDoc `json:"sent,omitempty"`
	Challenge []byte         `json:"challenge,omitempty"`
	// WEBAUTHN sign-ins only: the passkey's authenticator verified the user (amr "user"), and
	// the request options the initiation answered, while the sign-in is open.
	UserVerified bool            `json:"user_verified,omitempty"`
	PublicKey    json.RawMessage `json:"public_key,omitempty"`
}

func toSignInDoc(a signin.Authentication) signInDoc {
	return signInDoc{
		ID: a.ID, ExchangeID: a.ExchangeID, Sub: a.Sub, Method: a.Method, State: string(a.State),
		CreatedAt: a.CreatedAt, UpdatedAt: a.UpdatedAt, ExpiresAt: a.ExpiresAt,
		PHID: a.PHID, FailedAttempts: a.FailedAttempts, Seq: a.Seq, Kind: kindSignIn,
		Initiator: a.Initiator, ClientID: a.ClientID, Context: a.Context, AuthTime: a.AuthTime,
		StepUpUsedAt: a.StepUpUsedAt, Number: a.Number, Candidates: a.Candidates,
		Sent: store.ToSentDoc(a.Sent), Challenge: a.Challenge, UserVerified: a.UserVerified, PublicKey: a.PublicKey,
	}
}

func toSignIn(d signInDoc, rev uint64) signin.Authentication {
	return signin.Authentication{
		ID: d.ID, ExchangeID: d.ExchangeID, Sub: d.Sub, Method: d.Method, State: signin.State(d.State),
		CreatedAt: d.CreatedAt, UpdatedAt: d.UpdatedAt, ExpiresAt: d.ExpiresAt,
		PHID: d.PHID, FailedAttempts: d.FailedAttempts, Version: rev, Seq: d.Seq,
		Initiator: d.Initiator, ClientID: d.ClientID, Context: d.Context, AuthTime: d.AuthTime,
		StepUpUsedAt: d.StepUpUsedAt, Number: d.Number, Candidates: d.Candidates,
		Sent: d.Sent.Sent(), Challenge: d.Challenge, UserVerified: d.UserVerified, PublicKey: d.PublicKey,
	}
}

// signInErr translates a shared step's error into the sign-in domain's.
func signInErr(op string, err error) error {
	switch {
	case errors.Is(err, errTaken):
		return fmt.Errorf("%s: %w: %s", op, signin.ErrConflict, err)
	case errors.Is(err, errStale):
		return signin.ErrStale
	case errors.Is(err, errGone):
		return signin.ErrNotFound
	}
	return fmt.Errorf("%s: %w", op, err)
}

// Create implements signin.Store.
func (st *SignInStore) Create(ctx context.Context, a signin.Authentication, msgs ...outbox.Message) (signin.Authentication, error) {
	if !validID(a.ID) || !validID(a.ExchangeID) {
		return a, fmt.Errorf("create sign-in: %w: malformed id", signin.ErrBadRequest)
	}
	rev, err := st.s.create(ctx, a.ID, a.ExchangeID, a.ExpiresAt, func() (uint64, error) {
		return st.docs.Create(ctx, docKey(a.ID), toSignInDoc(a), msgs...)
	})
	if rev != 0 {
		a.Version = rev
	}
	if err != nil {
		return a, signInErr("create sign-in", err)
	}
	return a, nil
}

// Get implements signin.Store: an enrollment's document is not found.
func (st *SignInStore) Get(ctx context.Context, id string) (signin.Authentication, error) {
	d, rev, err := st.get(ctx, id)
	if err != nil {
		return signin.Authentication{}, err
	}
	if d.Kind != kindSignIn {
		return signin.Authentication{}, signin.ErrNotFound
	}
	return toSignIn(d, rev), nil
}

// get reads document id whatever its kind.
func (st *SignInStore) get(ctx context.Context, id string) (signInDoc, uint64, error) {
	if !validID(id) {
		return signInDoc{}, 0, signin.ErrNotFound
	}
	d, rev, err := st.docs.Get(ctx, docKey(id))
	if err != nil {
		if errors.Is(err, kvdoc.ErrNotFound) {
			return signInDoc{}, 0, signin.ErrNotFound
		}
		return signInDoc{}, 0, fmt.Errorf("get sign-in: %w", err)
	}
	return d, rev, nil
}

// GetByExchangeID implements signin.Store: one read for a sign-in named ids.StatusIDFor its
// exchange id (every unkeyed one), the exchange index for a keyed one.
func (st *SignInStore) GetByExchangeID(ctx context.Context, exchangeID string) (signin.Authentication, error) {
	if !validID(exchangeID) {
		return signin.Authentication{}, signin.ErrNotFound
	}
	a, err := st.Get(ctx, ids.StatusIDFor(exchangeID))
	if err == nil && a.ExchangeID == exchangeID {
		return a, nil
	}
	if err != nil && !errors.Is(err, signin.ErrNotFound) {
		return signin.Authentication{}, err
	}
	id, err := st.s.indexedExchange(ctx, exchangeID)
	if err != nil {
		return signin.Authentication{}, signInErr("get sign-in by exchange id", err)
	}
	return st.Get(ctx, id)
}

// Update implements signin.Store.
func (st *SignInStore) Update(ctx context.Context, a signin.Authentication, msgs ...outbox.Message) (signin.Authentication, error) {
	rev, err := st.docs.Update(ctx, docKey(a.ID), a.Version, toSignInDoc(a), msgs...)
	if err := st.s.updated(ctx, a.ID, a.ExpiresAt, a.State.Terminal(), err); err != nil {
		return a, signInErr("update sign-in", err)
	}
	a.Version = rev
	return a, nil
}

// DueForExpiry implements signin.Store. It drops index entries of sign-ins that are no longer
// open and leaves those of enrollments to their own sweep.
func (st *SignInStore) DueForExpiry(ctx context.Context, now time.Time) ([]signin.Authentication, error) {
	st.sweep.mu.Lock()
	defer st.sweep.mu.Unlock()
	due, err := st.s.due(ctx, now, &st.sweep)
	if err != nil {
		return nil, err
	}
	var out []signin.Authentication
	for _, de := range due {
		d, rev, err := st.get(ctx, de.id)
		if err == nil && d.Kind != kindSignIn {
			continue // an enrollment's entry
		}
		a := toSignIn(d, rev)
		if errors.Is(err, signin.ErrNotFound) || err == nil && a.State.Terminal() {
			_ = st.s.kv.Delete(ctx, de.key)
			continue
		}
		if err != nil {
			return out, err
		}
		if a.DueToExpire(now) {
			out = append(out, a)
		}
	}
	st.sweep.sweptThrough = now.Unix()
	return out, nil
}

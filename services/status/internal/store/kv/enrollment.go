package kv

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/mfaflow/mfaflow/pkg/ids"
	"github.com/mfaflow/mfaflow/pkg/kvdoc"
	"github.com/mfaflow/mfaflow/pkg/outbox"
	"github.com/mfaflow/mfaflow/services/status/internal/enrollment"
	"github.com/mfaflow/mfaflow/services/status/internal/store"
)

var _ enrollment.Store = (*Store)(nil)

// enrollmentDoc is the stored model of an enrollment; field names are the storage contract
// (signInDoc shares the common ones).
type enrollmentDoc struct {
	ID             string    `json:"id"`
	ExchangeID     string    `json:"exchange_id"`
	Sub            string    `json:"sub"`
	Method         string    `json:"method"`
	State          string    `json:"state"`
	CreatedAt      time.Time `json:"created_at"`
	UpdatedAt      time.Time `json:"updated_at"`
	ExpiresAt      time.Time `json:"expires_at"`
	DeviceID       string    `json:"device_id,omitempty"`
	DeviceName     string    `json:"device_name,omitempty"`
	DevicePlatform string    `json:"device_platform,omitempty"`
	RegisteredID   string    `json:"registered_device_id,omitempty"`
	PHID           string    `json:"ph_id,omitempty"`
	FailedAttempts int       `json:"failed_attempts,omitempty"`
	Seq            uint64    `json:"seq,omitempty"`
	// Kind is empty for an enrollment (it is never written); a document with a kind is another
	// aggregate's (a sign-in's) and no enrollment.
	Kind string `json:"kind,omitempty"`
	// PendingCredential is the registry's sealed pending credential (opaque, base64 in JSON)
	// while the enrollment is open.
	PendingCredential []byte `json:"pending_credential,omitempty"`
	// EnrollProof is the keyed hash of the enroll frame that made the enrollment ENROLLED
	// (never the code), so the companion may repeat the frame for a short while.
	EnrollProof []byte `json:"enroll_proof,omitempty"`
	// Sent: the code of an EMAIL or SMS enrollment (where it went, its delivery).
	Sent *store.SentDoc `json:"sent,omitempty"`
}

func toEnrollmentDoc(e enrollment.Enrollment) enrollmentDoc {
	return enrollmentDoc{
		ID: e.ID, ExchangeID: e.ExchangeID, Sub: e.Sub, Method: e.Method, State: string(e.State),
		CreatedAt: e.CreatedAt, UpdatedAt: e.UpdatedAt, ExpiresAt: e.ExpiresAt,
		DeviceID: e.Device.DeviceID, DeviceName: e.Device.Name, DevicePlatform: e.Device.Platform,
		RegisteredID: e.DeviceID, PHID: e.PHID, FailedAttempts: e.FailedAttempts, Seq: e.Seq,
		PendingCredential: e.PendingCredential, EnrollProof: e.EnrollProof, Sent: store.ToSentDoc(e.Sent),
	}
}

func toEnrollment(d enrollmentDoc, rev uint64) enrollment.Enrollment {
	return enrollment.Enrollment{
		ID: d.ID, ExchangeID: d.ExchangeID, Sub: d.Sub, Method: d.Method, State: enrollment.State(d.State),
		CreatedAt: d.CreatedAt, UpdatedAt: d.UpdatedAt, ExpiresAt: d.ExpiresAt,
		Device:   enrollment.Device{DeviceID: d.DeviceID, Name: d.DeviceName, Platform: d.DevicePlatform},
		DeviceID: d.RegisteredID, PHID: d.PHID, FailedAttempts: d.FailedAttempts, Version: rev, Seq: d.Seq,
		PendingCredential: d.PendingCredential, EnrollProof: d.EnrollProof, Sent: d.Sent.Sent(),
	}
}

// enrollmentErr translates a shared step's error into the enrollment domain's.
func enrollmentErr(op string, err error) error {
	switch {
	case errors.Is(err, errTaken):
		return fmt.Errorf("%s: %w: %s", op, enrollment.ErrConflict, err)
	case errors.Is(err, errStale):
		return enrollment.ErrStale
	case errors.Is(err, errGone):
		return enrollment.ErrNotFound
	}
	return fmt.Errorf("%s: %w", op, err)
}

// Create implements enrollment.Store.
func (s *Store) Create(ctx context.Context, e enrollment.Enrollment, msgs ...outbox.Message) (enrollment.Enrollment, error) {
	if !validID(e.ID) || !validID(e.ExchangeID) {
		return e, fmt.Errorf("create enrollment: %w: malformed id", enrollment.ErrBadRequest)
	}
	rev, err := s.create(ctx, e.ID, e.ExchangeID, e.ExpiresAt, func() (uint64, error) {
		return s.docs.Create(ctx, docKey(e.ID), toEnrollmentDoc(e), msgs...)
	})
	if rev != 0 {
		e.Version = rev
	}
	if err != nil {
		return e, enrollmentErr("create enrollment", err)
	}
	return e, nil
}

// Get implements enrollment.Store: a sign-in's document is not found.
func (s *Store) Get(ctx context.Context, id string) (enrollment.Enrollment, error) {
	d, rev, err := s.getEnrollment(ctx, id)
	if err != nil {
		return enrollment.Enrollment{}, err
	}
	if d.Kind != "" {
		return enrollment.Enrollment{}, enrollment.ErrNotFound
	}
	return toEnrollment(d, rev), nil
}

// getEnrollment reads document id whatever its kind.
func (s *Store) getEnrollment(ctx context.Context, id string) (enrollmentDoc, uint64, error) {
	if !validID(id) {
		return enrollmentDoc{}, 0, enrollment.ErrNotFound
	}
	d, rev, err := s.docs.Get(ctx, docKey(id))
	if err != nil {
		if errors.Is(err, kvdoc.ErrNotFound) {
			return enrollmentDoc{}, 0, enrollment.ErrNotFound
		}
		return enrollmentDoc{}, 0, fmt.Errorf("get enrollment: %w", err)
	}
	return d, rev, nil
}

// GetByExchangeID implements enrollment.Store.
func (s *Store) GetByExchangeID(ctx context.Context, exchangeID string) (enrollment.Enrollment, error) {
	if !validID(exchangeID) {
		return enrollment.Enrollment{}, enrollment.ErrNotFound
	}
	e, err := s.Get(ctx, ids.StatusIDFor(exchangeID))
	if err == nil && e.ExchangeID == exchangeID {
		return e, nil
	}
	if err != nil && !errors.Is(err, enrollment.ErrNotFound) {
		return enrollment.Enrollment{}, err
	}
	id, err := s.indexedExchange(ctx, exchangeID)
	if err != nil {
		return enrollment.Enrollment{}, enrollmentErr("get enrollment by exchange id", err)
	}
	return s.Get(ctx, id)
}

// Update implements enrollment.Store.
func (s *Store) Update(ctx context.Context, e enrollment.Enrollment, msgs ...outbox.Message) (enrollment.Enrollment, error) {
	rev, err := s.docs.Update(ctx, docKey(e.ID), e.Version, toEnrollmentDoc(e), msgs...)
	if err := s.updated(ctx, e.ID, e.ExpiresAt, e.State.Terminal(), err); err != nil {
		return e, enrollmentErr("update enrollment", err)
	}
	e.Version = rev
	return e, nil
}

// DueForExpiry implements enrollment.Store. It drops index entries of enrollments that are no
// longer open and leaves those of sign-ins to their own sweep.
func (s *Store) DueForExpiry(ctx context.Context, now time.Time) ([]enrollment.Enrollment, error) {
	s.sweep.mu.Lock()
	defer s.sweep.mu.Unlock()
	due, err := s.due(ctx, now, &s.sweep)
	if err != nil {
		return nil, err
	}
	var out []enrollment.Enrollment
	for _, de := range due {
		d, rev, err := s.getEnrollment(ctx, de.id)
		if err == nil && d.Kind != "" {
			continue // a sign-in's entry
		}
		e := toEnrollment(d, rev)
		if errors.Is(err, enrollment.ErrNotFound) || err == nil && e.State.Terminal() {
			_ = s.kv.Delete(ctx, de.key)
			continue
		}
		if err != nil {
			return out, err
		}
		if e.DueToExpire(now) {
			out = append(out, e)
		}
	}
	s.sweep.sweptThrough = now.Unix()
	return out, nil
}

package mongo

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/mfaflow/mfaflow/pkg/ids"
	"github.com/mfaflow/mfaflow/pkg/mongodoc"
	"github.com/mfaflow/mfaflow/pkg/outbox"
	"github.com/mfaflow/mfaflow/services/status/internal/enrollment"
	"github.com/mfaflow/mfaflow/services/status/internal/store"
	"go.mongodb.org/mongo-driver/v2/bson"
)

// enrollmentDoc is the stored model of an enrollment; field names are the storage contract
// (signInDoc shares the common ones).
type enrollmentDoc struct {
	ID             string    `bson:"id"`
	ExchangeID     string    `bson:"exchange_id"`
	Sub            string    `bson:"sub"`
	Method         string    `bson:"method"`
	State          string    `bson:"state"`
	CreatedAt      time.Time `bson:"created_at"`
	UpdatedAt      time.Time `bson:"updated_at"`
	ExpiresAt      time.Time `bson:"expires_at"`
	DeviceID       string    `bson:"device_id,omitempty"`
	DeviceName     string    `bson:"device_name,omitempty"`
	DevicePlatform string    `bson:"device_platform,omitempty"`
	RegisteredID   string    `bson:"registered_device_id,omitempty"`
	PHID           string    `bson:"ph_id,omitempty"`
	FailedAttempts int       `bson:"failed_attempts,omitempty"`
	Seq            int64     `bson:"seq,omitempty"`
	// Kind is empty for an enrollment (it is never written); a document with a kind is another
	// aggregate's (a sign-in's) and no enrollment.
	Kind string `bson:"kind,omitempty"`
	// PendingCredential is the registry's sealed pending credential while the enrollment is
	// open (opaque binary).
	PendingCredential []byte `bson:"pending_credential,omitempty"`
	// EnrollProof is the keyed hash of the enroll frame that made the enrollment ENROLLED
	// (never the code), so the companion may repeat the frame for a short while.
	EnrollProof []byte `bson:"enroll_proof,omitempty"`
	// Sent: the code of an EMAIL or SMS enrollment (where it went, its delivery).
	Sent *store.SentDoc `bson:"sent,omitempty"`
	// OpenUntil is ExpiresAt while the enrollment is not terminal, absent after: the sweep's index.
	OpenUntil *time.Time `bson:"open_until,omitempty"`
	// GCAt is when the document may be deleted.
	GCAt time.Time `bson:"gc_at"`
}

func toEnrollmentDoc(e enrollment.Enrollment) enrollmentDoc {
	d := enrollmentDoc{
		ID: e.ID, ExchangeID: e.ExchangeID, Sub: e.Sub, Method: e.Method, State: string(e.State),
		CreatedAt: e.CreatedAt, UpdatedAt: e.UpdatedAt, ExpiresAt: e.ExpiresAt,
		DeviceID: e.Device.DeviceID, DeviceName: e.Device.Name, DevicePlatform: e.Device.Platform,
		RegisteredID: e.DeviceID, PHID: e.PHID, FailedAttempts: e.FailedAttempts, Seq: int64(e.Seq),
		PendingCredential: e.PendingCredential, EnrollProof: e.EnrollProof, Sent: store.ToSentDoc(e.Sent),
		GCAt: later(e.UpdatedAt, e.ExpiresAt).Add(Retention),
	}
	if !e.State.Terminal() {
		open := e.ExpiresAt
		d.OpenUntil = &open
	}
	return d
}

func toEnrollment(d enrollmentDoc, version uint64) enrollment.Enrollment {
	return enrollment.Enrollment{
		ID: d.ID, ExchangeID: d.ExchangeID, Sub: d.Sub, Method: d.Method, State: enrollment.State(d.State),
		CreatedAt: d.CreatedAt, UpdatedAt: d.UpdatedAt, ExpiresAt: d.ExpiresAt,
		Device:   enrollment.Device{DeviceID: d.DeviceID, Name: d.DeviceName, Platform: d.DevicePlatform},
		DeviceID: d.RegisteredID, PHID: d.PHID, FailedAttempts: d.FailedAttempts, Version: version, Seq: uint64(d.Seq),
		PendingCredential: d.PendingCredential, EnrollProof: d.EnrollProof, Sent: d.Sent.Sent(),
	}
}

// notSignIn selects the documents that are enrollments (no kind, or not a sign-in's).
var notSignIn = bson.E{Key: mongodoc.DocField("kind"), Value: bson.D{{Key: "$ne", Value: kindSignIn}}}

// Create implements enrollment.Store: one insert; the unique indexes on _id and exchange_id
// refuse a second status object with either.
func (s *Store) Create(ctx context.Context, e enrollment.Enrollment, msgs ...outbox.Message) (enrollment.Enrollment, error) {
	if !ids.Valid(e.ID) || !ids.Valid(e.ExchangeID) {
		return e, fmt.Errorf("create enrollment: %w: malformed id", enrollment.ErrBadRequest)
	}
	v, err := s.docs.Create(ctx, e.ID, toEnrollmentDoc(e), msgs...)
	if err != nil {
		if errors.Is(err, mongodoc.ErrExists) {
			return e, fmt.Errorf("create enrollment: %w: id or exchange id taken", enrollment.ErrConflict)
		}
		return e, fmt.Errorf("create enrollment: %w", err)
	}
	e.Version = v
	return e, nil
}

// Get implements enrollment.Store: a sign-in's document is not found.
func (s *Store) Get(ctx context.Context, id string) (enrollment.Enrollment, error) {
	if !ids.Valid(id) {
		return enrollment.Enrollment{}, enrollment.ErrNotFound
	}
	d, v, err := s.docs.Get(ctx, id)
	if errors.Is(err, mongodoc.ErrNotFound) || err == nil && d.Kind != "" {
		return enrollment.Enrollment{}, enrollment.ErrNotFound
	}
	if err != nil {
		return enrollment.Enrollment{}, fmt.Errorf("get enrollment: %w", err)
	}
	return toEnrollment(d, v), nil
}

// GetByExchangeID implements enrollment.Store through the exchange_id index.
func (s *Store) GetByExchangeID(ctx context.Context, exchangeID string) (enrollment.Enrollment, error) {
	if !ids.Valid(exchangeID) {
		return enrollment.Enrollment{}, enrollment.ErrNotFound
	}
	found, err := s.docs.Find(ctx, bson.D{{Key: mongodoc.DocField("exchange_id"), Value: exchangeID}}, 1)
	if err != nil {
		return enrollment.Enrollment{}, fmt.Errorf("get enrollment by exchange id: %w", err)
	}
	if len(found) == 0 || found[0].Doc.Kind != "" {
		return enrollment.Enrollment{}, enrollment.ErrNotFound
	}
	return toEnrollment(found[0].Doc, found[0].Version), nil
}

// Update implements enrollment.Store.
func (s *Store) Update(ctx context.Context, e enrollment.Enrollment, msgs ...outbox.Message) (enrollment.Enrollment, error) {
	if !ids.Valid(e.ID) {
		return e, enrollment.ErrNotFound
	}
	v, err := s.docs.Update(ctx, e.ID, e.Version, toEnrollmentDoc(e), msgs...)
	switch {
	case errors.Is(err, mongodoc.ErrStale):
		return e, enrollment.ErrStale
	case errors.Is(err, mongodoc.ErrNotFound):
		return e, enrollment.ErrNotFound
	case errors.Is(err, mongodoc.ErrExists):
		return e, fmt.Errorf("update enrollment: %w: exchange id taken", enrollment.ErrConflict)
	case err != nil:
		return e, fmt.Errorf("update enrollment: %w", err)
	}
	e.Version = v
	return e, nil
}

// DueForExpiry implements enrollment.Store through the open_until index: only open status
// objects are indexed there, so the cost follows what is due, not the collection.
func (s *Store) DueForExpiry(ctx context.Context, now time.Time) ([]enrollment.Enrollment, error) {
	found, err := s.docs.Find(ctx, bson.D{
		{Key: mongodoc.DocField("open_until"), Value: bson.D{{Key: "$lte", Value: now}}},
		notSignIn,
	}, dueBatch)
	if err != nil {
		return nil, fmt.Errorf("list open enrollments: %w", err)
	}
	var out []enrollment.Enrollment
	for _, f := range found {
		if e := toEnrollment(f.Doc, f.Version); f.Doc.Kind == "" && e.DueToExpire(now) {
			out = append(out, e)
		}
	}
	return out, nil
}

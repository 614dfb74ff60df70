// Package mongo is the MongoDB backend of the enrollment store (MFA_STORE=mongo), on
// pkg/mongodoc: one document per enrollment or authentication, its outbox in the same
// document, compare-and-set on the envelope's version.
//
// Collections and indexes (created at start-up, idempotently):
//
//	enrollments   _id = status id
//	              doc.exchange_id   unique: GetByExchangeID, and one enrollment per exchange id
//	              doc.open_until    set while the enrollment is open: the expiry sweep's index
//	              doc.gc_at         last write + Retention: TTL index, or a periodic delete
//	                                where the server has no TTL indexes (FerretDB)
//	              pending           the outbox relay's index (pkg/mongodoc)
//	push_ledgers  _id = sub: the push rate limit and pending push (enrollment.PushLedger)
//	              doc.gc_at         the last push + the window: TTL or periodic delete
package mongo

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/mfaflow/mfaflow/pkg/ids"
	"github.com/mfaflow/mfaflow/pkg/mongodoc"
	"github.com/mfaflow/mfaflow/pkg/outbox"
	"github.com/mfaflow/mfaflow/services/status/internal/enrollment"
	"github.com/nats-io/nats.go/jetstream"
	"go.mongodb.org/mongo-driver/v2/bson"
	driver "go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"
)

// Collection names.
const (
	EnrollmentsCollection = "enrollments"
	PushLedgersCollection = "push_ledgers"
)

// Retention is how long an enrollment is kept after its last write, as in the KV backend.
const Retention = 7 * 24 * time.Hour

// dueBatch bounds the enrollments one DueForExpiry returns; the sweep runs every second.
const dueBatch = 1000

// Store implements enrollment.Store and enrollment.PushLedger on MongoDB.
type Store struct {
	enrollments *mongodoc.Collection
	docs        *mongodoc.Store[doc]
	ledgers     *mongodoc.Collection
	expiries    []*mongodoc.Expiry
}

var (
	_ enrollment.Store      = (*Store)(nil)
	_ enrollment.PushLedger = (*Store)(nil)
)

// Open creates the collections' indexes if missing and returns a store on db.
func Open(ctx context.Context, db *driver.Database, log *slog.Logger) (*Store, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	enr, err := mongodoc.Open(ctx, db, EnrollmentsCollection,
		driver.IndexModel{Keys: bson.D{{Key: mongodoc.DocField("exchange_id"), Value: 1}}, Options: options.Index().SetName("exchange_id").SetUnique(true)},
		driver.IndexModel{Keys: bson.D{{Key: mongodoc.DocField("open_until"), Value: 1}}, Options: options.Index().SetName("open_until")},
	)
	if err != nil {
		return nil, fmt.Errorf("enrollment store: %w", err)
	}
	led, err := mongodoc.Open(ctx, db, PushLedgersCollection)
	if err != nil {
		return nil, fmt.Errorf("enrollment store: %w", err)
	}
	s := &Store{enrollments: enr, docs: mongodoc.New[doc](enr), ledgers: led}
	for _, c := range []*mongodoc.Collection{enr, led} {
		e, err := mongodoc.EnsureExpiry(ctx, c, mongodoc.DocField("gc_at"), log)
		if err != nil {
			return nil, fmt.Errorf("enrollment store: %w", err)
		}
		s.expiries = append(s.expiries, e)
	}
	return s, nil
}

// Outboxes are the collections whose documents carry events, one relay each.
func (s *Store) Outboxes() []*mongodoc.Collection { return []*mongodoc.Collection{s.enrollments} }

// RunExpiry deletes old documents where the server has no TTL index, until ctx ends.
func (s *Store) RunExpiry(ctx context.Context) {
	done := make(chan struct{})
	for _, e := range s.expiries {
		go func() { defer func() { done <- struct{}{} }(); e.Run(ctx) }()
	}
	for range s.expiries {
		<-done
	}
}

// doc is the stored model; field names are the storage contract.
type doc struct {
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
	// Authentications only.
	Kind      string            `bson:"kind,omitempty"`
	Initiator string            `bson:"initiator,omitempty"`
	ClientID  string            `bson:"client_id,omitempty"`
	Context   map[string]string `bson:"context,omitempty"`
	AuthTime  *time.Time        `bson:"auth_time,omitempty"`
	// StepUpUsedAt: the authentication's mfa_token was spent as a step-up proof.
	StepUpUsedAt *time.Time `bson:"step_up_used_at,omitempty"`
	// Push authentications only.
	Number     string   `bson:"number,omitempty"`
	Candidates []string `bson:"candidates,omitempty"`
	// PendingCredential is the registry's sealed pending credential while the enrollment is
	// open (opaque binary).
	PendingCredential []byte `bson:"pending_credential,omitempty"`
	// EnrollProof is the keyed hash of the enroll frame that made the enrollment ENROLLED
	// (never the code), so the companion may repeat the frame for a short while.
	EnrollProof []byte `bson:"enroll_proof,omitempty"`
	// OpenUntil is ExpiresAt while the enrollment is not terminal, absent after: the sweep's index.
	OpenUntil *time.Time `bson:"open_until,omitempty"`
	// GCAt is when the document may be deleted.
	GCAt time.Time `bson:"gc_at"`
}

func toDoc(e enrollment.Enrollment) doc {
	d := doc{
		ID: e.ID, ExchangeID: e.ExchangeID, Sub: e.Sub, Method: e.Method, State: string(e.State),
		CreatedAt: e.CreatedAt, UpdatedAt: e.UpdatedAt, ExpiresAt: e.ExpiresAt,
		DeviceID: e.Device.DeviceID, DeviceName: e.Device.Name, DevicePlatform: e.Device.Platform,
		RegisteredID: e.DeviceID, PHID: e.PHID, FailedAttempts: e.FailedAttempts, Seq: int64(e.Seq),
		Kind: string(e.Kind), Initiator: e.Initiator, ClientID: e.ClientID, Context: e.Context,
		Number: e.Number, Candidates: e.Candidates, PendingCredential: e.PendingCredential,
		EnrollProof: e.EnrollProof,
		GCAt:        later(e.UpdatedAt, e.ExpiresAt).Add(Retention),
	}
	if !e.AuthTime.IsZero() {
		at := e.AuthTime
		d.AuthTime = &at
	}
	if !e.StepUpUsedAt.IsZero() {
		at := e.StepUpUsedAt
		d.StepUpUsedAt = &at
	}
	if !e.State.Terminal() {
		open := e.ExpiresAt
		d.OpenUntil = &open
	}
	return d
}

func later(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

func toDomain(d doc, version uint64) enrollment.Enrollment {
	e := enrollment.Enrollment{
		ID: d.ID, ExchangeID: d.ExchangeID, Sub: d.Sub, Method: d.Method, State: enrollment.State(d.State),
		CreatedAt: d.CreatedAt, UpdatedAt: d.UpdatedAt, ExpiresAt: d.ExpiresAt,
		Device:   enrollment.Device{DeviceID: d.DeviceID, Name: d.DeviceName, Platform: d.DevicePlatform},
		DeviceID: d.RegisteredID, PHID: d.PHID, FailedAttempts: d.FailedAttempts, Version: version, Seq: uint64(d.Seq),
		Kind: enrollment.Kind(d.Kind), Initiator: d.Initiator, ClientID: d.ClientID, Context: d.Context,
		Number: d.Number, Candidates: d.Candidates, PendingCredential: d.PendingCredential,
		EnrollProof: d.EnrollProof,
	}
	if d.AuthTime != nil {
		e.AuthTime = *d.AuthTime
	}
	if d.StepUpUsedAt != nil {
		e.StepUpUsedAt = *d.StepUpUsedAt
	}
	return e
}

// Create implements enrollment.Store: one insert; the unique indexes on _id and exchange_id
// refuse a second enrollment with either.
func (s *Store) Create(ctx context.Context, e enrollment.Enrollment, msgs ...outbox.Message) (enrollment.Enrollment, error) {
	if !ids.Valid(e.ID) || !ids.Valid(e.ExchangeID) {
		return e, fmt.Errorf("create enrollment: %w: malformed id", enrollment.ErrBadRequest)
	}
	v, err := s.docs.Create(ctx, e.ID, toDoc(e), msgs...)
	if err != nil {
		if errors.Is(err, mongodoc.ErrExists) {
			return e, fmt.Errorf("create enrollment: %w: id or exchange id taken", enrollment.ErrConflict)
		}
		return e, fmt.Errorf("create enrollment: %w", err)
	}
	e.Version = v
	return e, nil
}

// Get implements enrollment.Store.
func (s *Store) Get(ctx context.Context, id string) (enrollment.Enrollment, error) {
	if !ids.Valid(id) {
		return enrollment.Enrollment{}, enrollment.ErrNotFound
	}
	d, v, err := s.docs.Get(ctx, id)
	if errors.Is(err, mongodoc.ErrNotFound) {
		return enrollment.Enrollment{}, enrollment.ErrNotFound
	}
	if err != nil {
		return enrollment.Enrollment{}, fmt.Errorf("get enrollment: %w", err)
	}
	return toDomain(d, v), nil
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
	if len(found) == 0 {
		return enrollment.Enrollment{}, enrollment.ErrNotFound
	}
	return toDomain(found[0].Doc, found[0].Version), nil
}

// Update implements enrollment.Store.
func (s *Store) Update(ctx context.Context, e enrollment.Enrollment, msgs ...outbox.Message) (enrollment.Enrollment, error) {
	if !ids.Valid(e.ID) {
		return e, enrollment.ErrNotFound
	}
	v, err := s.docs.Update(ctx, e.ID, e.Version, toDoc(e), msgs...)
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

// DueForExpiry implements enrollment.Store through the open_until index: only open
// enrollments are indexed there, so the cost follows what is due, not the collection.
func (s *Store) DueForExpiry(ctx context.Context, now time.Time) ([]enrollment.Enrollment, error) {
	found, err := s.docs.Find(ctx, bson.D{{Key: mongodoc.DocField("open_until"), Value: bson.D{{Key: "$lte", Value: now}}}}, dueBatch)
	if err != nil {
		return nil, fmt.Errorf("list open enrollments: %w", err)
	}
	var out []enrollment.Enrollment
	for _, f := range found {
		if e := toDomain(f.Doc, f.Version); e.DueToExpire(now) {
			out = append(out, e)
		}
	}
	return out, nil
}

// Relays returns the outbox relays of the store's collections, publishing to js.
func (s *Store) Relays(js jetstream.JetStream, log *slog.Logger) []*mongodoc.Relay {
	var out []*mongodoc.Relay
	for _, c := range s.Outboxes() {
		out = append(out, &mongodoc.Relay{C: c, JS: js, Log: log})
	}
	return out
}

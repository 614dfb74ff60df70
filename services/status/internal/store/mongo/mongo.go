// Package mongo is the MongoDB backend of the status stores (MFA_STORE=mongo), on
// pkg/mongodoc: Store keeps enrollments (enrollment.Store), SignIns the sign-ins
// (signin.Store), one document per status object in one collection (the status routes find
// both by status id), its outbox in the same document, compare-and-set on the envelope's
// version. A sign-in's document has kind "authentication", an enrollment's none (enrollment.go,
// signin.go).
//
// Collections and indexes (created at start-up, idempotently):
//
//	enrollments   _id = status id (enrollments and sign-ins)
//	              doc.exchange_id   unique: GetByExchangeID, and one status object per exchange id
//	              doc.open_until    set while the object is open: the expiry sweeps' index
//	              doc.gc_at         last write + Retention: TTL index, or a periodic delete
//	                                where the server has no TTL indexes (FerretDB)
//	              pending           the outbox relay's index (pkg/mongodoc)
//	push_ledgers  _id = sub: the push rate limit and pending push (signin.PushLedger)
//	              doc.gc_at         the last push + the window: TTL or periodic delete
package mongo

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/mfaflow/mfaflow/pkg/mongodoc"
	"github.com/mfaflow/mfaflow/services/status/internal/enrollment"
	"github.com/mfaflow/mfaflow/services/status/internal/signin"
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

// Store implements enrollment.Store and signin.PushLedger on MongoDB; SignIns is the sign-in
// store on the same collection.
type Store struct {
	enrollments *mongodoc.Collection
	docs        *mongodoc.Store[enrollmentDoc]
	signIns     *SignInStore
	ledgers     *mongodoc.Collection
	expiries    []*mongodoc.Expiry
}

var (
	_ enrollment.Store  = (*Store)(nil)
	_ signin.PushLedger = (*Store)(nil)
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
	s := &Store{enrollments: enr, docs: mongodoc.New[enrollmentDoc](enr), ledgers: led}
	s.signIns = &SignInStore{docs: mongodoc.New[signInDoc](enr)}
	for _, c := range []*mongodoc.Collection{enr, led} {
		e, err := mongodoc.EnsureExpiry(ctx, c, mongodoc.DocField("gc_at"), log)
		if err != nil {
			return nil, fmt.Errorf("enrollment store: %w", err)
		}
		s.expiries = append(s.expiries, e)
	}
	return s, nil
}

// SignIns is the sign-in store on the same collection.
func (s *Store) SignIns() *SignInStore { return s.signIns }

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

func later(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

// Relays returns the outbox relays of the store's collections, publishing to js.
func (s *Store) Relays(js jetstream.JetStream, log *slog.Logger) []*mongodoc.Relay {
	var out []*mongodoc.Relay
	for _, c := range s.Outboxes() {
		out = append(out, &mongodoc.Relay{C: c, JS: js, Log: log})
	}
	return out
}

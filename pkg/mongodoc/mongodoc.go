// Package mongodoc stores documents in MongoDB collections with compare-and-set writes and a
// transactional outbox, the MongoDB counterpart of pkg/kvdoc: every write may carry events,
// stored in the same document by the same single-document update, and a Relay publishes them
// to JetStream and then clears them.
//
// A stored document is
//
//	{_id, v: <version>, doc: {…the backend's own fields…}, outbox: [{id, subject, data}],
//	 pending: true, purge: true}
//
// v is the compare-and-set version: every write filters on the version it read and sets the
// next one. pending is present exactly while the outbox holds events or the document waits to
// be purged; the relay finds its work through an index on it, so its cost follows the pending
// documents, not the collection. A filtered single-document update is atomic on MongoDB, so no
// transaction is needed.
//
// FerretDB (the tests' server) evaluates an update's filter and writes the document in two
// steps, so two writers from one version may both match. On FerretDB every write therefore
// first claims its version in a side collection (<name>_cas, _id = "<id>@<version>") whose
// unique _id only one writer gets, and drops the claim once written. A claim left by a writer
// that died in between is taken over after ClaimTimeout. Where the server is MongoDB no claim
// is made.
package mongodoc

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"time"

	"github.com/mfaflow/mfaflow/pkg/fault"
	"github.com/mfaflow/mfaflow/pkg/outbox"
	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"
	"go.mongodb.org/mongo-driver/v2/x/mongo/driver/connstring"
)

// Errors, translated from the driver's.
var (
	ErrNotFound = errors.New("mongodoc: not found")
	ErrExists   = errors.New("mongodoc: already exists")
	// ErrStale means the document changed since it was read; read again and retry.
	ErrStale = errors.New("mongodoc: version changed")
)

// Field names of the stored envelope. Indexes on a backend's own fields use DocField.
const (
	fieldID      = "_id"
	fieldVersion = "v"
	fieldDoc     = "doc"
	fieldOutbox  = "outbox"
	fieldPending = "pending"
	fieldPurge   = "purge"
)

// DocField is the path of a backend document's field inside the envelope ("doc.<name>").
func DocField(name string) string { return fieldDoc + "." + name }

// DefaultDatabase is the database when the URI names none.
const DefaultDatabase = "mfaflow"

// Connect connects to uri and pings the server; the database is the one the URI's path names,
// else DefaultDatabase.
func Connect(ctx context.Context, uri string) (*mongo.Client, *mongo.Database, error) {
	cs, err := connstring.Parse(uri)
	if err != nil {
		return nil, nil, errors.New("mongodb: malformed connection string") // never echo it: it may hold a password
	}
	client, err := mongo.Connect(options.Client().ApplyURI(uri).SetAppName("mfaflow"))
	if err != nil {
		return nil, nil, fmt.Errorf("mongodb connect: %w", err)
	}
	pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := client.Ping(pctx, nil); err != nil {
		_ = client.Disconnect(context.Background())
		return nil, nil, fmt.Errorf("mongodb ping: %w", err)
	}
	name := cs.Database
	if name == "" {
		name = DefaultDatabase
	}
	return client, client.Database(name), nil
}

// Collection is a collection of enveloped documents and the wake-up of its relay: writes
// through a Store on it wake the relay of this process at once, so a local write is relayed
// without waiting for the next poll.
type Collection struct {
	Coll         *mongo.Collection
	claims       *mongo.Collection // nil where filtered updates are atomic
	claimTimeout time.Duration     // 0: ClaimTimeout
	wake         chan struct{}
}

// ClaimTimeout is how old a version claim must be before another writer takes it over (see
// the package comment); a write takes milliseconds.
const ClaimTimeout = 30 * time.Second

// Open returns the collection name of db with the relay's pending index and the given indexes,
// created if missing (creating an existing index again is a no-op, so every replica may call
// it at start-up, and a restarted one again).
func Open(ctx context.Context, db *mongo.Database, name string, indexes ...mongo.IndexModel) (*Collection, error) {
	coll := db.Collection(name)
	models := append([]mongo.IndexModel{{Keys: bson.D{{Key: fieldPending, Value: 1}}, Options: options.Index().SetName("pending")}}, indexes...)
	// One index per command: FerretDB v1 drops the connection (a panic in its handler) on a
	// createIndexes that names two or more indexes which all exist already, i.e. on every start
	// after the first.
	for _, m := range models {
		if _, err := coll.Indexes().CreateOne(ctx, m); err != nil {
			return nil, fmt.Errorf("mongodb indexes of %s: %w", name, err)
		}
	}
	c := &Collection{Coll: coll, wake: make(chan struct{}, 1)}
	ferret, err := IsFerretDB(ctx, db)
	if err != nil {
		return nil, err
	}
	if ferret {
		c.claims = db.Collection(name + "_cas")
	}
	return c, nil
}

// IsFerretDB reports whether db is served by FerretDB (its buildInfo says so).
func IsFerretDB(ctx context.Context, db *mongo.Database) (bool, error) {
	raw, err := db.RunCommand(ctx, bson.D{{Key: "buildInfo", Value: 1}}).Raw()
	if err != nil {
		return false, fmt.Errorf("mongodb buildInfo: %w", err)
	}
	_, err = raw.LookupErr("ferretdbVersion")
	return err == nil, nil
}

type claim struct {
	ID string    `bson:"_id"`
	At time.Time `bson:"at"`
}

// lock claims version next of document id (see the package comment); ErrStale if another
// writer holds it. unlock, given the outcome of the write the claim guarded, drops the claim,
// unless the write may still be carried out (see answered): then the claim stays until it
// expires (ClaimTimeout), as a dead writer's does.
func (c *Collection) lock(ctx context.Context, id string, next int64) (unlock func(writeErr error), err error) {
	if c.claims == nil {
		return func(error) {}, nil
	}
	key := id + "@" + strconv.FormatInt(next, 10)
	for attempt := 0; ; attempt++ {
		_, err := c.claims.InsertOne(ctx, claim{ID: key, At: time.Now()})
		if err == nil {
			return func(writeErr error) {
				if answered(writeErr) {
					_, _ = c.claims.DeleteOne(context.WithoutCancel(ctx), bson.D{{Key: fieldID, Value: key}})
				}
			}, nil
		}
		if !mongo.IsDuplicateKeyError(err) {
			return nil, transient(fmt.Errorf("mongodb claim %s: %w", key, err))
		}
		var held claim
		if attempt > 0 || c.claims.FindOne(ctx, bson.D{{Key: fieldID, Value: key}}).Decode(&held) != nil || time.Since(held.At) < cmp.Or(c.claimTimeout, ClaimTimeout) {
			return nil, ErrStale
		}
		// Left by a writer that died: take it over.
		_, _ = c.claims.DeleteOne(ctx, bson.D{{Key: fieldID, Value: key}, {Key: "at", Value: held.At}})
	}
}

// answered reports whether the server is done with a write that ended in err: it succeeded,
// or the server refused it. A write whose answer never came (the context ended, a timeout, a
// lost connection) may still be carried out by the server afterwards. Its claim must then stay:
// were it dropped, a writer that read the same version could claim it and write, and FerretDB,
// which matches the filter and writes the document in two steps, could let the late write land
// on top, taking the newer document and its events with it (the soak saw a push sign-in
// AUTHENTICATED, then ALLOWED again, with no mfa.verification.succeeded).
func answered(err error) bool {
	if err == nil {
		return true
	}
	var se mongo.ServerError
	return errors.As(err, &se) && !mongo.IsTimeout(err) && !mongo.IsNetworkError(err)
}

// transient marks err with fault.ErrTransient when the driver says the server was out of reach
// for a moment (a timeout, a lost connection, no server to select), so that transports answer
// `unavailable` (retry) rather than `internal`.
func transient(err error) error {
	if mongo.IsTimeout(err) || mongo.IsNetworkError(err) {
		return fmt.Errorf("%w: %w", fault.ErrTransient, err)
	}
	return err
}

// Wake tells the relay that there may be new events.
func (c *Collection) Wake() {
	select {
	case c.wake <- struct{}{}:
	default:
	}
}

// message is an outbox entry as stored. At is when it was written, by the writer's clock, for
// the relay lag metric (absent in entries written before it existed).
type message struct {
	ID      string    `bson:"id"`
	Subject string    `bson:"subject"`
	Data    []byte    `bson:"data"`
	At      time.Time `bson:"at,omitempty"`
}

func toMessages(msgs []outbox.Message) []message {
	now := time.Now()
	out := make([]message, len(msgs))
	for i, m := range msgs {
		out[i] = message{ID: m.ID, Subject: m.Subject, Data: m.Data, At: now}
	}
	return out
}

type record[T any] struct {
	ID      string    `bson:"_id"`
	V       int64     `bson:"v"`
	Doc     T         `bson:"doc"`
	Outbox  []message `bson:"outbox,omitempty"`
	Pending bool      `bson:"pending,omitempty"`
	Purge   bool      `bson:"purge,omitempty"`
}

// Store is a typed view of a collection; T carries the bson tags.
type Store[T any] struct {
	C *Collection
}

// New returns a Store on c.
func New[T any](c *Collection) *Store[T] { return &Store[T]{C: c} }

// Versioned is a document with its id and version.
type Versioned[T any] struct {
	ID      string
	Version uint64
	Doc     T
}

// notPurged excludes documents removed but not yet purged: readers see them gone at once.
var notPurged = bson.E{Key: fieldPurge, Value: bson.D{{Key: "$ne", Value: true}}}

// Get returns the document with id and its version.
func (s *Store[T]) Get(ctx context.Context, id string) (T, uint64, error) {
	var rec record[T]
	// By _id alone, checking the purge mark after: FerretDB (the test server) uses an index only
	// for a filter on _id alone, and scans the collection for anything more.
	err := s.C.Coll.FindOne(ctx, bson.D{{Key: fieldID, Value: id}}).Decode(&rec)
	if errors.Is(err, mongo.ErrNoDocuments) || err == nil && rec.Purge {
		var zero T
		return zero, 0, ErrNotFound
	}
	if err != nil {
		return rec.Doc, 0, transient(fmt.Errorf("mongodb get %s: %w", id, err))
	}
	return rec.Doc, uint64(rec.V), nil
}

// Find returns up to limit documents (0: no limit) whose fields match filter; filter names
// fields with DocField. Documents marked for purge are left out.
func (s *Store[T]) Find(ctx context.Context, filter bson.D, limit int64) ([]Versioned[T], error) {
	f := append(bson.D{notPurged}, filter...)
	// In id order, so a walk in pages (limit, then ids after the last) is resumable.
	opts := options.Find().SetSort(bson.D{{Key: "_id", Value: 1}})
	if limit > 0 {
		opts.SetLimit(limit)
	}
	cur, err := s.C.Coll.Find(ctx, f, opts)
	if err != nil {
		return nil, transient(fmt.Errorf("mongodb find: %w", err))
	}
	defer func() { _ = cur.Close(context.WithoutCancel(ctx)) }()
	var out []Versioned[T]
	for cur.Next(ctx) {
		var rec record[T]
		if err := cur.Decode(&rec); err != nil {
			return nil, fmt.Errorf("mongodb decode: %w", err)
		}
		out = append(out, Versioned[T]{ID: rec.ID, Version: uint64(rec.V), Doc: rec.Doc})
	}
	if err := cur.Err(); err != nil {
		return nil, transient(fmt.Errorf("mongodb find: %w", err))
	}
	return out, nil
}

// Create stores a new document with its events at version 1; ErrExists if the id or another
// unique index's value is taken.
func (s *Store[T]) Create(ctx context.Context, id string, doc T, msgs ...outbox.Message) (uint64, error) {
	rec := record[T]{ID: id, V: 1, Doc: doc}
	if len(msgs) > 0 {
		rec.Outbox, rec.Pending = toMessages(msgs), true
	}
	if _, err := s.C.Coll.InsertOne(ctx, rec); err != nil {
		if mongo.IsDuplicateKeyError(err) {
			return 0, ErrExists
		}
		return 0, transient(fmt.Errorf("mongodb insert %s: %w", id, err))
	}
	if rec.Pending {
		s.C.Wake()
	}
	return 1, nil
}

// Update replaces the document if it is still at version, appending msgs to any events not
// yet relayed, and returns the new version. ErrStale if someone wrote in between, ErrNotFound
// if it is gone; ErrExists if the new values collide with a unique index.
func (s *Store[T]) Update(ctx context.Context, id string, version uint64, doc T, msgs ...outbox.Message) (uint64, error) {
	return s.write(ctx, id, version, doc, false, msgs)
}

// Remove replaces the document with tombstone (which must hold no secret) and marks it for
// purge; the relay deletes it after publishing msgs. Readers see ErrNotFound at once.
func (s *Store[T]) Remove(ctx context.Context, id string, version uint64, tombstone T, msgs ...outbox.Message) error {
	_, err := s.write(ctx, id, version, tombstone, true, msgs)
	return err
}

func (s *Store[T]) write(ctx context.Context, id string, version uint64, doc T, purge bool, msgs []outbox.Message) (uint64, error) {
	set := bson.D{{Key: fieldDoc, Value: doc}, {Key: fieldVersion, Value: int64(version) + 1}}
	if len(msgs) > 0 || purge {
		set = append(set, bson.E{Key: fieldPending, Value: true})
	}
	if purge {
		set = append(set, bson.E{Key: fieldPurge, Value: true})
	}
	update := bson.D{{Key: "$set", Value: set}}
	if len(msgs) > 0 {
		update = append(update, bson.E{Key: "$push", Value: bson.D{{Key: fieldOutbox, Value: bson.D{{Key: "$each", Value: toMessages(msgs)}}}}})
	}
	filter := bson.D{{Key: fieldID, Value: id}, {Key: fieldVersion, Value: int64(version)}, notPurged}
	unlock, err := s.C.lock(ctx, id, int64(version)+1)
	if err != nil {
		return 0, err
	}
	res, err := s.C.Coll.UpdateOne(ctx, filter, update)
	unlock(err)
	if err != nil {
		if mongo.IsDuplicateKeyError(err) {
			return 0, ErrExists
		}
		return 0, transient(fmt.Errorf("mongodb update %s: %w", id, err))
	}
	if res.MatchedCount == 0 {
		// The cold path: say whether it is gone or changed.
		if _, _, err := s.Get(ctx, id); err != nil {
			return 0, err
		}
		return 0, ErrStale
	}
	if len(msgs) > 0 || purge {
		s.C.Wake()
	}
	return version + 1, nil
}

// Expiry makes documents go once the date in one of their fields has passed: a TTL index where
// the server has them (MongoDB), otherwise (FerretDB refuses TTL indexes) a periodic delete
// that Run performs. A document whose events are not yet relayed is never deleted by the
// periodic delete (a TTL index cannot tell; give the field a margin well past any relay delay).
type Expiry struct {
	C     *Collection
	Field string // e.g. DocField("gc_at")
	Every time.Duration
	Log   *slog.Logger
	ttl   bool
}

// ttlFallbackLogged makes the fallback one log line per process, not one per collection.
var ttlFallbackLogged sync.Once

// EnsureExpiry creates a TTL index on field of c, or falls back to a periodic delete and says
// so once in the log.
func EnsureExpiry(ctx context.Context, c *Collection, field string, log *slog.Logger) (*Expiry, error) {
	e := &Expiry{C: c, Field: field, Every: time.Minute, Log: log}
	_, err := c.Coll.Indexes().CreateOne(ctx, mongo.IndexModel{
		Keys:    bson.D{{Key: field, Value: 1}},
		Options: options.Index().SetName("expire_" + field).SetExpireAfterSeconds(0),
	})
	if err == nil {
		e.ttl = true
		return e, nil
	}
	if ctx.Err() != nil {
		return nil, fmt.Errorf("mongodb ttl index of %s: %w", c.Coll.Name(), err)
	}
	ttlFallbackLogged.Do(func() {
		log.Info("mongodb: no TTL indexes on this server; expired documents are deleted periodically instead",
			"first_collection", c.Coll.Name(), "field", field, "every", e.Every, "reason", err)
	})
	if _, err := c.Coll.Indexes().CreateOne(ctx, mongo.IndexModel{
		Keys: bson.D{{Key: field, Value: 1}}, Options: options.Index().SetName("gc_" + field),
	}); err != nil {
		return nil, fmt.Errorf("mongodb gc index of %s: %w", c.Coll.Name(), err)
	}
	return e, nil
}

// TTL reports whether the server expires documents itself.
func (e *Expiry) TTL() bool { return e.ttl }

// Run deletes expired documents every e.Every until ctx ends; with a TTL index it only waits.
func (e *Expiry) Run(ctx context.Context) {
	if e.ttl {
		return
	}
	t := time.NewTicker(e.Every)
	defer t.Stop()
	for {
		if _, err := e.Sweep(ctx, time.Now()); err != nil && ctx.Err() == nil {
			e.Log.Warn("mongodb: deleting expired documents failed", "collection", e.C.Coll.Name(), "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// Sweep deletes the documents whose field is before now and that have no pending events.
func (e *Expiry) Sweep(ctx context.Context, now time.Time) (int64, error) {
	res, err := e.C.Coll.DeleteMany(ctx, bson.D{
		{Key: e.Field, Value: bson.D{{Key: "$lt", Value: now}}},
		{Key: fieldPending, Value: bson.D{{Key: "$ne", Value: true}}},
	})
	if err != nil {
		return 0, err
	}
	return res.DeletedCount, nil
}

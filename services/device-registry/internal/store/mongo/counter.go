package mongo

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"time"

	"github.com/mfaflow/mfaflow/services/device-registry/internal/device"
	driver "go.mongodb.org/mongo-driver/v2/mongo"

	"github.com/mfaflow/mfaflow/pkg/mongodoc"
)

// CountersCollection keeps the registry's hourly counts (SMS limits); a TTL index removes a
// window's count two hours after it began.
const CountersCollection = "counters"

// Counter is device.Counter on MongoDB: one document per key and window, counted up with a
// compare-and-set on its version (pkg/mongodoc), so replicas share the count and concurrent
// counts never lose one. An $inc would be one round trip on MongoDB, but FerretDB (the tests'
// server) reads and writes a document in two steps, so concurrent $inc lose counts there
// (measured: 8 concurrent SMS at a limit of 3 all passed); mongodoc's writes claim the version
// first on FerretDB.
type Counter struct {
	docs *mongodoc.Store[counterDoc]
	// Expiry removes past windows: a TTL index, or a periodic delete where the server has none
	// (FerretDB); RunExpiry runs the latter.
	expiry *mongodoc.Expiry
}

var _ device.Counter = Counter{}

// OpenCounter prepares the counters' collection and its expiry.
func OpenCounter(ctx context.Context, db *driver.Database, log *slog.Logger) (Counter, error) {
	c, err := mongodoc.Open(ctx, db, CountersCollection)
	if err != nil {
		return Counter{}, err
	}
	e, err := mongodoc.EnsureExpiry(ctx, c, mongodoc.DocField("expires_at"), log)
	if err != nil {
		return Counter{}, err
	}
	return Counter{docs: mongodoc.New[counterDoc](c), expiry: e}, nil
}

// RunExpiry deletes past windows where the server has no TTL index, until ctx ends.
func (c Counter) RunExpiry(ctx context.Context) error {
	c.expiry.Run(ctx)
	return nil
}

type counterDoc struct {
	N         int       `bson:"n"`
	ExpiresAt time.Time `bson:"expires_at"`
}

func counterID(key string, window time.Time) string {
	return key + "." + strconv.FormatInt(window.Unix(), 10)
}

// Count implements device.Counter: read, then write the next count if nobody wrote in between
// (else read again).
func (c Counter) Count(ctx context.Context, key string, window time.Time) (int, error) {
	id := counterID(key, window)
	for range 16 {
		d, v, err := c.docs.Get(ctx, id)
		next := d.N + 1 // 1 for a window not counted yet (d is zero)
		switch {
		case errors.Is(err, mongodoc.ErrNotFound):
			_, err = c.docs.Create(ctx, id, counterDoc{N: next, ExpiresAt: window.Add(2 * time.Hour)})
		case err == nil:
			d.N = next
			_, err = c.docs.Update(ctx, id, v, d)
		}
		switch {
		case errors.Is(err, mongodoc.ErrExists), errors.Is(err, mongodoc.ErrStale):
			continue
		case err != nil:
			return 0, err
		}
		return next, nil
	}
	return 0, fmt.Errorf("counter %s: %w", id, device.ErrStale)
}

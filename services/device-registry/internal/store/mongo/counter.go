package mongo

import (
	"context"
	"errors"
	"log/slog"
	"strconv"
	"time"

	"github.com/mfaflow/mfaflow/services/device-registry/internal/device"
	"go.mongodb.org/mongo-driver/v2/bson"
	driver "go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"

	"github.com/mfaflow/mfaflow/pkg/mongodoc"
)

// CountersCollection keeps the registry's hourly counts (SMS limits); a TTL index removes a
// window's count two hours after it began.
const CountersCollection = "counters"

// Counter is device.Counter on MongoDB: one document per key and window, counted up with $inc
// (atomic on the server, so replicas share the count).
type Counter struct {
	coll *driver.Collection
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
	e, err := mongodoc.EnsureExpiry(ctx, c, "expires_at", log)
	if err != nil {
		return Counter{}, err
	}
	return Counter{coll: c.Coll, expiry: e}, nil
}

// RunExpiry deletes past windows where the server has no TTL index, until ctx ends.
func (c Counter) RunExpiry(ctx context.Context) error {
	c.expiry.Run(ctx)
	return nil
}

type counterDoc struct {
	N int `bson:"n"`
}

func counterID(key string, window time.Time) string {
	return key + "." + strconv.FormatInt(window.Unix(), 10)
}

// Peek implements device.Counter.
func (c Counter) Peek(ctx context.Context, key string, window time.Time) (int, error) {
	var d counterDoc
	err := c.coll.FindOne(ctx, bson.D{{Key: "_id", Value: counterID(key, window)}}).Decode(&d)
	if errors.Is(err, driver.ErrNoDocuments) {
		return 0, nil
	}
	return d.N, err
}

// Count implements device.Counter.
func (c Counter) Count(ctx context.Context, key string, window time.Time) (int, error) {
	var d counterDoc
	err := c.coll.FindOneAndUpdate(ctx,
		bson.D{{Key: "_id", Value: counterID(key, window)}},
		bson.D{
			{Key: "$inc", Value: bson.D{{Key: "n", Value: 1}}},
			{Key: "$setOnInsert", Value: bson.D{{Key: "expires_at", Value: window.Add(2 * time.Hour)}}},
		},
		options.FindOneAndUpdate().SetUpsert(true).SetReturnDocument(options.After),
	).Decode(&d)
	return d.N, err
}

package mongo

import (
	"context"
	"errors"
	"strconv"
	"time"

	"github.com/mfaflow/mfaflow/services/device-registry/internal/device"
	"go.mongodb.org/mongo-driver/v2/bson"
	driver "go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"
)

// CountersCollection keeps the registry's hourly counts (SMS limits); a TTL index removes a
// window's count two hours after it began.
const CountersCollection = "counters"

// Counter is device.Counter on MongoDB: one document per key and window, counted up with $inc
// (atomic on the server, so replicas share the count).
type Counter struct{ coll *driver.Collection }

var _ device.Counter = Counter{}

// OpenCounter creates the counters' TTL index if missing.
func OpenCounter(ctx context.Context, db *driver.Database) (Counter, error) {
	coll := db.Collection(CountersCollection)
	_, err := coll.Indexes().CreateOne(ctx, driver.IndexModel{
		Keys:    bson.D{{Key: "expires_at", Value: 1}},
		Options: options.Index().SetName("expires_at").SetExpireAfterSeconds(0),
	})
	if err != nil {
		return Counter{}, err
	}
	return Counter{coll: coll}, nil
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

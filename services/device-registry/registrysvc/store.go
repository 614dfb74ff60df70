package registrysvc

import (
	"context"
	"fmt"
	"log/slog"

	"github.com/mfaflow/mfaflow/pkg/kvdoc"
	"github.com/mfaflow/mfaflow/pkg/mongodoc"
	"github.com/mfaflow/mfaflow/pkg/natsx"
	"github.com/mfaflow/mfaflow/services/device-registry/internal/device"
	"github.com/mfaflow/mfaflow/services/device-registry/internal/store/kv"
	"github.com/mfaflow/mfaflow/services/device-registry/internal/store/mongo"
	"github.com/nats-io/nats.go/jetstream"
	mongodrv "go.mongodb.org/mongo-driver/v2/mongo"
)

// openStore opens the backend cfg.Store names and returns it with its outbox relays (and the
// MongoDB client to disconnect on Close, if any).
//
// counter keeps the hourly SMS limits on the same backend.
func openStore(ctx context.Context, js jetstream.JetStream, cfg Config, relayLog *slog.Logger) (_ device.Store, counter device.Counter, _ []func(context.Context) error, _ *mongodrv.Client, _ error) {
	switch cfg.Store {
	case "", "nats":
		bucket, err := natsx.EnsureKV(ctx, js, kv.BucketConfig(cfg.Bucket), natsx.WithReplicas(cfg.Replicas), natsx.WithLogger(relayLog))
		if err != nil {
			return nil, nil, nil, nil, err
		}
		relay := &kvdoc.Relay{KV: bucket, JS: js, Filter: kv.RelayFilter, Log: relayLog}
		store := kv.New(bucket, js)
		store.FollowRelay(relay.Relayed)
		// Once per bucket: users stored before the per-user index documents get theirs. Its
		// reads and writes meet a forming cluster as the bucket's creation does (a replica
		// started with its peers saw "no response from stream"), so it waits the same way; a
		// second run redoes only compare-and-set writes of the same content.
		var n int
		if err := natsx.AwaitJetStream(ctx, js, relayLog, "user index migration of kv bucket "+bucket.Bucket(), func(ctx context.Context) (err error) {
			n, err = store.MigrateUserIndex(ctx)
			return err
		}); err != nil {
			return nil, nil, nil, nil, err
		} else if n > 0 {
			relayLog.Info("indexed the credentials of users stored before per-user index documents", "users", n)
		}
		counters, err := natsx.EnsureKV(ctx, js, kv.CounterBucketConfig(), natsx.WithReplicas(cfg.Replicas), natsx.WithLogger(relayLog))
		if err != nil {
			return nil, nil, nil, nil, err
		}
		return store, kv.Counter{KV: counters}, []func(context.Context) error{relay.Run}, nil, nil
	case "mongo":
		client, db, err := mongodoc.Connect(ctx, cfg.MongoURI)
		if err != nil {
			return nil, nil, nil, nil, err
		}
		store, err := mongo.Open(ctx, db)
		if err != nil {
			_ = client.Disconnect(context.Background())
			return nil, nil, nil, nil, err
		}
		counter, err := mongo.OpenCounter(ctx, db, relayLog)
		if err != nil {
			_ = client.Disconnect(context.Background())
			return nil, nil, nil, nil, err
		}
		var relays []func(context.Context) error
		for _, r := range store.Relays(js, relayLog) {
			relays = append(relays, r.Run)
		}
		return store, counter, append(relays, counter.RunExpiry), client, nil
	default:
		return nil, nil, nil, nil, fmt.Errorf("unknown store %q (want nats or mongo)", cfg.Store)
	}
}

package statussvc

import (
	"context"
	"fmt"
	"log/slog"

	"github.com/mfaflow/mfaflow/pkg/kvdoc"
	"github.com/mfaflow/mfaflow/pkg/mongodoc"
	"github.com/mfaflow/mfaflow/pkg/natsx"
	"github.com/mfaflow/mfaflow/services/status/internal/enrollment"
	"github.com/mfaflow/mfaflow/services/status/internal/signin"
	"github.com/mfaflow/mfaflow/services/status/internal/store/kv"
	"github.com/mfaflow/mfaflow/services/status/internal/store/mongo"
	"github.com/nats-io/nats.go/jetstream"
	mongodrv "go.mongodb.org/mongo-driver/v2/mongo"
)

// backend is the chosen store with what runs beside it: one store per aggregate, on the same
// data (the status routes find both by status id).
type backend struct {
	store      enrollment.Store
	signIns    signin.Store
	ledger     signin.PushLedger
	view       *kv.View         // KV only
	client     *mongodrv.Client // MongoDB only
	background []func(ctx context.Context)
}

func (b backend) close() {
	if b.client != nil {
		_ = b.client.Disconnect(context.Background())
	}
}

// openStore opens the backend cfg.Store names, with its outbox relay(s).
func openStore(ctx context.Context, js jetstream.JetStream, cfg Config, log *slog.Logger) (backend, error) {
	relayLog := log.With("component", "outbox-relay")
	switch cfg.Store {
	case "", "nats":
		store, err := kv.Open(ctx, js, cfg.Bucket, natsx.WithReplicas(cfg.Replicas), natsx.WithLogger(log))
		if err != nil {
			return backend{}, err
		}
		// Polls are answered from a replica-local view kept current by a watch of the bucket
		// and by this replica's own writes; misses read the bucket.
		view := kv.NewView(store)
		view.Now = cfg.Clock
		// The view follows the bucket on the relay's watch (one consumer for both).
		relay := &kvdoc.Relay{KV: store.KV(), JS: js, Filter: kv.DocFilter, Log: relayLog, Tap: view}
		store.FollowRelay(relay.Relayed)
		return backend{store: view, signIns: view.SignIns(), ledger: store, view: view, background: []func(context.Context){
			func(ctx context.Context) {
				if err := relay.Run(ctx); err != nil {
					log.Error("outbox relay stopped", "err", err)
				}
			},
		}}, nil
	case "mongo":
		client, db, err := mongodoc.Connect(ctx, cfg.MongoURI)
		if err != nil {
			return backend{}, err
		}
		store, err := mongo.Open(ctx, db, log)
		if err != nil {
			_ = client.Disconnect(context.Background())
			return backend{}, err
		}
		// No poll view on MongoDB (it follows a KV watch): polls read the store.
		b := backend{store: store, signIns: store.SignIns(), ledger: store, client: client, background: []func(context.Context){store.RunExpiry}}
		for _, r := range store.Relays(js, relayLog) {
			b.background = append(b.background, func(ctx context.Context) {
				if err := r.Run(ctx); err != nil {
					log.Error("outbox relay stopped", "err", err)
				}
			})
		}
		return b, nil
	default:
		return backend{}, fmt.Errorf("unknown store %q (want nats or mongo)", cfg.Store)
	}
}

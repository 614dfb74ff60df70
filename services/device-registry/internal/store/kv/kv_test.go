package kv_test

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"testing"

	"github.com/google/uuid"
	"github.com/mfaflow/mfaflow/pkg/kvdoc"
	"github.com/mfaflow/mfaflow/pkg/natstest"
	"github.com/mfaflow/mfaflow/pkg/natsx"
	"github.com/mfaflow/mfaflow/services/device-registry/internal/store/kv"
	"github.com/mfaflow/mfaflow/services/device-registry/internal/store/storetest"
	"github.com/nats-io/nats.go/jetstream"
)

// TestStore runs the device.Store conformance suite on a fresh bucket of a fresh embedded
// NATS server per subtest.
func TestStore(t *testing.T) {
	storetest.Run(t, func(t *testing.T) storetest.Backend {
		js := natstest.Start(t).JetStream(t)
		bucket, err := natsx.EnsureKV(t.Context(), js, kv.BucketConfig("devices_"+uuid.NewString()[:8]))
		if err != nil {
			t.Fatal(err)
		}
		return storetest.Backend{Store: kv.New(bucket, js), Relay: func(ctx context.Context, js jetstream.JetStream) {
			r := &kvdoc.Relay{KV: bucket, JS: js, Filter: kv.RelayFilter, Log: slog.New(slog.DiscardHandler)}
			_ = r.Run(ctx)
		}, Pending: func(ctx context.Context) (int, error) { return pendingIn(ctx, bucket, kv.RelayFilter) }}
	})
}

// pendingIn counts the values under filter that still carry an outbox or a purge mark.
func pendingIn(ctx context.Context, bucket jetstream.KeyValue, filter string) (int, error) {
	lister, err := bucket.ListKeysFiltered(ctx, filter)
	if errors.Is(err, jetstream.ErrNoKeysFound) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	n := 0
	for key := range lister.Keys() {
		e, err := bucket.Get(ctx, key)
		if errors.Is(err, jetstream.ErrKeyNotFound) || errors.Is(err, jetstream.ErrKeyDeleted) {
			continue
		}
		if err != nil {
			return 0, err
		}
		if bytes.Contains(e.Value(), []byte(`"outbox"`)) || bytes.Contains(e.Value(), []byte(`"purge"`)) {
			n++
		}
	}
	return n, nil
}

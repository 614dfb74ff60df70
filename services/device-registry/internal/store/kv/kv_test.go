package kv_test

import (
	"context"
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
		return storetest.Backend{Store: kv.New(bucket), Relay: func(ctx context.Context, js jetstream.JetStream) {
			r := &kvdoc.Relay{KV: bucket, JS: js, Filter: kv.RelayFilter, Log: slog.New(slog.DiscardHandler)}
			_ = r.Run(ctx)
		}}
	})
}

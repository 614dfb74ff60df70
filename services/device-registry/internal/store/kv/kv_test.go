package kv_test

import (
	"testing"

	"github.com/google/uuid"
	"github.com/mfaflow/mfaflow/pkg/kvdoc/kvdoctest"
	"github.com/mfaflow/mfaflow/pkg/natstest"
	"github.com/mfaflow/mfaflow/pkg/natsx"
	"github.com/mfaflow/mfaflow/services/device-registry/internal/store/kv"
	"github.com/mfaflow/mfaflow/services/device-registry/internal/store/storetest"
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
		relays := &kvdoctest.Relays{KV: bucket, Filter: kv.RelayFilter}
		store := kv.New(bucket, js)
		store.FollowRelay(relays.Relayed)
		return storetest.Backend{Store: store, Relay: relays.Run, Pending: relays.Pending}
	})
}

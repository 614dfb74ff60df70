package kv_test

import (
	"context"
	"testing"

	"github.com/mfaflow/mfaflow/pkg/kvdoc/kvdoctest"
	"github.com/mfaflow/mfaflow/pkg/natstest"
	"github.com/mfaflow/mfaflow/services/status/internal/store/kv"
	"github.com/mfaflow/mfaflow/services/status/internal/store/storetest"
)

func TestConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) storetest.Backend {
		s, err := kv.Open(context.Background(), natstest.Start(t).JetStream(t), "")
		if err != nil {
			t.Fatal(err)
		}
		relays := &kvdoctest.Relays{KV: s.KV(), Filter: kv.DocFilter}
		s.FollowRelay(relays.Relayed)
		return storetest.Backend{Store: s, SignIns: s.SignIns(), Relay: relays.Run, Pending: relays.Pending, Ledger: s}
	})
}

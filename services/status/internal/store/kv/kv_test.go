package kv_test

import (
	"context"
	"log/slog"
	"testing"

	"github.com/mfaflow/mfaflow/pkg/kvdoc"
	"github.com/nats-io/nats.go/jetstream"

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
		return storetest.Backend{Store: s, Relay: func(ctx context.Context, js jetstream.JetStream) {
			r := &kvdoc.Relay{KV: s.KV(), JS: js, Filter: kv.DocFilter, Log: slog.New(slog.DiscardHandler)}
			_ = r.Run(ctx)
		}}
	})
}

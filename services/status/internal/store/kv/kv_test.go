package kv_test

import (
	"context"
	"testing"

	"github.com/mfaflow/mfaflow/pkg/natstest"
	"github.com/mfaflow/mfaflow/services/status/internal/enrollment"
	"github.com/mfaflow/mfaflow/services/status/internal/store/kv"
	"github.com/mfaflow/mfaflow/services/status/internal/store/storetest"
)

func TestConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) enrollment.Store {
		s, err := kv.Open(context.Background(), natstest.Start(t).JetStream(t), "")
		if err != nil {
			t.Fatal(err)
		}
		return s
	})
}

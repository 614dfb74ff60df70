package kv_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/mfaflow/mfaflow/pkg/kvdoc/kvdoctest"
	"github.com/mfaflow/mfaflow/pkg/natstest"
	"github.com/mfaflow/mfaflow/services/status/internal/enrollment"
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

// TestCreateAfterAKilledCreate: a create whose status id is not derived from its exchange id (a
// keyed initiation) claims the exchange id first; when the process died after that claim and
// before the document, the retry with the same ids creates the enrollment, while another id
// still finds the exchange id taken.
func TestCreateAfterAKilledCreate(t *testing.T) {
	ctx := context.Background()
	s, err := kv.Open(ctx, natstest.Start(t).JetStream(t), "")
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now().UTC().Truncate(time.Millisecond)
	e := enrollment.Enrollment{ID: uuid.NewString(), ExchangeID: uuid.NewString(), Sub: "alice", Method: "TOTP",
		State: enrollment.Initiated, CreatedAt: now, UpdatedAt: now, ExpiresAt: now.Add(time.Minute)}
	// What the killed attempt left: the exchange index entry, no document.
	if _, err := s.KV().Create(ctx, "x."+e.ExchangeID, []byte(e.ID)); err != nil {
		t.Fatal(err)
	}
	other := e
	other.ID = uuid.NewString()
	if _, err := s.Create(ctx, other); !errors.Is(err, enrollment.ErrConflict) {
		t.Fatalf("another id with the claimed exchange id: %v, want ErrConflict", err)
	}
	if _, err := s.Create(ctx, e); err != nil {
		t.Fatalf("the retry of the killed create: %v", err)
	}
	got, err := s.GetByExchangeID(ctx, e.ExchangeID)
	if err != nil || got.ID != e.ID {
		t.Fatalf("by exchange id: %+v, %v", got, err)
	}
}

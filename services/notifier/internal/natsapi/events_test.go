package natsapi_test

import (
	"strings"
	"testing"
	"time"

	"github.com/mfaflow/mfaflow/pkg/delivery"
	"github.com/mfaflow/mfaflow/pkg/ids"
	"github.com/mfaflow/mfaflow/services/notifier/internal/courier"
	"github.com/mfaflow/mfaflow/services/notifier/internal/natsapi"
)

// TestNoticeID: a plain event id is kept readable; any other (a foreign publisher's) becomes a
// hash that is still a valid Message-ID part and KV key, and stays the same on every attempt.
func TestNoticeID(t *testing.T) {
	if got := natsapi.NoticeID("5f0c9a4e-3d1b-4c57-9e2a-8b6f1d7c2a90"); got != "notice-5f0c9a4e-3d1b-4c57-9e2a-8b6f1d7c2a90" {
		t.Fatalf("plain id: %q", got)
	}
	for _, id := range []string{"a b", "x.y>", "<id@evil>\r\nBcc: x", strings.Repeat("a", ids.MaxLen)} {
		got := natsapi.NoticeID(id)
		if !ids.Valid(got) || got != natsapi.NoticeID(id) || strings.Contains(got, id) {
			t.Errorf("NoticeID(%q) = %q", id, got)
		}
	}
}

// TestLedgerOutlivesReplays: the ledger remembers a delivered id longer than anything can come
// again: a delivery request (MFA_DELIVERIES' MaxAge) and an event a new events consumer replays
// (the notice horizon, which a longer setting cannot stretch).
func TestLedgerOutlivesReplays(t *testing.T) {
	ttl := natsapi.BucketConfig("x").TTL
	if maxAge := delivery.StreamConfig().MaxAge; ttl <= maxAge {
		t.Errorf("ledger TTL %v, delivery requests live %v", ttl, maxAge)
	}
	for _, configured := range []time.Duration{0, time.Hour, 24 * time.Hour, 72 * time.Hour} {
		if h := courier.NoticeHorizon(configured); ttl <= h || h <= 0 {
			t.Errorf("horizon %v (configured %v), ledger TTL %v", h, configured, ttl)
		}
	}
	if h := courier.NoticeHorizon(time.Hour); h != time.Hour {
		t.Errorf("a shorter horizon is kept: got %v", h)
	}
}

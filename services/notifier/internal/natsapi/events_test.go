package natsapi_test

import (
	"strings"
	"testing"

	"github.com/mfaflow/mfaflow/pkg/ids"
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

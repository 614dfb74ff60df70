package kv_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/mfaflow/mfaflow/pkg/natstest"
	"github.com/mfaflow/mfaflow/services/status/internal/enrollment"
	"github.com/mfaflow/mfaflow/services/status/internal/store/kv"
)

// finished stores n enrollments that expire around base and finishes them, leaving n delete
// markers in the open index — what a week of completed enrollments leaves behind.
func finished(tb testing.TB, s *kv.Store, base time.Time, n int) {
	tb.Helper()
	ctx := context.Background()
	for i := range n {
		e, err := s.Create(ctx, enrollment.Enrollment{
			ID: uuid.NewString(), ExchangeID: uuid.NewString(), Sub: "alice", Method: "TOTP",
			State: enrollment.Initiated, ExpiresAt: base.Add(time.Duration(i%600) * time.Second),
		})
		if err != nil {
			tb.Fatal(err)
		}
		e.State = enrollment.Enrolled
		if _, err := s.Update(ctx, e); err != nil {
			tb.Fatal(err)
		}
	}
}

// TestSweepFindsDueAfterIncrementalListing checks that the sweep, once past its first full
// listing, still finds enrollments that become due in later seconds, and only those.
func TestSweepFindsDueAfterIncrementalListing(t *testing.T) {
	ctx := context.Background()
	s, err := kv.Open(ctx, natstest.Start(t).JetStream(t), "")
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now().Truncate(time.Second)
	if due, err := s.DueForExpiry(ctx, now); err != nil || len(due) != 0 {
		t.Fatalf("first sweep = %v, %v", due, err)
	}
	soon, err := s.Create(ctx, enrollment.Enrollment{ID: uuid.NewString(), ExchangeID: uuid.NewString(), Sub: "a", Method: "TOTP", State: enrollment.Initiated, ExpiresAt: now.Add(3 * time.Second)})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Create(ctx, enrollment.Enrollment{ID: uuid.NewString(), ExchangeID: uuid.NewString(), Sub: "a", Method: "TOTP", State: enrollment.Initiated, ExpiresAt: now.Add(time.Minute)}); err != nil {
		t.Fatal(err)
	}
	for sec := 1; sec <= 5; sec++ {
		due, err := s.DueForExpiry(ctx, now.Add(time.Duration(sec)*time.Second))
		if err != nil {
			t.Fatal(err)
		}
		want := 0
		if sec >= 3 {
			want = 1 // still open, so due on every sweep until something expires it
		}
		if len(due) != want || want == 1 && due[0].ID != soon.ID {
			t.Fatalf("sweep at +%ds = %+v, want %d due", sec, due, want)
		}
	}
}

// BenchmarkSweep measures one expiry sweep of an idle store over 0 and 10,000 finished
// enrollments: "full" is the listing a process makes once at start (it walks every delete
// marker), "steady" each later one-second sweep, which must not grow with the history.
func BenchmarkSweep(b *testing.B) {
	ctx := context.Background()
	for _, n := range []int{0, 10_000} {
		s, err := kv.Open(ctx, natstest.Start(b).JetStream(b), "")
		if err != nil {
			b.Fatal(err)
		}
		finished(b, s, time.Now().Add(-time.Hour), n)
		t := time.Now()
		b.Run(fmt.Sprintf("full/finished=%d", n), func(b *testing.B) {
			for b.Loop() {
				t = t.Add(time.Hour) // a long gap: a full listing
				if _, err := s.DueForExpiry(ctx, t); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run(fmt.Sprintf("steady/finished=%d", n), func(b *testing.B) {
			for b.Loop() {
				t = t.Add(time.Second)
				if _, err := s.DueForExpiry(ctx, t); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

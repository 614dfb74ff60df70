package natsapi_test

import (
	"github.com/mfaflow/mfaflow/events/commands"
	"log/slog"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/mfaflow/mfaflow/pkg/natstest"
	"github.com/mfaflow/mfaflow/services/status/internal/enrollment"
	"github.com/mfaflow/mfaflow/services/status/internal/natsapi"
)

// TestLiveSharesOneSubscription: a thousand live streams on one replica hold one NATS
// subscription between them, each hears its own enrollment's announcements and nobody else's,
// and a cancelled stream leaves nothing behind.
func TestLiveSharesOneSubscription(t *testing.T) {
	srv := natstest.Start(t)
	nc := srv.Connect(t)
	live := &natsapi.Live{NC: nc, Log: slog.New(slog.DiscardHandler)}
	before := nc.NumSubscriptions()
	const n = 1000
	ids := make([]string, n)
	cancels := make([]func(), n)
	chans := make([]<-chan *commands.EnrollmentReply, n)
	for i := range n {
		ids[i] = uuid.NewString()
		ch, cancel, err := live.Subscribe(ids[i])
		if err != nil {
			t.Fatal(err)
		}
		chans[i], cancels[i] = ch, cancel
	}
	// A second stream on the same enrollment hears it too.
	twin, cancelTwin, err := live.Subscribe(ids[0])
	if err != nil {
		t.Fatal(err)
	}
	if got := nc.NumSubscriptions() - before; got != 1 {
		t.Fatalf("%d streams hold %d NATS subscriptions, want 1", n+1, got)
	}
	if live.Watched() != n {
		t.Fatalf("Watched = %d, want %d", live.Watched(), n)
	}
	for _, i := range []int{0, 1, n / 2, n - 1} {
		live.Changed(enrollment.Enrollment{ID: ids[i], Sub: "alice", State: enrollment.Scanned, UpdatedAt: time.Now(), Seq: 2})
		select {
		case r := <-chans[i]:
			if r.ID != ids[i] {
				t.Fatalf("stream %d heard %s, want its own enrollment", i, r.ID)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("stream %d heard nothing", i)
		}
	}
	select {
	case r := <-twin:
		if r.ID != ids[0] {
			t.Fatalf("twin heard %s", r.ID)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the second stream on one enrollment heard nothing")
	}
	// Nobody else heard anything: a stream that was not announced has nothing pending.
	for _, i := range []int{2, 3, n - 2} {
		select {
		case r := <-chans[i]:
			t.Fatalf("stream %d heard %s", i, r.ID)
		default:
		}
	}
	cancelTwin()
	for _, c := range cancels {
		c()
		c() // cancelling twice is harmless
	}
	if live.Watched() != 0 {
		t.Fatalf("Watched after cancel = %d", live.Watched())
	}
}

package natsapi_test

import (
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/mfaflow/mfaflow/pkg/ids"
	"github.com/mfaflow/mfaflow/pkg/natstest"
	"github.com/mfaflow/mfaflow/services/status/internal/enrollment"
	"github.com/mfaflow/mfaflow/services/status/internal/natsapi"
	"github.com/mfaflow/mfaflow/services/status/internal/signin"
)

// TestSubscribeRefusesInvalidID: an id that cannot exist never reaches the server, so the
// connection survives (an oversized subject once made the server close it), and a valid
// subscription on the same connection still hears announcements.
func TestSubscribeRefusesInvalidID(t *testing.T) {
	srv := natstest.Start(t)
	nc := srv.Connect(t)
	live := &natsapi.Live{NC: nc, Log: slog.New(slog.DiscardHandler)}
	for _, id := range []string{strings.Repeat("a", 4200), "*", ">", "x.y.z", "a b", "\r\n"} {
		ch, cancel, err := live.Subscribe(id)
		if !errors.Is(err, ids.ErrInvalid) || ch != nil || cancel != nil {
			t.Fatalf("Subscribe(%.20q) = %v, %v", id, ch, err)
		}
	}
	if err := nc.Flush(); err != nil || !nc.IsConnected() {
		t.Fatalf("connection after invalid ids: connected=%v flush=%v", nc.IsConnected(), err)
	}
	id := uuid.NewString()
	ch, cancel, err := live.Subscribe(id)
	if err != nil {
		t.Fatal(err)
	}
	defer cancel()
	live.Changed(enrollment.Enrollment{ID: id, Sub: "alice", State: enrollment.State("SCANNED"), UpdatedAt: time.Now()})
	select {
	case rep := <-ch:
		if rep.ID != id || rep.Status != string(enrollment.Scanned) {
			t.Fatalf("announcement %+v", rep)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no announcement within 5s")
	}
	// A sign-in's changes travel the same way, with the device that answered.
	live.SignIns().Changed(signin.Authentication{ID: id, Sub: "alice", State: signin.Authenticated, PHID: "ph-1", UpdatedAt: time.Now(), Seq: 3})
	select {
	case rep := <-ch:
		if rep.ID != id || rep.Status != string(signin.Authenticated) || rep.PHID != "ph-1" || rep.Seq != 3 {
			t.Fatalf("sign-in announcement %+v", rep)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no sign-in announcement within 5s")
	}
}

package natsapi_test

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/mfaflow/mfaflow/events"
	"github.com/mfaflow/mfaflow/pkg/natstest"
	"github.com/mfaflow/mfaflow/pkg/natsx"
	"github.com/mfaflow/mfaflow/pkg/testkit"
	"github.com/mfaflow/mfaflow/services/device-registry/internal/device"
	"github.com/mfaflow/mfaflow/services/device-registry/internal/natsapi"
)

type noDiscards struct{}

func (noDiscards) DiscardPending(context.Context, string) error { return nil }
func (noDiscards) Activate(context.Context, string, string, device.Claim) (device.Credential, error) {
	return device.Credential{}, nil
}

// TestConsumeEnrollmentEndingsWaitsForStream: a registry replica whose NATS node does not know
// MFA_EVENTS yet (a peer created it a moment ago) keeps asking for its consumer until the
// stream is there, instead of exiting on "stream not found".
func TestConsumeEnrollmentEndingsWaitsForStream(t *testing.T) {
	srv := natstest.Start(t)
	js := srv.JetStream(t)
	buf := &testkit.LogBuffer{}
	log := slog.New(slog.NewJSONHandler(buf, nil))
	startCtx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	type result struct {
		stop func()
		err  error
	}
	done := make(chan result, 1)
	go func() {
		cc, err := natsapi.ConsumeEnrollmentEndings(startCtx, t.Context(), js, noDiscards{}, log)
		if err != nil {
			done <- result{err: err}
			return
		}
		done <- result{stop: cc.Stop}
	}()
	natstest.Eventually(t, 10*time.Second, func() error {
		select {
		case r := <-done:
			done <- r
			return nil // ended before the stream exists: checked below
		default:
		}
		if !strings.Contains(buf.String(), "retrying") {
			return errors.New("no retry yet")
		}
		return nil
	})
	if _, err := natsx.EnsureEventStream(startCtx, srv.JetStream(t)); err != nil {
		t.Fatal(err)
	}
	var r result
	select {
	case r = <-done:
	case <-startCtx.Done():
		t.Fatal("consumer not created after the stream appeared")
	}
	if r.err != nil {
		t.Fatalf("ConsumeEnrollmentEndings: %v", r.err)
	}
	r.stop()
	if _, err := js.Consumer(startCtx, events.Stream, natsapi.ConsumerName); err != nil {
		t.Fatal(err)
	}
}

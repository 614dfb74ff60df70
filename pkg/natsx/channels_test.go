package natsx_test

import (
	"context"
	"encoding/json"
	"errors"
	"testing"
	"time"

	"github.com/mfaflow/mfaflow/events/commands"
	"github.com/mfaflow/mfaflow/pkg/delivery"
	"github.com/mfaflow/mfaflow/pkg/fault"
	"github.com/mfaflow/mfaflow/pkg/natstest"
	"github.com/mfaflow/mfaflow/pkg/natsx"
	"github.com/nats-io/nats.go"
)

// TestNotifierChannelsWithoutAnswer: while no notifier has answered, a caller is told to retry
// (503 unavailable: a notifier may be starting, or its interest may not have crossed a cluster
// after a restart), not that the method is off; after the grace, no notifier means nothing is
// active (409 method_inactive at the routes); and a notifier that comes up is seen at the next
// ask, because "nobody answered" is never cached.
func TestNotifierChannelsWithoutAnswer(t *testing.T) {
	srv := natstest.Start(t)
	nc := srv.Connect(t)
	ch := &natsx.NotifierChannels{NC: srv.Connect(t), NoAnswerGrace: 300 * time.Millisecond}
	ctx := context.Background()

	_, err := ch.Active(ctx, delivery.Email)
	if !errors.Is(err, natsx.ErrNoAnswerYet) || fault.CodeOf(err) != fault.Unavailable {
		t.Fatalf("no notifier yet: err = %v, want ErrNoAnswerYet (unavailable)", err)
	}
	natstest.Eventually(t, 5*time.Second, func() error {
		active, err := ch.Active(ctx, delivery.Email)
		if err != nil || active {
			return errors.New("still not inactive")
		}
		return nil
	})

	sub, err := nc.Subscribe(commands.NotifierChannels, func(m *nats.Msg) {
		b, _ := json.Marshal(commands.ChannelsReply{Email: true})
		_ = m.Respond(b)
	})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	if active, err := ch.Active(ctx, delivery.Email); err != nil || !active {
		t.Fatalf("a notifier that delivers email answered: active = %v, err = %v", active, err)
	}
	if active, err := ch.Active(ctx, delivery.SMS); err != nil || active {
		t.Fatalf("the notifier has no SMS: active = %v, err = %v", active, err)
	}

	// It stops: its last answer stands (a restart is no outage of EMAIL).
	if err := sub.Unsubscribe(); err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	if active, err := ch.Active(ctx, delivery.Email); err != nil || !active {
		t.Fatalf("just after the notifier stopped: active = %v, err = %v, want its last answer", active, err)
	}
}

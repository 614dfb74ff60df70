package natsapi

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/mfaflow/mfaflow/events"
	"github.com/mfaflow/mfaflow/pkg/natsx"
	"github.com/mfaflow/mfaflow/services/device-registry/internal/device"
	"github.com/nats-io/nats.go/jetstream"
)

// ConsumerName is the durable consumer shared by every registry replica, so each ending is
// handled by one of them.
const ConsumerName = "device-registry-enrollment-endings"

// discardTimeout bounds one discard; a slow store makes the message come back later instead of
// blocking the consumer.
const discardTimeout = 10 * time.Second

// retryDelay is how long a message whose discard failed waits before it is delivered again.
const retryDelay = 2 * time.Second

// Discarder is what the enrollment-outcomes consumer needs of the domain: discard the pending
// credential of an enrollment that ended without a device, and register the device of one
// that ended ENROLLED.
type Discarder interface {
	DiscardPending(ctx context.Context, statusID string) error
	Activate(ctx context.Context, statusID, sub string, claim device.Claim) (device.Credential, error)
}

// ConsumerConfig is the durable consumer of enrollment endings. It starts at the beginning of
// the stream so that endings published while no registry ran are still handled; discarding
// is idempotent, so old events cost a lookup each and nothing else.
func ConsumerConfig() jetstream.ConsumerConfig {
	return jetstream.ConsumerConfig{
		Durable:     ConsumerName,
		Description: "device registry: register the device of every ENROLLED enrollment, discard the pending credential of every other ending",
		FilterSubjects: []string{
			events.EnrollmentEnrolled.Subject(),
			events.EnrollmentExpired.Subject(),
			events.EnrollmentCancelled.Subject(),
			events.EnrollmentFailed.Subject(),
		},
		DeliverPolicy: jetstream.DeliverAllPolicy,
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       30 * time.Second,
	}
}

// ConsumeEnrollmentEndings creates (or updates) the durable consumer on the events stream and
// starts consuming: every expired, cancelled or failed enrollment has its pending credential
// discarded, so no secret outlives its enrollment; every enrolled one has its device registered
// (the status service asks for that at once; this is the path that makes it certain when that
// call was lost, because the ENROLLED write and its event are one). Stop the returned
// ConsumeContext to end it. startCtx bounds the creation, which is retried while JetStream is
// not ready (a node restarting, a cluster forming, the stream created a moment ago by a peer and
// not yet known here: natsx.AwaitJetStream); ctx bounds the handling of the messages.
func ConsumeEnrollmentEndings(startCtx, ctx context.Context, js jetstream.JetStream, d Discarder, log *slog.Logger) (jetstream.ConsumeContext, error) {
	var cons jetstream.Consumer
	err := natsx.AwaitJetStream(startCtx, js, log, "consumer "+ConsumerName+" on stream "+events.Stream, func(ctx context.Context) (err error) {
		cons, err = js.CreateOrUpdateConsumer(ctx, events.Stream, ConsumerConfig())
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("ensure consumer %s: %w", ConsumerName, err)
	}
	h := endingHandler{ctx: ctx, d: d, log: log}
	cc, err := cons.Consume(h.handle, jetstream.ConsumeErrHandler(func(_ jetstream.ConsumeContext, err error) {
		log.Warn("enrollment endings consumer", "err", err)
	}))
	if err != nil {
		return nil, fmt.Errorf("consume %s: %w", ConsumerName, err)
	}
	return cc, nil
}

type endingHandler struct {
	ctx context.Context
	d   Discarder
	log *slog.Logger
}

func (h endingHandler) handle(msg jetstream.Msg) {
	ev, err := decodeEnding(msg.Data())
	if err != nil {
		// Redelivering cannot make it decodable; terminate so it does not block the consumer.
		h.log.Error("enrollment ending: undecodable event, terminated", "subject", msg.Subject(), "err", err)
		_ = msg.Term()
		return
	}
	ctx, cancel := context.WithTimeout(h.ctx, discardTimeout)
	defer cancel()
	if ev.typ == events.EnrollmentEnrolled {
		_, err = h.d.Activate(ctx, ev.statusID, ev.sub, device.Claim{PHID: ev.phID, DeviceID: ev.deviceID})
		switch {
		case errors.Is(err, device.ErrNotFound):
			err = nil // removed by its user since: nothing to register
		case errors.Is(err, device.ErrConflict):
			h.log.Warn("enrolled enrollment without a matching claim, terminated", "status_id", ev.statusID)
			_ = msg.Term()
			return
		}
	} else {
		err = h.d.DiscardPending(ctx, ev.statusID)
	}
	if err != nil {
		h.log.Warn("enrollment ending: handling failed, will retry", "status_id", ev.statusID, "type", ev.typ, "err", err)
		_ = msg.NakWithDelay(retryDelay)
		return
	}
	if err := msg.Ack(); err != nil {
		h.log.Warn("enrollment ending: ack failed", "status_id", ev.statusID, "err", err)
	}
}

// ending is what the consumer reads of an enrollment event.
type ending struct {
	typ                           events.Type
	statusID, sub, phID, deviceID string
}

func decodeEnding(raw []byte) (ending, error) {
	var env events.Envelope
	if err := json.Unmarshal(raw, &env); err != nil {
		return ending{}, fmt.Errorf("decode envelope: %w", err)
	}
	var data events.Enrollment
	if len(env.Data) > 0 {
		if err := json.Unmarshal(env.Data, &data); err != nil {
			return ending{}, fmt.Errorf("decode %s data: %w", env.Type, err)
		}
	}
	ev := ending{typ: events.Type(env.Type), statusID: data.StatusID, sub: data.Sub, phID: data.PHID, deviceID: data.DeviceID}
	if ev.statusID == "" {
		ev.statusID = env.Subject
	}
	if ev.statusID == "" {
		return ending{}, fmt.Errorf("%s event without a status id", env.Type)
	}
	return ev, nil
}

package natsapi

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"time"

	"github.com/mfaflow/mfaflow/events"
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

// Discarder is what the enrollment-endings consumer needs of the domain.
type Discarder interface {
	DiscardPending(ctx context.Context, statusID string) error
}

// ConsumerConfig is the durable consumer of enrollment endings. It starts at the beginning of
// the stream so that endings published while no registry ran are still handled; discarding
// is idempotent, so old events cost a lookup each and nothing else.
func ConsumerConfig() jetstream.ConsumerConfig {
	return jetstream.ConsumerConfig{
		Durable:     ConsumerName,
		Description: "device registry: discard pending credentials of enrollments that ended without a device",
		FilterSubjects: []string{
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
// discarded, so no secret outlives its enrollment. Stop the returned ConsumeContext to end it.
func ConsumeEnrollmentEndings(ctx context.Context, js jetstream.JetStream, d Discarder, log *slog.Logger) (jetstream.ConsumeContext, error) {
	cons, err := js.CreateOrUpdateConsumer(ctx, events.Stream, ConsumerConfig())
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
	statusID, err := endingStatusID(msg.Data())
	if err != nil {
		// Redelivering cannot make it decodable; terminate so it does not block the consumer.
		h.log.Error("enrollment ending: undecodable event, terminated", "subject", msg.Subject(), "err", err)
		_ = msg.Term()
		return
	}
	ctx, cancel := context.WithTimeout(h.ctx, discardTimeout)
	defer cancel()
	if err := h.d.DiscardPending(ctx, statusID); err != nil {
		h.log.Warn("enrollment ending: discard failed, will retry", "status_id", statusID, "err", err)
		_ = msg.NakWithDelay(retryDelay)
		return
	}
	if err := msg.Ack(); err != nil {
		h.log.Warn("enrollment ending: ack failed", "status_id", statusID, "err", err)
	}
}

// endingStatusID reads the enrollment's status id from a CloudEvent: the status_id of the data,
// or else the event's subject, which for enrollment events is the same id.
func endingStatusID(raw []byte) (string, error) {
	var env events.Envelope
	if err := json.Unmarshal(raw, &env); err != nil {
		return "", fmt.Errorf("decode envelope: %w", err)
	}
	var data events.Enrollment
	if len(env.Data) > 0 {
		if err := json.Unmarshal(env.Data, &data); err != nil {
			return "", fmt.Errorf("decode %s data: %w", env.Type, err)
		}
	}
	switch {
	case data.StatusID != "":
		return data.StatusID, nil
	case env.Subject != "":
		return env.Subject, nil
	}
	return "", fmt.Errorf("%s event without a status id", env.Type)
}

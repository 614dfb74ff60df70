package natsapi

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/mfaflow/mfaflow/events"
	"github.com/mfaflow/mfaflow/events/commands"
	"github.com/mfaflow/mfaflow/events/protocol"
	"github.com/mfaflow/mfaflow/pkg/fault"
	"github.com/mfaflow/mfaflow/pkg/ids"
	"github.com/mfaflow/mfaflow/pkg/metrics"
	"github.com/mfaflow/mfaflow/pkg/natsx"
	"github.com/mfaflow/mfaflow/pkg/rpc"
	"github.com/mfaflow/mfaflow/services/notifier/internal/courier"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// EventsConsumer is the notifier replicas' shared durable consumer on MFA_EVENTS: the events
// that the user is told about by mail.
const EventsConsumer = "notifier-events"

// NoticeTypes are the events worth a security notice. mfa.verification.denied is mailed only
// when the user said "not me"; the others always.
var NoticeTypes = []events.Type{
	events.DeviceRegistered, events.DeviceRemoved, events.RecoveryGenerated, events.RecoveryUsed,
	events.VerificationLocked, events.VerificationDenied, events.FactorsReset,
}

// EventsConsumerConfig is the durable consumer of NoticeTypes. A consumer created anew starts
// at start (now minus the notice horizon), so a notifier deployed on a stream with a long
// history does not mail it; an existing one keeps where it was. MaxDeliver is unbounded: the
// courier decides when to give up (courier.Config.NoticeRetryFor).
func EventsConsumerConfig(start time.Time) jetstream.ConsumerConfig {
	subjects := make([]string, len(NoticeTypes))
	for i, t := range NoticeTypes {
		subjects[i] = t.Subject()
	}
	start = start.UTC()
	return jetstream.ConsumerConfig{
		Durable:        EventsConsumer,
		Description:    "notifier: mail the user once per event when their factors change",
		FilterSubjects: subjects,
		AckPolicy:      jetstream.AckExplicitPolicy,
		AckWait:        AckWait,
		MaxDeliver:     -1,
		DeliverPolicy:  jetstream.DeliverByStartTimePolicy,
		OptStartTime:   &start,
	}
}

// ConsumeEvents ensures the events consumer (created starting at start, or updated keeping
// its position) and hands every event to c. startCtx bounds the creation; ctx bounds the
// handling. Stop the returned ConsumeContext to end it.
func ConsumeEvents(startCtx, ctx context.Context, js jetstream.JetStream, start time.Time, c *courier.Courier, log *slog.Logger) (jetstream.ConsumeContext, error) {
	var cons jetstream.Consumer
	err := natsx.AwaitJetStream(startCtx, js, log, "consumer "+EventsConsumer+" on stream "+events.Stream, func(ctx context.Context) (err error) {
		cons, err = ensureEventsConsumer(ctx, js, EventsConsumerConfig(start))
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("ensure consumer %s: %w", EventsConsumer, err)
	}
	h := eventHandler{ctx: ctx, courier: c, log: log}
	cc, err := cons.Consume(h.handle, jetstream.ConsumeErrHandler(func(_ jetstream.ConsumeContext, err error) {
		log.Warn("events consumer", "err", err)
	}))
	if err != nil {
		return nil, fmt.Errorf("consume %s: %w", EventsConsumer, err)
	}
	return cc, nil
}

// ensureEventsConsumer creates the consumer as want, or updates an existing one to want with
// its own start: JetStream does not move a consumer's start, and moving it would mail again
// (or never) what lies in between.
func ensureEventsConsumer(ctx context.Context, js jetstream.JetStream, want jetstream.ConsumerConfig) (jetstream.Consumer, error) {
	for range 2 {
		have, err := js.Consumer(ctx, events.Stream, want.Durable)
		if errors.Is(err, jetstream.ErrConsumerNotFound) {
			cons, err := js.CreateConsumer(ctx, events.Stream, want)
			if errors.Is(err, jetstream.ErrConsumerExists) {
				continue // another replica created it a moment ago
			}
			return cons, err
		}
		if err != nil {
			return nil, err
		}
		cfg := have.CachedInfo().Config
		want.DeliverPolicy, want.OptStartTime, want.OptStartSeq = cfg.DeliverPolicy, cfg.OptStartTime, cfg.OptStartSeq
		return js.UpdateConsumer(ctx, events.Stream, want)
	}
	return nil, fmt.Errorf("consumer %s: created and not found", want.Durable)
}

type eventHandler struct {
	ctx     context.Context
	courier *courier.Courier
	log     *slog.Logger
}

func (h eventHandler) handle(msg jetstream.Msg) {
	attempt := 1
	if md, err := msg.Metadata(); err == nil {
		attempt = int(md.NumDelivered)
	}
	var env events.Envelope
	if err := json.Unmarshal(msg.Data(), &env); err != nil || env.ID == "" {
		// Not a CloudEvent of ours: no retry can read it, and no other notice depends on it.
		h.log.Error("event unreadable; not mailed", "subject", msg.Subject())
		h.ack(msg, msg.Term())
		return
	}
	req, ok, err := toNotice(env)
	switch {
	case err != nil:
		h.log.Error("event data unreadable; not mailed", "event_id", env.ID, "type", env.Type, "err", err)
		h.ack(msg, msg.Term())
		return
	case !ok:
		h.ack(msg, msg.Ack())
		return
	}
	out := h.courier.Notify(h.ctx, req, attempt)
	if out.Result != "duplicate" && out.Result != "skipped" {
		metrics.Deliveries.WithLabelValues(courier.ChannelEmail, out.Result).Inc()
	}
	switch out.Action {
	case courier.Retry:
		h.ack(msg, msg.NakWithDelay(out.Delay))
	case courier.Drop:
		h.ack(msg, msg.Term())
	default:
		h.ack(msg, msg.Ack())
	}
}

func (h eventHandler) ack(msg jetstream.Msg, err error) {
	if err != nil {
		h.log.Warn("events: ack failed", "subject", msg.Subject(), "err", err)
	}
}

// errNoSub: the event does not name its user.
var errNoSub = errors.New("no sub in the event's data")

// toNotice converts an event into the notice it is worth; ok is false when it is worth none
// (a push denied for another reason than "not me", a reset for a reason this version does not
// know).
func toNotice(env events.Envelope) (req courier.NoticeRequest, ok bool, err error) {
	req = courier.NoticeRequest{EventID: env.ID, MessageID: NoticeID(env.ID), Notice: courier.Notice{At: env.Time}}
	switch env.Type {
	case events.DeviceRegistered, events.DeviceRemoved:
		var d events.Device
		if err := json.Unmarshal(env.Data, &d); err != nil {
			return req, false, err
		}
		req.Kind, req.Sub = courier.KindDeviceRegistered, d.Sub
		if env.Type == events.DeviceRemoved {
			req.Kind = courier.KindDeviceRemoved
		}
		req.Notice.Method, req.Notice.FriendlyName = d.Method, d.FriendlyName
		req.Notice.ByAdmin = d.Actor != "" && d.Actor != d.Sub
	case events.RecoveryGenerated, events.RecoveryUsed:
		var d events.Recovery
		if err := json.Unmarshal(env.Data, &d); err != nil {
			return req, false, err
		}
		req.Kind, req.Sub, req.Notice.Remaining = courier.KindRecoveryGenerated, d.Sub, d.Remaining
		if env.Type == events.RecoveryUsed {
			req.Kind = courier.KindRecoveryUsed
		}
	case events.VerificationLocked:
		var d events.Lock
		if err := json.Unmarshal(env.Data, &d); err != nil {
			return req, false, err
		}
		req.Kind, req.Sub, req.Notice.Until = courier.KindLocked, d.Sub, d.LockedUntil
	case events.VerificationDenied:
		var d events.Verification
		if err := json.Unmarshal(env.Data, &d); err != nil {
			return req, false, err
		}
		if d.Reason != protocol.ReasonNotMe {
			// A plain deny or a wrong number is the user's own answer to their own sign-in.
			return req, false, nil
		}
		req.Kind, req.Sub = courier.KindPushDenied, d.Sub
		req.Notice.App, req.Notice.IP, req.Notice.Location = d.Context["app"], d.Context["ip"], d.Context["location"]
	case events.FactorsReset:
		var d events.Reset
		if err := json.Unmarshal(env.Data, &d); err != nil {
			return req, false, err
		}
		switch d.Reason {
		case "user_disabled":
			req.Kind = courier.KindMFADisabled
		case "admin_reset", "":
			req.Kind = courier.KindFactorsReset
		default:
			return req, false, nil
		}
		req.Sub = d.Sub
	default:
		return req, false, nil
	}
	if req.Sub == "" {
		return req, false, errNoSub
	}
	return req, true, nil
}

// NoticeID is the delivery id of the notice for event id: the mail's Message-ID (before the
// @) and the ledger key. It is the event id itself when that is a plain id, else a hash of it,
// so that no publisher's id can break a header or a key.
func NoticeID(eventID string) string {
	const prefix = "notice-"
	if ids.Valid(eventID) && len(prefix)+len(eventID) <= ids.MaxLen {
		return prefix + eventID
	}
	sum := sha256.Sum256([]byte(eventID))
	return prefix + "h" + hex.EncodeToString(sum[:20])
}

// Contacts asks the device registry where a user's notices go; it implements
// courier.Contacts.
type Contacts struct {
	NC *nats.Conn
	// Timeout bounds one question; 0 means 5 s.
	Timeout time.Duration
}

var _ courier.Contacts = Contacts{}

// Contact answers the user's address and language: courier.ErrNoContact when the registry
// knows none, a temporary error when it did not answer.
func (c Contacts) Contact(ctx context.Context, sub string) (courier.Contact, error) {
	timeout := c.Timeout
	if timeout <= 0 {
		timeout = 5 * time.Second
	}
	cctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var reply commands.ContactReply
	err := rpc.Call(cctx, c.NC, commands.RegistryContact, commands.ContactRequest{Sub: sub}, &reply)
	switch code := fault.CodeOf(err); {
	case err == nil:
		return courier.Contact{Email: reply.Email, Locale: reply.Locale}, nil
	case code == fault.NotFound:
		return courier.Contact{}, courier.ErrNoContact
	case code == "" || code == fault.Unavailable || code == fault.Internal:
		return courier.Contact{}, fmt.Errorf("contact: %w", err)
	default:
		return courier.Contact{}, courier.Rejected(fmt.Errorf("contact: %w", err))
	}
}

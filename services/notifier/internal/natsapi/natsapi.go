// Package natsapi is the notifier's NATS side: the durable consumer of MFA_DELIVERIES that
// hands each request to the courier, the durable consumer of MFA_EVENTS that turns events into
// security notices and the contact look-up at the registry (events.go), the ledger of delivered
// ids (a KV bucket), the reports to the status service, the mfa.delivery.failed events, and the
// mfa-notifier micro service.
package natsapi

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/mfaflow/mfaflow/events"
	"github.com/mfaflow/mfaflow/events/commands"
	"github.com/mfaflow/mfaflow/pkg/delivery"
	"github.com/mfaflow/mfaflow/pkg/ids"
	"github.com/mfaflow/mfaflow/pkg/metrics"
	"github.com/mfaflow/mfaflow/pkg/natsx"
	"github.com/mfaflow/mfaflow/pkg/rpc"
	"github.com/mfaflow/mfaflow/services/notifier/internal/courier"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nats.go/micro"
)

// Version is the micro service's version.
const Version = "1.0.0"

// AckWait is how long a request handed to a notifier stays its own before JetStream gives it to
// another; an attempt (courier.DefaultSendTimeout) plus its reports fit in it.
const AckWait = 30 * time.Second

// ConsumerConfig is the notifier replicas' shared durable pull consumer on MFA_DELIVERIES.
// MaxDeliver is unbounded: the courier decides when to give up (the code's expiry), and the
// stream's MaxAge drops what nobody took.
func ConsumerConfig() jetstream.ConsumerConfig {
	return jetstream.ConsumerConfig{
		Durable:       delivery.Consumer,
		Description:   "notifier: deliver each code by email or SMS, at least once, recorded per delivery id",
		FilterSubject: delivery.StreamSubjects,
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       AckWait,
		MaxDeliver:    -1,
		DeliverPolicy: jetstream.DeliverAllPolicy,
	}
}

// Consume creates (or updates) the durable consumer and hands every request to c. startCtx
// bounds the creation; ctx bounds the handling. Stop the returned ConsumeContext to end it.
func Consume(startCtx, ctx context.Context, js jetstream.JetStream, key []byte, c *courier.Courier, log *slog.Logger) (jetstream.ConsumeContext, error) {
	var cons jetstream.Consumer
	err := natsx.AwaitJetStream(startCtx, js, log, "consumer "+delivery.Consumer+" on stream "+delivery.Stream, func(ctx context.Context) (err error) {
		cons, err = js.CreateOrUpdateConsumer(ctx, delivery.Stream, ConsumerConfig())
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("ensure consumer %s: %w", delivery.Consumer, err)
	}
	h := handler{ctx: ctx, key: key, courier: c, log: log}
	cc, err := cons.Consume(h.handle, jetstream.ConsumeErrHandler(func(_ jetstream.ConsumeContext, err error) {
		log.Warn("delivery consumer", "err", err)
	}))
	if err != nil {
		return nil, fmt.Errorf("consume %s: %w", delivery.Consumer, err)
	}
	return cc, nil
}

type handler struct {
	ctx     context.Context
	key     []byte
	courier *courier.Courier
	log     *slog.Logger
}

func (h handler) handle(msg jetstream.Msg) {
	attempt := 1
	if md, err := msg.Metadata(); err == nil {
		attempt = int(md.NumDelivered)
	}
	channel := strings.TrimPrefix(msg.Subject(), delivery.SubjectPrefix)
	var out courier.Outcome
	req, err := delivery.Open(h.key, msg.Data())
	switch {
	case err != nil:
		// Another key or a damaged request: retrying cannot open it. Its id is the publish's
		// Nats-Msg-Id; nothing of its content can be logged.
		id := msg.Headers().Get(jetstream.MsgIDHeader)
		if !ids.Valid(id) || (channel != delivery.Email && channel != delivery.SMS) {
			h.log.Error("delivery request unreadable and without a usable id; terminated", "subject", msg.Subject())
			_ = msg.Term()
			metrics.Deliveries.WithLabelValues(label(channel), "failed").Inc()
			return
		}
		out = h.courier.GiveUpUnreadable(h.ctx, id, channel, attempt)
	case !ids.Valid(req.ID):
		h.log.Error("delivery request with an invalid id; terminated", "subject", msg.Subject())
		_ = msg.Term()
		metrics.Deliveries.WithLabelValues(label(channel), "failed").Inc()
		return
	default:
		out = h.courier.Deliver(h.ctx, toMessage(req), attempt)
	}
	if out.Result != "duplicate" {
		metrics.Deliveries.WithLabelValues(label(channel), out.Result).Inc()
	}
	var ackErr error
	switch out.Action {
	case courier.Done:
		ackErr = msg.Ack()
	case courier.Retry:
		ackErr = msg.NakWithDelay(out.Delay)
	case courier.Drop:
		ackErr = msg.Term()
	}
	if ackErr != nil {
		h.log.Warn("delivery: ack failed", "subject", msg.Subject(), "err", ackErr)
	}
}

// label keeps the metric's channel label to the known channels.
func label(channel string) string {
	if channel == delivery.Email || channel == delivery.SMS {
		return channel
	}
	return "unknown"
}

func toMessage(r delivery.Request) courier.Message {
	return courier.Message{ID: r.ID, Channel: r.Channel, To: r.To, Masked: r.Masked, Kind: r.Kind, Code: r.Code, Link: r.Link,
		Locale: r.Locale, Sub: r.Sub, StatusID: r.StatusID, ExpiresAt: r.ExpiresAt}
}

// Ledger records delivered ids in a KV bucket; it implements courier.Ledger.
type Ledger struct {
	KV jetstream.KeyValue
	// Prefix starts every key; empty means DeliveredPrefix. Security notices use
	// NotifiedPrefix, so an event's id and a delivery's never share a key.
	Prefix string
}

// Key prefixes of the ledger.
const (
	DeliveredPrefix = "delivered."
	NotifiedPrefix  = "notified."
)

var _ courier.Ledger = Ledger{}

// DefaultBucket is the ledger's bucket.
const DefaultBucket = "mfa_notifier"

// LedgerTTL is how long a delivered id is remembered: longer than MFA_DELIVERIES keeps a
// request (delivery.StreamConfig's MaxAge, 1 h), and longer than the notice horizon (events
// older are never mailed about), so no redelivery outlives its record: neither a request's nor
// an event's, even when the events consumer is deleted and a new one replays the horizon.
const LedgerTTL = courier.DefaultNoticeHorizon + time.Hour

// BucketConfig is the ledger's bucket.
func BucketConfig(name string) jetstream.KeyValueConfig {
	return jetstream.KeyValueConfig{
		Bucket:      name,
		Description: "notifier: ids of delivered messages, so a redelivered request is not sent twice",
		History:     1,
		TTL:         LedgerTTL,
		Storage:     jetstream.FileStorage,
	}
}

func (l Ledger) key(id string) string {
	if l.Prefix == "" {
		return DeliveredPrefix + id
	}
	return l.Prefix + id
}

// Delivered reports whether id was recorded.
func (l Ledger) Delivered(ctx context.Context, id string) (bool, error) {
	_, err := l.KV.Get(ctx, l.key(id))
	switch {
	case err == nil:
		return true, nil
	case errors.Is(err, jetstream.ErrKeyNotFound):
		return false, nil
	default:
		return false, fmt.Errorf("ledger get: %w", err)
	}
}

// Record records id as delivered.
func (l Ledger) Record(ctx context.Context, id string) error {
	if _, err := l.KV.Create(ctx, l.key(id), []byte(time.Now().UTC().Format(time.RFC3339))); err != nil && !errors.Is(err, jetstream.ErrKeyExists) {
		return fmt.Errorf("ledger create: %w", err)
	}
	return nil
}

// Reporter sends delivery reports to the status service; it implements courier.Reporter.
type Reporter struct {
	NC  *nats.Conn
	Log *slog.Logger
	// Attempts and Timeout bound the best effort: a few tries of a couple of seconds each.
	Attempts int
	Timeout  time.Duration
}

var _ courier.Reporter = Reporter{}

// Report tells the status service, retrying a few times; a report that does not arrive is
// logged and dropped — the delivery's outcome does not depend on it.
func (r Reporter) Report(ctx context.Context, statusID, deliveryID, state string) {
	attempts, timeout := max(r.Attempts, 1), r.Timeout
	if timeout <= 0 {
		timeout = 2 * time.Second
	}
	req := commands.DeliveryReport{StatusID: statusID, DeliveryID: deliveryID, State: state}
	var err error
	for i := range attempts {
		if i > 0 {
			t := time.NewTimer(time.Duration(i) * 200 * time.Millisecond)
			select {
			case <-ctx.Done():
				t.Stop()
				return
			case <-t.C:
			}
		}
		cctx, cancel := context.WithTimeout(ctx, timeout)
		err = rpc.Call(cctx, r.NC, commands.StatusDelivery, req, nil)
		cancel()
		if err == nil {
			return
		}
	}
	if r.Log != nil {
		r.Log.Warn("delivery report not delivered to the status service", "delivery_id", deliveryID, "status_id", statusID, "state", state, "err", err)
	}
}

// Failures publishes mfa.delivery.failed on MFA_EVENTS; it implements courier.Failures.
type Failures struct {
	JS  jetstream.JetStream
	Now func() time.Time
}

var _ courier.Failures = Failures{}

// FailureEventID is the CloudEvent id (and Nats-Msg-Id) of a delivery's failure: derived from
// the delivery id, so a give-up made twice (a redelivery after a lost ack) is stored once.
func FailureEventID(deliveryID string) string { return "delivery-failed-" + deliveryID }

// Failed publishes f and returns once the stream stored it.
func (p Failures) Failed(ctx context.Context, f courier.Failure) error {
	now := time.Now
	if p.Now != nil {
		now = p.Now
	}
	data := events.Delivery{DeliveryID: f.DeliveryID, Sub: f.Sub, StatusID: f.StatusID, Channel: f.Channel, Kind: f.Kind,
		Destination: f.Masked, Attempts: f.Attempts, Reason: f.Reason}
	id := FailureEventID(f.DeliveryID)
	env, err := events.New(id, events.SourceNotifier, events.DeliveryFailed, f.DeliveryID, now(), data)
	if err != nil {
		return err
	}
	raw, err := json.Marshal(env)
	if err != nil {
		return err
	}
	if _, err := p.JS.Publish(ctx, events.DeliveryFailed.Subject(), raw, jetstream.WithMsgID(id)); err != nil {
		return fmt.Errorf("publish %s: %w", events.DeliveryFailed, err)
	}
	return nil
}

// StartService adds the mfa-notifier micro service: commands.NotifierChannels answers which
// channels this notifier can deliver.
func StartService(nc *nats.Conn, c *courier.Courier, log *slog.Logger) (micro.Service, error) {
	svc, err := micro.AddService(nc, micro.Config{
		Name:        commands.NotifierService,
		Version:     Version,
		Description: "mfaflow notifier: the only holder of mail and SMS credentials",
	})
	if err != nil {
		return nil, fmt.Errorf("add micro service %s: %w", commands.NotifierService, err)
	}
	// The question has no arguments, so any body (none included) gets the answer; it needs
	// no bounds of rpc.Endpoint: it only reads the configuration.
	channels := micro.HandlerFunc(func(r micro.Request) {
		email, sms := c.Channels()
		if err := r.RespondJSON(commands.ChannelsReply{Email: email, SMS: sms}); err != nil {
			log.Warn("answer channels", "err", err)
		}
	})
	g := svc.AddGroup(commands.NotifierGroup)
	rel := strings.TrimPrefix(commands.NotifierChannels, commands.NotifierGroup+".")
	if err := g.AddEndpoint("channels", channels, micro.WithEndpointSubject(rel)); err != nil {
		_ = svc.Stop()
		return nil, fmt.Errorf("add endpoint %s: %w", commands.NotifierChannels, err)
	}
	if err := nc.Flush(); err != nil {
		_ = svc.Stop()
		return nil, fmt.Errorf("flush: %w", err)
	}
	return svc, nil
}

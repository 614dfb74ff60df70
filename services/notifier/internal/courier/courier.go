// Package courier is the notifier's domain: what to do with one delivery (a one-time code by
// email or SMS, or a confirmation link by email) on each attempt — skip it when it was delivered
// before, send it, retry it with back-off until it expires, or give it up — and what to tell
// whom afterwards; and the same for a security notice (one mail per event to the user's contact
// address, notice.go). It knows no transport: the message renderer, the mail and SMS senders,
// the ledgers of delivered ids, the contact look-up, the status reports and the failure events
// are interfaces its adapters implement.
package courier

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"
)

// Channels (the same names as the delivery contract's).
const (
	ChannelEmail = "email"
	ChannelSMS   = "sms"
)

// Message is one delivery as the courier sees it.
type Message struct {
	// ID is the delivery id: the same on every attempt (the mail's Message-ID, the SMS
	// webhook's X-Mfaflow-Delivery).
	ID      string
	Channel string // "email" or "sms"
	// To is the address or E.164 number; Masked is what logs and events may show of it.
	To, Masked string
	Kind       string // names the templates
	Code       string
	// Link is the confirmation URL of KindDisableLink: it holds a single-use token, so it is
	// mailed only and never logged.
	Link      string
	Locale    string
	Sub       string
	StatusID  string
	ExpiresAt time.Time
	// Notice is what a security notification tells (kinds of notices only).
	Notice Notice
}

// Rendered is a message's text in the user's language. SMS use Text only.
type Rendered struct {
	Subject, Text, HTML string
}

// Renderer builds a message's text from its kind's templates.
type Renderer interface {
	Render(m Message) (Rendered, error)
}

// Sender hands a message to a mail server or an SMS provider. An error that wraps
// ErrRejected is final (the server refused this message for good); any other error is
// temporary and the courier tries again later.
type Sender interface {
	Send(ctx context.Context, m Message, r Rendered) error
}

// ErrRejected marks a sender's error as final: retrying cannot help.
var ErrRejected = errors.New("refused permanently")

// Ledger remembers the ids of delivered messages, so a redelivered request is not sent twice.
type Ledger interface {
	Delivered(ctx context.Context, id string) (bool, error)
	Record(ctx context.Context, id string) error
}

// States of a delivery report.
const (
	StateSent   = "sent"
	StateFailed = "failed"
)

// Reporter tells the status service a delivery's outcome, best effort: the outcome stands
// whether or not the report arrives.
type Reporter interface {
	Report(ctx context.Context, statusID, deliveryID, state string)
}

// Reasons of a give-up.
const (
	ReasonExpired    = "expired"
	ReasonRejected   = "rejected"
	ReasonUnreadable = "unreadable"
)

// Failure is a delivery given up, as the mfa.delivery.failed event tells it: never the code
// or the full address.
type Failure struct {
	DeliveryID, Sub, StatusID, Channel, Kind, Masked string
	Attempts                                         int
	Reason                                           string
}

// Failures publishes give-ups (mfa.delivery.failed). Publishing the same delivery's failure
// twice must store it once.
type Failures interface {
	Failed(ctx context.Context, f Failure) error
}

// Action is what the consumer does with the request after an attempt.
type Action int

const (
	// Done: delivered (now or before) or given up; acknowledge.
	Done Action = iota
	// Retry: deliver the request again after Outcome.Delay.
	Retry
	// Drop: given up for good; terminate the request so it is never delivered again.
	Drop
)

// Outcome is the result of one attempt.
type Outcome struct {
	Action Action
	Delay  time.Duration
	// Result labels the attempt for metrics: sent, retried, failed, or duplicate.
	Result string
}

// Defaults of Config's zero values.
const (
	DefaultBackoff     = time.Second
	DefaultMaxBackoff  = 30 * time.Second
	DefaultSendTimeout = 20 * time.Second
)

// Config assembles a Courier.
type Config struct {
	Renderer Renderer
	// Senders by channel; a channel without one is not configured here.
	Senders map[string]Sender
	Ledger  Ledger
	// NoticeLedger remembers the events a notice was mailed for (keys apart from Ledger's).
	NoticeLedger Ledger
	// Contacts finds where a user's security notices go.
	Contacts Contacts
	Reporter Reporter
	Failures Failures
	// Backoff is the wait after the first failed attempt, doubling per attempt up to
	// MaxBackoff.
	Backoff, MaxBackoff time.Duration
	// SendTimeout bounds one attempt; keep it below the consumer's AckWait.
	SendTimeout time.Duration
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// NoticeHorizon: an event older than this is never mailed about (a notifier deployed on an
	// old stream does not mail its history); 0 means DefaultNoticeHorizon.
	NoticeHorizon time.Duration
	// NoticeRetryFor bounds the retries of a notice after a temporary failure, counted from
	// the event's time; 0 means DefaultNoticeRetryFor.
	NoticeRetryFor time.Duration
}

// Courier delivers messages.
type Courier struct {
	cfg Config
	log *slog.Logger
}

// New returns a Courier.
func New(cfg Config, log *slog.Logger) *Courier {
	if cfg.Backoff <= 0 {
		cfg.Backoff = DefaultBackoff
	}
	if cfg.MaxBackoff <= 0 {
		cfg.MaxBackoff = DefaultMaxBackoff
	}
	if cfg.SendTimeout <= 0 {
		cfg.SendTimeout = DefaultSendTimeout
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	cfg.NoticeHorizon = NoticeHorizon(cfg.NoticeHorizon)
	if cfg.NoticeRetryFor <= 0 {
		cfg.NoticeRetryFor = DefaultNoticeRetryFor
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Courier{cfg: cfg, log: log}
}

// Channels reports which channels have a sender.
func (c *Courier) Channels() (email, sms bool) {
	return c.cfg.Senders[ChannelEmail] != nil, c.cfg.Senders[ChannelSMS] != nil
}

// Deliver makes attempt number attempt (1 for the first) at m. It never logs the code or the
// full address.
func (c *Courier) Deliver(ctx context.Context, m Message, attempt int) Outcome {
	log := c.log.With("delivery_id", m.ID, "channel", m.Channel, "kind", m.Kind, "destination", m.Masked, "attempt", attempt)
	done, err := c.cfg.Ledger.Delivered(ctx, m.ID)
	if err != nil {
		// Without the ledger a send might be a second one; wait for it instead.
		log.Warn("delivery ledger unavailable, will retry", "err", err)
		return Outcome{Action: Retry, Delay: c.backoff(1), Result: "retried"}
	}
	if done {
		// Delivered before (a redelivery after a crash or a lost ack): the report may be the
		// part that was lost, so make it again; the status service takes it twice.
		log.Info("delivery already sent, not sending again")
		c.report(ctx, m, StateSent)
		return Outcome{Action: Done, Result: "duplicate"}
	}
	if !c.cfg.Now().Before(m.ExpiresAt) {
		return c.giveUp(ctx, log, m, attempt-1, ReasonExpired)
	}
	if (m.Kind == KindDisableLink && m.Link == "") || (m.Link != "" && m.Channel != ChannelEmail) {
		// A link grants an action: it goes by mail only, and a link request without one has
		// nothing to say. Neither gets better by retrying.
		log.Error("link delivery without a link, or not by email; giving up")
		return c.giveUp(ctx, log, m, attempt-1, ReasonRejected)
	}
	sender := c.cfg.Senders[m.Channel]
	if sender == nil {
		log.Error("no sender configured for this channel; giving up")
		return c.giveUp(ctx, log, m, attempt-1, ReasonRejected)
	}
	r, err := c.cfg.Renderer.Render(m)
	if err != nil {
		log.Error("message could not be rendered; giving up", "err", err)
		return c.giveUp(ctx, log, m, attempt-1, ReasonRejected)
	}
	left := m.ExpiresAt.Sub(c.cfg.Now())
	sctx, cancel := context.WithTimeout(ctx, min(c.cfg.SendTimeout, left))
	err = sender.Send(sctx, m, r)
	cancel()
	switch {
	case err == nil:
		if err := c.cfg.Ledger.Record(ctx, m.ID); err != nil {
			// The message is out; a redelivery now would send it twice, so acknowledge anyway.
			log.Warn("delivery sent but not recorded", "err", err)
		}
		log.Info("delivery sent")
		c.report(ctx, m, StateSent)
		return Outcome{Action: Done, Result: "sent"}
	case errors.Is(err, ErrRejected):
		log.Warn("delivery refused permanently; giving up", "err", err)
		return c.giveUp(ctx, log, m, attempt, ReasonRejected)
	case ctx.Err() != nil:
		// Shutting down: leave the request to the next notifier at once.
		return Outcome{Action: Retry, Result: "retried"}
	}
	delay := c.backoff(attempt)
	if until := m.ExpiresAt.Sub(c.cfg.Now()); until < delay {
		// The next attempt finds it expired and gives up, without waiting a whole back-off.
		delay = max(until, 0) + 10*time.Millisecond
	}
	log.Warn("delivery failed, will retry", "err", err, "backoff", delay)
	return Outcome{Action: Retry, Delay: delay, Result: "retried"}
}

// GiveUpUnreadable handles a request that did not open: only its id and channel are known.
// Nothing is reported to the status service, which the request would have named.
func (c *Courier) GiveUpUnreadable(ctx context.Context, id, channel string, attempts int) Outcome {
	log := c.log.With("delivery_id", id, "channel", channel)
	if err := c.cfg.Failures.Failed(ctx, Failure{DeliveryID: id, Channel: channel, Attempts: attempts, Reason: ReasonUnreadable}); err != nil {
		log.Warn("could not publish the failure of an unreadable delivery, will retry", "err", err)
		return Outcome{Action: Retry, Delay: c.backoff(1), Result: "retried"}
	}
	log.Error("delivery request unreadable (another MFA_DELIVERY_KEY?); given up")
	return Outcome{Action: Drop, Result: "failed"}
}

func (c *Courier) giveUp(ctx context.Context, log *slog.Logger, m Message, attempts int, reason string) Outcome {
	f := Failure{DeliveryID: m.ID, Sub: m.Sub, StatusID: m.StatusID, Channel: m.Channel, Kind: m.Kind, Masked: m.Masked,
		Attempts: attempts, Reason: reason}
	if err := c.cfg.Failures.Failed(ctx, f); err != nil {
		// The event must not be lost: keep the request until it can be published (the
		// event's id is the delivery's, so a later success after a lost answer stores it once).
		log.Warn("could not publish the delivery failure, will retry", "err", err)
		return Outcome{Action: Retry, Delay: c.backoff(1), Result: "retried"}
	}
	log.Warn("delivery given up", "reason", reason, "attempts", attempts)
	c.report(ctx, m, StateFailed)
	return Outcome{Action: Drop, Result: "failed"}
}

func (c *Courier) report(ctx context.Context, m Message, state string) {
	if m.StatusID != "" {
		c.cfg.Reporter.Report(ctx, m.StatusID, m.ID, state)
	}
}

// backoff is the wait after failed attempt n (1-based): Backoff doubling, at most MaxBackoff.
func (c *Courier) backoff(n int) time.Duration {
	d := c.cfg.Backoff
	for i := 1; i < n && d < c.cfg.MaxBackoff; i++ {
		d *= 2
	}
	return min(d, c.cfg.MaxBackoff)
}

// Rejected wraps err as a final refusal.
func Rejected(err error) error { return fmt.Errorf("%w: %w", ErrRejected, err) }

package courier

import (
	"context"
	"errors"
	"log/slog"
	"time"
)

// Kinds of message the courier itself knows about (each names its templates). Code kinds
// (enrollment_code, signin_code) come from the delivery requests as they are.
const (
	// KindDisableLink is the mail with the link that confirms disabling MFA.
	KindDisableLink = "disable_link"

	// Security notices: one mail to the user's contact address per event.
	KindDeviceRegistered  = "device_registered"
	KindDeviceRemoved     = "device_removed"
	KindRecoveryGenerated = "recovery_generated"
	KindRecoveryUsed      = "recovery_used"
	KindLocked            = "locked"
	KindPushDenied        = "push_denied"
	KindMFADisabled       = "mfa_disabled"
	KindFactorsReset      = "factors_reset"
)

// NoticeKinds lists the kinds of security notices.
var NoticeKinds = []string{
	KindDeviceRegistered, KindDeviceRemoved, KindRecoveryGenerated, KindRecoveryUsed,
	KindLocked, KindPushDenied, KindMFADisabled, KindFactorsReset,
}

// Defaults of the notice rules.
const (
	DefaultNoticeHorizon  = 24 * time.Hour
	DefaultNoticeRetryFor = time.Hour
)

// NoticeHorizon is the horizon a configured one (0: unset) comes to: DefaultNoticeHorizon when
// unset, and never longer, since the notice ledger remembers a mailed notice for only an hour
// more (natsapi.LedgerTTL): an older event replayed to a new consumer would be mailed again.
func NoticeHorizon(configured time.Duration) time.Duration {
	if configured <= 0 || configured > DefaultNoticeHorizon {
		return DefaultNoticeHorizon
	}
	return configured
}

// Notice is what a security notification tells the user, taken from the event that caused it.
// Fields that do not apply to its kind are zero.
type Notice struct {
	// At is when it happened (the event's time).
	At time.Time
	// Method is the factor's type (TOTP, EMAIL, SMS, PUSH, WEBAUTHN) and FriendlyName its name
	// (device_registered, device_removed).
	Method, FriendlyName string
	// ByAdmin: an administrator acted, not the user (device_removed).
	ByAdmin bool
	// Remaining is how many recovery codes are left (recovery_used, recovery_generated).
	Remaining int
	// Until is when a lock ends (locked).
	Until time.Time
	// App, IP and Location are what the relying app said about a sign-in (push_denied).
	App, IP, Location string
}

// NoticeRequest is one event worth a mail.
type NoticeRequest struct {
	// EventID is the CloudEvent id: the notice is mailed at most once per id.
	EventID string
	// MessageID is the notice's delivery id (the mail's Message-ID), derived from EventID.
	MessageID string
	Kind      string
	Sub       string
	Notice    Notice
}

// Contact is where a user's security notices go, and in which language.
type Contact struct {
	Email, Locale string
}

// ErrNoContact: the user has no contact address; nothing can be sent.
var ErrNoContact = errors.New("no contact address")

// Contacts finds a user's contact address. An error that wraps ErrNoContact means there is
// none; one that wraps ErrRejected will not get better; any other is temporary.
type Contacts interface {
	Contact(ctx context.Context, sub string) (Contact, error)
}

// Notify makes attempt number attempt at mailing n's notice. A notice is mailed at most once
// per event (the notice ledger), never for an event older than the horizon, and retried after
// a temporary failure until the event is NoticeRetryFor old; what cannot be mailed is logged
// and dropped (Done: the event stays on the stream for other consumers). It never logs the
// address.
func (c *Courier) Notify(ctx context.Context, n NoticeRequest, attempt int) Outcome {
	log := c.log.With("event_id", n.EventID, "delivery_id", n.MessageID, "kind", n.Kind, "attempt", attempt)
	now := c.cfg.Now()
	age := now.Sub(n.Notice.At)
	if age > c.cfg.NoticeHorizon {
		log.Info("event older than the notice horizon; not mailed", "age", age.Round(time.Second))
		return Outcome{Action: Done, Result: "skipped"}
	}
	done, err := c.cfg.NoticeLedger.Delivered(ctx, n.MessageID)
	if err != nil {
		log.Warn("notice ledger unavailable, will retry", "err", err)
		return c.retryNotice(log, n, attempt, err)
	}
	if done {
		log.Info("notice already mailed, not mailing again")
		return Outcome{Action: Done, Result: "duplicate"}
	}
	contact, err := c.cfg.Contacts.Contact(ctx, n.Sub)
	switch {
	case errors.Is(err, ErrNoContact) || (err == nil && contact.Email == ""):
		log.Info("user has no contact address; notice not mailed")
		return Outcome{Action: Done, Result: "skipped"}
	case errors.Is(err, ErrRejected):
		log.Error("contact address could not be looked up; notice given up", "err", err)
		return Outcome{Action: Done, Result: "failed"}
	case err != nil:
		if ctx.Err() != nil {
			return Outcome{Action: Retry, Result: "retried"}
		}
		return c.retryNotice(log, n, attempt, err)
	}
	sender := c.cfg.Senders[ChannelEmail]
	if sender == nil {
		log.Error("no mail server configured; notice given up")
		return Outcome{Action: Done, Result: "failed"}
	}
	m := Message{ID: n.MessageID, Channel: ChannelEmail, To: contact.Email, Kind: n.Kind, Locale: contact.Locale,
		Sub: n.Sub, Notice: n.Notice}
	r, err := c.cfg.Renderer.Render(m)
	if err != nil {
		log.Error("notice could not be rendered; given up", "err", err)
		return Outcome{Action: Done, Result: "failed"}
	}
	sctx, cancel := context.WithTimeout(ctx, c.cfg.SendTimeout)
	err = sender.Send(sctx, m, r)
	cancel()
	switch {
	case err == nil:
		if err := c.cfg.NoticeLedger.Record(ctx, n.MessageID); err != nil {
			// The mail is out; a redelivery now would send it twice, so acknowledge anyway.
			log.Warn("notice mailed but not recorded", "err", err)
		}
		log.Info("notice mailed")
		return Outcome{Action: Done, Result: "sent"}
	case errors.Is(err, ErrRejected):
		log.Warn("notice refused permanently by the mail server; given up", "err", err)
		return Outcome{Action: Done, Result: "failed"}
	case ctx.Err() != nil:
		return Outcome{Action: Retry, Result: "retried"}
	}
	return c.retryNotice(log, n, attempt, err)
}

// retryNotice retries a notice after a temporary failure while the event is younger than
// NoticeRetryFor, and gives it up after that.
func (c *Courier) retryNotice(log *slog.Logger, n NoticeRequest, attempt int, err error) Outcome {
	if c.cfg.Now().Sub(n.Notice.At) >= c.cfg.NoticeRetryFor {
		log.Error("notice not mailed in time; given up", "err", err)
		return Outcome{Action: Done, Result: "failed"}
	}
	delay := c.backoff(attempt)
	log.Warn("notice not mailed, will retry", "err", err, "backoff", delay)
	return Outcome{Action: Retry, Delay: delay, Result: "retried"}
}

// Package notifiersvc wires the notifier together: the templates, the mail and SMS senders the
// configuration names, the courier, the durable consumer of MFA_DELIVERIES with its ledger
// bucket, the durable consumer of MFA_EVENTS that mails security notices (asking the device
// registry for the user's contact address), and the mfa-notifier micro service.
//
// It is the one entry point of the module: the service's main, the dev stack and the tests all
// boot the notifier through New, so what is tested is what runs.
package notifiersvc

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"sync"
	"time"

	"github.com/mfaflow/mfaflow/pkg/config"
	"github.com/mfaflow/mfaflow/pkg/delivery"
	"github.com/mfaflow/mfaflow/pkg/httpx"
	"github.com/mfaflow/mfaflow/pkg/natsx"
	"github.com/mfaflow/mfaflow/pkg/serve"
	"github.com/mfaflow/mfaflow/services/notifier/internal/courier"
	"github.com/mfaflow/mfaflow/services/notifier/internal/mail"
	"github.com/mfaflow/mfaflow/services/notifier/internal/natsapi"
	"github.com/mfaflow/mfaflow/services/notifier/internal/sms"
	"github.com/mfaflow/mfaflow/services/notifier/internal/templates"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nats.go/micro"
)

// Name names the service in logs, in its NATS connection and in $SRV discovery.
const Name = "notifier"

// DefaultBucket is the ledger bucket used when Config.Bucket is empty.
const DefaultBucket = natsapi.DefaultBucket

// Config is what the notifier needs from its process. Values, not environment names.
type Config struct {
	// DeliveryKey opens the sealed requests (MFA_DELIVERY_KEY, 32 bytes).
	DeliveryKey []byte
	// SMTPURL and MailFrom configure email (MFA_SMTP_URL, MFA_MAIL_FROM); an empty SMTPURL
	// means no email.
	SMTPURL, MailFrom string
	// SMTPTLS, when set, replaces the TLS configuration towards the mail server (tests trust a
	// self-signed certificate with it).
	SMTPTLS *tls.Config
	// SMSProvider is "", "webhook" or "twilio" (MFA_SMS_PROVIDER), with its settings.
	SMSProvider                                                  string
	SMSWebhookURL                                                string
	SMSWebhookSecret                                             []byte
	TwilioBaseURL, TwilioAccountSID, TwilioAuthToken, TwilioFrom string
	// HTTPClient sends SMS; nil means sms.NewClient.
	HTTPClient *http.Client
	// TemplatesDir overrides built-in templates (MFA_TEMPLATES_DIR); DefaultLocale is the
	// language when the user's is unknown (MFA_DEFAULT_LOCALE).
	TemplatesDir, DefaultLocale string
	// Issuer names the service in messages (MFA_ISSUER); PublicURL's host ends SMS in the
	// WebOTP line (MFA_PUBLIC_URL).
	Issuer, PublicURL string
	// Replicas is the replica count of the streams and the bucket when they have to be
	// created (MFA_NATS_REPLICAS); 0 means 1.
	Replicas int
	// Bucket is the ledger's KV bucket; empty means DefaultBucket.
	Bucket string
	// Backoff and MaxBackoff shape retries (doubling from Backoff, at most MaxBackoff); zero
	// means 1 s and 30 s. Tests shorten them.
	Backoff, MaxBackoff time.Duration
	// Clock is the time source of expiry and of the notice rules; nil means time.Now.
	Clock func() time.Time
	// NoticeHorizon: events older than this are never mailed about, and the events consumer,
	// when it is created, starts this far back; 0 means 24 h, the longest (the ledger that
	// keeps a notice from being mailed twice remembers 25 h).
	NoticeHorizon time.Duration
	// NoticeRetryFor bounds the retries of a notice after a temporary failure (the mail server
	// or the registry out of reach), counted from the event's time; 0 means 1 h.
	NoticeRetryFor time.Duration
	// ContactTimeout bounds one contact look-up at the registry; 0 means 5 s.
	ContactTimeout time.Duration
}

// ConfigFrom maps the process configuration (the MFA_* environment) to this service's Config.
func ConfigFrom(env config.Config) (Config, error) {
	key, err := env.DeliveryKeyBytes()
	if err != nil {
		return Config{}, err
	}
	return Config{
		DeliveryKey: key, SMTPURL: env.SMTPURL, MailFrom: env.MailFrom,
		SMSProvider: env.SMSProvider, SMSWebhookURL: env.SMSWebhookURL, SMSWebhookSecret: []byte(env.SMSWebhookSecret),
		TwilioBaseURL: env.TwilioBaseURL, TwilioAccountSID: env.TwilioAccountSID, TwilioAuthToken: env.TwilioAuthToken, TwilioFrom: env.TwilioFrom,
		TemplatesDir: env.TemplatesDir, DefaultLocale: env.DefaultLocale, Issuer: env.Issuer, PublicURL: env.PublicURL,
		Replicas: env.NATSReplicas,
	}, nil
}

// Run is the service's main: it runs the notifier as its own process against MFA_NATS_URL
// until ctx ends (it serves /healthz, /readyz and /metrics on MFA_HTTP_ADDR).
func Run(ctx context.Context, env config.Config) error {
	cfg, err := ConfigFrom(env)
	if err != nil {
		return err
	}
	return serve.Standalone(ctx, env, Name, func(nc *nats.Conn, log *slog.Logger) (serve.Component, error) {
		return New(ctx, nc, cfg, log)
	})
}

// closeTimeout bounds the wait for the consumer's last handler in Close.
const closeTimeout = 25 * time.Second

// Service is a running notifier.
type Service struct {
	log     *slog.Logger
	nc      *nats.Conn
	micro   micro.Service
	cons    jetstream.ConsumeContext
	events  jetstream.ConsumeContext
	cancel  context.CancelFunc
	courier *courier.Courier

	closeOnce sync.Once
	closeErr  error
}

// New ensures MFA_DELIVERIES, MFA_EVENTS and the ledger bucket exist, then starts the consumer
// and the micro service. ctx bounds start-up only; what New starts runs until Close. nc stays
// the caller's to drain after Close.
func New(ctx context.Context, nc *nats.Conn, cfg Config, log *slog.Logger) (*Service, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if len(cfg.DeliveryKey) != delivery.KeySize {
		return nil, fmt.Errorf("notifier: the delivery key must be %d bytes", delivery.KeySize)
	}
	senders, err := newSenders(cfg)
	if err != nil {
		return nil, fmt.Errorf("notifier: %w", err)
	}
	if len(senders) == 0 {
		log.Warn("notifier: neither MFA_SMTP_URL nor MFA_SMS_PROVIDER is set; every delivery will fail")
	}
	host := ""
	if u, err := url.Parse(cfg.PublicURL); err == nil {
		host = u.Hostname()
	}
	issuer := cfg.Issuer
	if issuer == "" {
		issuer = "mfaflow"
	}
	tpl, err := templates.New(templates.Config{Dir: cfg.TemplatesDir, DefaultLocale: cfg.DefaultLocale, Issuer: issuer, Host: host, Now: cfg.Clock})
	if err != nil {
		return nil, fmt.Errorf("notifier: %w", err)
	}

	js, err := jetstream.New(nc)
	if err != nil {
		return nil, fmt.Errorf("notifier: jetstream: %w", err)
	}
	ensure := []natsx.EnsureOption{natsx.WithReplicas(cfg.Replicas), natsx.WithLogger(log)}
	if _, err := natsx.EnsureDeliveryStream(ctx, js, ensure...); err != nil {
		return nil, fmt.Errorf("notifier: %w", err)
	}
	if _, err := natsx.EnsureEventStream(ctx, js, ensure...); err != nil {
		return nil, fmt.Errorf("notifier: %w", err)
	}
	bucket := cfg.Bucket
	if bucket == "" {
		bucket = DefaultBucket
	}
	kv, err := natsx.EnsureKV(ctx, js, natsapi.BucketConfig(bucket), ensure...)
	if err != nil {
		return nil, fmt.Errorf("notifier: %w", err)
	}
	c := courier.New(courier.Config{
		Renderer: tpl, Senders: senders, Ledger: natsapi.Ledger{KV: kv},
		NoticeLedger: natsapi.Ledger{KV: kv, Prefix: natsapi.NotifiedPrefix},
		Contacts:     natsapi.Contacts{NC: nc, Timeout: cfg.ContactTimeout},
		Reporter:     natsapi.Reporter{NC: nc, Log: log, Attempts: 3},
		Failures:     natsapi.Failures{JS: js, Now: cfg.Clock},
		Backoff:      cfg.Backoff, MaxBackoff: cfg.MaxBackoff, Now: cfg.Clock,
		NoticeHorizon: cfg.NoticeHorizon, NoticeRetryFor: cfg.NoticeRetryFor,
	}, log)

	// The background work outlives New's ctx (often a start-up deadline) but keeps its values.
	runCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	s := &Service{log: log, nc: nc, cancel: cancel, courier: c}
	if s.micro, err = natsapi.StartService(nc, c, log); err != nil {
		_ = s.Close()
		return nil, fmt.Errorf("notifier: %w", err)
	}
	if s.cons, err = natsapi.Consume(ctx, runCtx, js, cfg.DeliveryKey, c, log.With("component", "deliveries")); err != nil {
		_ = s.Close()
		return nil, fmt.Errorf("notifier: %w", err)
	}
	horizon, now := courier.NoticeHorizon(cfg.NoticeHorizon), time.Now
	if cfg.Clock != nil {
		now = cfg.Clock
	}
	if s.events, err = natsapi.ConsumeEvents(ctx, runCtx, js, now().Add(-horizon), c, log.With("component", "notices")); err != nil {
		_ = s.Close()
		return nil, fmt.Errorf("notifier: %w", err)
	}
	email, smsOn := c.Channels()
	log.Info("notifier started", "email", email, "sms", smsOn, "sms_provider", cfg.SMSProvider)
	return s, nil
}

// newSenders builds a sender per configured channel.
func newSenders(cfg Config) (map[string]courier.Sender, error) {
	senders := map[string]courier.Sender{}
	if cfg.SMTPURL != "" {
		m, err := mail.New(mail.Config{URL: cfg.SMTPURL, From: cfg.MailFrom, TLS: cfg.SMTPTLS})
		if err != nil {
			return nil, err
		}
		senders[courier.ChannelEmail] = m
	}
	client := cfg.HTTPClient
	if client == nil {
		client = sms.NewClient()
	}
	switch cfg.SMSProvider {
	case "":
	case config.SMSWebhook:
		if cfg.SMSWebhookURL == "" || len(cfg.SMSWebhookSecret) == 0 {
			return nil, errors.New("the SMS webhook needs a URL and a secret")
		}
		senders[courier.ChannelSMS] = &sms.Webhook{URL: cfg.SMSWebhookURL, Secret: cfg.SMSWebhookSecret, Client: client, Now: cfg.Clock}
	case config.SMSTwilio:
		if cfg.TwilioAccountSID == "" || cfg.TwilioAuthToken == "" || cfg.TwilioFrom == "" {
			return nil, errors.New("twilio needs an account SID, an auth token and a sender")
		}
		base := cfg.TwilioBaseURL
		if base == "" {
			base = "https://api.twilio.com"
		}
		senders[courier.ChannelSMS] = &sms.Twilio{BaseURL: base, AccountSID: cfg.TwilioAccountSID, AuthToken: cfg.TwilioAuthToken, From: cfg.TwilioFrom, Client: client}
	default:
		return nil, fmt.Errorf("unknown SMS provider %q", cfg.SMSProvider)
	}
	return senders, nil
}

// Channels reports which channels this notifier delivers.
func (s *Service) Channels() (email, sms bool) { return s.courier.Channels() }

// Routes registers nothing: the notifier has no HTTP API of its own.
func (s *Service) Routes(*httpx.Router) {}

// Close stops taking requests and events and waits for those in flight, if any; one not yet
// acknowledged is delivered again to the next notifier (and not sent twice: the ledger). Close
// is safe to call more than once.
func (s *Service) Close() error {
	s.closeOnce.Do(func() {
		var errs []error
		if s.micro != nil {
			if err := s.micro.Stop(); err != nil {
				errs = append(errs, fmt.Errorf("stop micro service: %w", err))
			}
		}
		for _, cc := range []jetstream.ConsumeContext{s.cons, s.events} {
			if cc != nil {
				cc.Stop()
			}
		}
		s.cancel()
		deadline := time.After(closeTimeout)
		for name, cc := range map[string]jetstream.ConsumeContext{"delivery": s.cons, "events": s.events} {
			if cc == nil {
				continue
			}
			select {
			case <-cc.Closed():
			case <-deadline:
				errs = append(errs, fmt.Errorf("%s consumer did not stop in time", name))
			}
		}
		// Once the server has seen the consumers' unsubscribes it drops their open pull
		// requests; before, it could still hand a new message to this stopped notifier, and the
		// next notifier would get it only after AckWait.
		if !s.nc.IsClosed() {
			if err := s.nc.FlushTimeout(2 * time.Second); err != nil {
				s.log.Warn("notifier: flush on close", "err", err)
			}
		}
		s.closeErr = errors.Join(errs...)
	})
	return s.closeErr
}

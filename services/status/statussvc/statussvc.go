// Package statussvc wires the status service: the enrollment state machine on its store, the
// "mfa-status" micro service, the HTTP routes, the outbox relay and the expiry sweep. The
// service's main and the dev stack both boot it through New.
package statussvc

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mfaflow/mfaflow/pkg/auth"
	"github.com/mfaflow/mfaflow/pkg/httpx"
	"github.com/mfaflow/mfaflow/pkg/metrics"
	"github.com/mfaflow/mfaflow/pkg/natsx"
	"github.com/mfaflow/mfaflow/pkg/ratelimit"
	"github.com/mfaflow/mfaflow/pkg/rpc"
	"github.com/mfaflow/mfaflow/services/status/internal/enrollment"
	"github.com/mfaflow/mfaflow/services/status/internal/httpapi"
	"github.com/mfaflow/mfaflow/services/status/internal/mfatoken"
	"github.com/mfaflow/mfaflow/services/status/internal/natsapi"
	"github.com/mfaflow/mfaflow/services/status/internal/signin"
	"github.com/mfaflow/mfaflow/services/status/internal/store/kv"
	"github.com/mfaflow/mfaflow/services/status/internal/webhook"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nats.go/micro"
	mongodrv "go.mongodb.org/mongo-driver/v2/mongo"
)

// DefaultBucket is the KV bucket used when Config.Bucket is empty.
const DefaultBucket = kv.DefaultBucket

// Config configures the status service.
type Config struct {
	Verifier auth.Verifier
	// WebAuthn says the passkey settings can work (pkg/config.WebAuthn); without, the webauthn
	// routes answer 409 method_inactive.
	WebAuthn bool
	// Bucket is the KV bucket of enrollments; empty means DefaultBucket.
	Bucket string
	// Replicas is the replica count of the MFA_EVENTS stream and the bucket when they have to be
	// created (MFA_NATS_REPLICAS); 0 means 1.
	Replicas int
	// Store is the backend: "" or "nats" (JetStream KV), or "mongo" (MFA_STORE).
	Store string
	// MongoURI is the MongoDB connection string when Store is "mongo" (MFA_MONGODB_URI); its
	// path names the database, else "mfaflow".
	MongoURI string
	// MaxAttempts wrong codes fail an enrollment; 0 means 5. MaxSentAttempts is the same for
	// enrollments whose codes are sent (EMAIL, SMS: MFA_OOB_MAX_ATTEMPTS).
	MaxAttempts     int
	MaxSentAttempts int
	// SweepInterval is how often expired enrollments are looked for; 0 means 1s.
	SweepInterval time.Duration
	// RegistryTimeout bounds each call to the device registry; 0 means 5s.
	RegistryTimeout time.Duration
	// Heartbeat is the idle interval of live status streams; 0 means 15s.
	Heartbeat time.Duration
	// PollRate is how many polls per second one user may make of one enrollment (after a
	// burst of PollBurst); 0 means unlimited.
	PollRate  float64
	PollBurst int
	// UserStartsPerMinute bounds the sign-ins one user may start per minute on this replica,
	// after a burst of UserStartBurst (MFA_USER_START_RATE, MFA_USER_START_BURST); a service
	// token's count against the user it names. 0 means unlimited.
	UserStartsPerMinute float64
	UserStartBurst      int
	// UserStreams bounds the live status streams (SSE and websocket) one user holds open on this
	// replica (MFA_USER_STREAMS); 0 means unlimited.
	UserStreams int
	// Commands bounds the commands each endpoint of the "mfa-status" micro service runs at once
	// and each one's deadline (MFA_COMMAND_CONCURRENCY, MFA_COMMAND_TIMEOUT); zero fields take
	// rpc's defaults.
	Commands rpc.Limits
	// SigningKey holds the PEM blocks of the ES256 keys that sign mfa_token (MFA_SIGNING_KEY):
	// the first signs, all are published in the JWKS. Empty means an ephemeral key made at start
	// (tests only: tokens then do not verify across replicas or restarts); ConfigFrom refuses it.
	SigningKey string
	// TokenIssuer is the `iss` of mfa_token; empty means "mfaflow".
	TokenIssuer string
	// VerificationTTL bounds an authentication (MFA_VERIFICATION_TTL); 0 means 5 minutes.
	VerificationTTL time.Duration
	// StepUpMaxAge is how old the sign-in of a step-up proof (X-MFA-Token) may be
	// (MFA_STEP_UP_MAX_AGE); 0 means 5 minutes.
	StepUpMaxAge time.Duration
	// MaxPushes bounds push sign-ins per user in 10 minutes (MFA_PUSH_RATE); 0 means 5.
	MaxPushes int
	// PushWebhookURL, when set, receives a signed wake-up for every push challenge that did not
	// reach a connected device (MFA_PUSH_WEBHOOK_URL, signed with MFA_PUSH_WEBHOOK_SECRET).
	PushWebhookURL    string
	PushWebhookSecret []byte
	// Clock is the time source; nil means time.Now.
	Clock func() time.Time
}

// Service is a running status service.
type Service struct {
	push   *natsapi.PushSender
	hook   *webhook.Notifier
	api    *httpapi.API
	view   *kv.View // nil on MongoDB
	mongo  *mongodrv.Client
	micro  micro.Service
	cancel context.CancelFunc
	wg     sync.WaitGroup
	cmds   rpc.Group // commands in flight
	log    *slog.Logger
	store  enrollment.Store
	// started and running count the background goroutines (relays, sweep, view): one that
	// stopped before Close makes the service not ready.
	started, running atomic.Int32
}

// New starts the status service on nc. Close stops it.
func New(ctx context.Context, nc *nats.Conn, cfg Config, log *slog.Logger) (*Service, error) {
	if cfg.Verifier == nil {
		return nil, errors.New("status: a token verifier is required")
	}
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, fmt.Errorf("status: jetstream: %w", err)
	}
	if _, err := natsx.EnsureEventStream(ctx, js, natsx.WithReplicas(cfg.Replicas), natsx.WithLogger(log)); err != nil {
		return nil, fmt.Errorf("status: %w", err)
	}
	st, err := openStore(ctx, js, cfg, log)
	if err != nil {
		return nil, fmt.Errorf("status: %w", err)
	}
	signer, err := newSigner(cfg, log)
	if err != nil {
		st.close()
		return nil, fmt.Errorf("status: %w", err)
	}
	keySecret, err := signer.DerivedSecret("idempotency-key")
	if err != nil {
		st.close()
		return nil, fmt.Errorf("status: %w", err)
	}
	proofSecret, err := signer.DerivedSecret("enroll-repeat")
	if err != nil {
		st.close()
		return nil, fmt.Errorf("status: %w", err)
	}
	live := &natsapi.Live{NC: nc, Log: log}
	registry := &natsapi.Registry{NC: nc, Timeout: cfg.RegistryTimeout}
	hook := webhook.New(webhook.Config{URL: cfg.PushWebhookURL, Secret: cfg.PushWebhookSecret, Now: cfg.Clock}, log.With("component", "push-webhook"))
	pushSender := &natsapi.PushSender{NC: nc, Log: log.With("component", "push"), WakeUp: func(phid, challengeID string, expiresAt time.Time) {
		hook.Notify(webhook.WakeUp{PHID: phid, ChallengeID: challengeID, ExpiresAt: expiresAt})
	}}
	domain := &enrollment.Service{
		Store:       st.store,
		Registry:    registry,
		Passkeys:    registry,
		Now:         cfg.Clock,
		MaxAttempts: cfg.MaxAttempts, MaxSentAttempts: cfg.MaxSentAttempts,
		// Keyed ids follow the signing key, which every replica shares (MFA_SIGNING_KEY).
		KeySecret: keySecret,
		// So does the hash that lets a companion repeat the enroll frame whose answer it lost.
		ProofSecret: proofSecret,
		Notify:      live,
		OnTransition: func(e enrollment.Enrollment, _ enrollment.State) {
			metrics.Transitions.WithLabelValues("enrollment", e.Method, string(e.State)).Inc()
		},
		OnRegistryError: func(op, statusID string, err error) {
			log.Warn("registry call after the enrollment's outcome failed; the registry completes it from the event", "op", op, "status_id", statusID, "err", err)
		},
	}
	signIns := &signin.Service{
		Store:         st.signIns,
		Authenticator: registry,
		Passkeys:      registry,
		Push:          registry,
		PushLedger:    st.ledger,
		PushSender:    pushSender,
		MaxPushes:     cfg.MaxPushes,
		Now:           cfg.Clock,
		KeySecret:     keySecret,
		Notify:        live.SignIns(),
		OnTransition: func(a signin.Authentication, _ signin.State) {
			// "authentication" is the metric's label for sign-ins, as before the split.
			metrics.Transitions.WithLabelValues("authentication", a.Method, string(a.State)).Inc()
		},
	}
	var limiter *ratelimit.Limiter
	if cfg.PollRate > 0 {
		limiter = ratelimit.New(cfg.PollRate, cfg.PollBurst)
	}
	runCtx, cancel := context.WithCancel(context.Background())
	s := &Service{
		store: st.store,
		push:  pushSender,
		hook:  hook,
		api: &httpapi.API{
			// Pollers send the same token many times a second: check its signature once.
			Enrollments: domain, SignIns: signIns, Verifier: auth.NewCache(cfg.Verifier, 0), Log: log,
			Live: live, Heartbeat: cfg.Heartbeat, PollLimit: limiter,
			StartLimit:  ratelimit.PerMinute(cfg.UserStartsPerMinute, cfg.UserStartBurst, cfg.Clock),
			StreamLimit: ratelimit.NewSlots(cfg.UserStreams),
			Tokens:      signer, VerificationTTL: cfg.VerificationTTL, WebAuthn: cfg.WebAuthn,
		},
		view:   st.view,
		mongo:  st.client,
		cancel: cancel,
		log:    log,
	}
	s.micro, err = natsapi.Serve(runCtx, nc, domain, signIns, natsapi.StepUp{Tokens: signer, MaxAge: cfg.StepUpMaxAge}, log,
		rpc.WithLimits(cfg.Commands), rpc.WithGroup(&s.cmds))
	if err != nil {
		cancel()
		st.close()
		return nil, fmt.Errorf("status: %w", err)
	}
	// The background work (the outbox relay, whose watch also feeds the view) starts first: the
	// view is ready once that watch delivers its marker.
	for _, run := range st.background {
		s.goRun(func() { run(runCtx) })
	}
	if st.view != nil {
		viewReady := make(chan struct{})
		s.goRun(func() { st.view.Run(runCtx, viewReady) })
		select {
		case <-viewReady:
		case <-time.After(viewStartWait):
			log.Warn("status view not watching yet; polls read the store until it is")
		case <-ctx.Done():
		}
	}
	interval := cfg.SweepInterval
	if interval <= 0 {
		interval = time.Second
	}
	s.goRun(func() { s.sweep(runCtx, interval, domain.ExpireDue, signIns.ExpireDue) })
	return s, nil
}

// newSigner builds the mfa_token signer from cfg.SigningKey, or from an ephemeral key.
func newSigner(cfg Config, log *slog.Logger) (*mfatoken.Signer, error) {
	pemText := cfg.SigningKey
	if pemText == "" {
		log.Warn("no signing key configured: mfa_token is signed with an ephemeral key that no other replica or restart knows")
		var err error
		if pemText, err = mfatoken.GenerateKeyPEM(); err != nil {
			return nil, err
		}
	}
	keys, err := mfatoken.ParseKeys(pemText)
	if err != nil {
		return nil, fmt.Errorf("MFA_SIGNING_KEY: %w", err)
	}
	issuer := cfg.TokenIssuer
	if issuer == "" {
		issuer = "mfaflow"
	}
	return mfatoken.NewSigner(keys, issuer, cfg.Clock), nil
}

// GenerateSigningKey returns a new ES256 signing key as PEM, as MFA_SIGNING_KEY takes it (the
// dev stack keeps one in its data dir).
func GenerateSigningKey() (string, error) { return mfatoken.GenerateKeyPEM() }

func (s *Service) goRun(f func()) {
	s.wg.Add(1)
	s.started.Add(1)
	s.running.Add(1)
	go func() { defer s.wg.Done(); defer s.running.Add(-1); f() }()
}

// Ready implements serve.Readier: the store answers and the background work (outbox relay,
// expiry sweep, poll view) runs.
func (s *Service) Ready(ctx context.Context) error {
	if n, want := s.running.Load(), s.started.Load(); n < want {
		return fmt.Errorf("%d of %d background tasks stopped", want-n, want)
	}
	if _, err := s.store.Get(ctx, "readyz-probe"); err != nil && !errors.Is(err, enrollment.ErrNotFound) {
		return errors.New("the store does not answer")
	}
	return nil
}

// sweep expires overdue enrollments and sign-ins (one ExpireDue each), so EXPIRED and its
// event happen even when nobody polls.
func (s *Service) sweep(ctx context.Context, every time.Duration, expireDue ...func(context.Context) (int, error)) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			for _, expire := range expireDue {
				if n, err := expire(ctx); err != nil && ctx.Err() == nil {
					s.log.Warn("expiry sweep failed", "err", err)
				} else if n > 0 {
					s.log.Info("expired status objects", "count", n)
				}
			}
		}
	}
}

// ViewStats says how many enrollment reads this replica answered from its local view and how
// many read the store.
// On MongoDB there is no view (it follows the KV bucket's watch): every poll reads the store.
func (s *Service) ViewStats() (hits, misses uint64) {
	if s.view == nil {
		return 0, 0
	}
	return s.view.Stats()
}

// Routes registers the status HTTP routes on rt.
func (s *Service) Routes(rt *httpx.Router) { s.api.Routes(rt) }

// Close stops the micro service, cancels the commands in flight, stops the relay and the sweep
// and waits for them all.
func (s *Service) Close() error {
	err := s.micro.Stop()
	s.cancel()
	wctx, cancel := context.WithTimeout(context.Background(), closeTimeout)
	defer cancel()
	if werr := s.cmds.Wait(wctx); werr != nil {
		err = errors.Join(err, werr)
	}
	s.wg.Wait()
	s.push.Wait()
	s.hook.Close()
	if s.mongo != nil {
		dctx, cancel := context.WithTimeout(context.Background(), closeTimeout)
		defer cancel()
		err = errors.Join(err, s.mongo.Disconnect(dctx))
	}
	return err
}

// viewStartWait bounds how long New waits for the view's watch; until it runs, polls read the
// store.
const viewStartWait = 5 * time.Second

// closeTimeout bounds the wait for commands in flight in Close (they see their context cancelled).
const closeTimeout = 10 * time.Second

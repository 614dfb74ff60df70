// Package registrysvc wires the device registry together: the domain service on its store
// (JetStream KV by default, MongoDB with Store "mongo") with secrets sealed by internal/secretbox, the NATS micro service, the outbox relay, the
// enrollment-endings consumer and the HTTP routes.
//
// It is the one entry point of the module: the service's main and the dev stack both boot the
// registry through New, and so do the tests, so what is tested is what runs.
package registrysvc

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mfaflow/mfaflow/pkg/auth"
	"github.com/mfaflow/mfaflow/pkg/config"
	"github.com/mfaflow/mfaflow/pkg/httpx"
	"github.com/mfaflow/mfaflow/pkg/natsx"
	"github.com/mfaflow/mfaflow/pkg/ratelimit"
	"github.com/mfaflow/mfaflow/pkg/rpc"
	"github.com/mfaflow/mfaflow/services/device-registry/internal/device"
	"github.com/mfaflow/mfaflow/services/device-registry/internal/httpapi"
	"github.com/mfaflow/mfaflow/services/device-registry/internal/natsapi"
	"github.com/mfaflow/mfaflow/services/device-registry/internal/passkeys"
	"github.com/mfaflow/mfaflow/services/device-registry/internal/secretbox"
	"github.com/mfaflow/mfaflow/services/device-registry/internal/store/kv"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nats.go/micro"
	mongodrv "go.mongodb.org/mongo-driver/v2/mongo"
)

// DefaultBucket is the KV bucket used when Config.Bucket is empty.
const DefaultBucket = kv.DefaultBucket

// Config is what the registry needs from its process. Values, not environment names: only
// main reads the environment.
type Config struct {
	// SecretKey is the 32-byte AES-256 key that seals TOTP secrets at rest (MFA_SECRET_KEY,
	// parsed with secretbox.ParseKey). Losing it makes every registered device unusable.
	SecretKey []byte
	// SecretKeys, when set, is a key ring for rotation (MFA_SECRET_KEYS): key id → key, with
	// CurrentKey the id new seals use; SecretKey is then ignored. Without it, SecretKey is the
	// ring's only key, id 1.
	SecretKeys map[byte][]byte
	CurrentKey byte
	// Verifier authenticates the Bearer tokens of HTTP callers.
	Verifier auth.Verifier
	// Bucket is the KV bucket of credentials; empty means DefaultBucket.
	Bucket string
	// Replicas is the replica count of the MFA_EVENTS stream and the bucket when they have to be
	// created (MFA_NATS_REPLICAS); 0 means 1.
	Replicas int
	// Store is the backend: "" or "nats" (JetStream KV), or "mongo" (MFA_STORE).
	Store string
	// MongoURI is the MongoDB connection string when Store is "mongo" (MFA_MONGODB_URI); its
	// path names the database, else "mfaflow".
	MongoURI string
	// Commands bounds the commands each endpoint of the registry's micro service runs at once and
	// each one's deadline (MFA_COMMAND_CONCURRENCY, MFA_COMMAND_TIMEOUT); zero fields take rpc's
	// defaults.
	Commands rpc.Limits
	// Lockout is when wrong sign-in codes lock a user (MFA_LOCKOUT_*); zero fields take the
	// domain's defaults (5 codes; 1 minute, doubling to at most 15).
	Lockout device.LockoutPolicy
	// StepUpOff turns off the step-up rule (MFA_STEP_UP=off): by default, once a user has a
	// factor, enrolling another, removing one and new recovery codes need X-MFA-Token, which the
	// status service redeems.
	StepUpOff bool
	// UserStartsPerMinute bounds the recovery-code sets one user may generate per minute on this
	// replica, after a burst of UserStartBurst (MFA_USER_START_RATE, MFA_USER_START_BURST); 0
	// means unlimited.
	UserStartsPerMinute float64
	UserStartBurst      int
	// DeliveryKey seals the codes the registry hands to the notifier (MFA_DELIVERY_KEY, 32
	// bytes); without it the methods whose codes are sent (EMAIL, SMS) are inactive.
	DeliveryKey []byte
	// DisableConfirmURL is the frontend page an emailed disable link opens, with ?token=…
	// appended (MFA_DISABLE_CONFIRM_URL; default the demo page at MFA_PUBLIC_URL).
	DisableConfirmURL string
	// OOB are the rules of codes by email and SMS (MFA_OOB_*, MFA_SMS_*); zero fields take the
	// domain's defaults.
	OOB device.OOBPolicy
	// WebAuthn is the relying party of passkeys (MFA_WEBAUTHN_*); nil leaves WEBAUTHN inactive,
	// and WebAuthnInactive then says why (logged at start-up with what to set).
	WebAuthn         *config.WebAuthn
	WebAuthnInactive string
	// Clock is the time source of every rule (code time steps, timestamps); nil means
	// time.Now. Tests set it to compute codes for a known instant.
	Clock func() time.Time
}

// recoveryKey derives the key of the recovery codes' keyed hash from the secret key, so that
// one secret protects both and neither key can be computed from the other's output.
func recoveryKey(secretKey []byte) []byte { return derivedKey(secretKey, "mfaflow recovery codes v1") }

// handleKey derives the key of passkeys' user handles in the same way. A user's handle is
// stored with their passkeys, so a key rotation does not change it.
func handleKey(secretKey []byte) []byte {
	return derivedKey(secretKey, "mfaflow webauthn user handles v1")
}

// codeKey derives the key of the sent codes' keyed hash (EMAIL, SMS) in the same way.
func codeKey(secretKey []byte) []byte { return derivedKey(secretKey, "mfaflow one-time codes v1") }

func derivedKey(secretKey []byte, label string) []byte {
	m := hmac.New(sha256.New, secretKey)
	m.Write([]byte(label))
	return m.Sum(nil)
}

func rpID(p *config.WebAuthn) string {
	if p == nil {
		return ""
	}
	return p.RPID
}

// closeTimeout bounds the wait for the consumer's last handler in Close.
const closeTimeout = 10 * time.Second

// Service is a running device registry.
type Service struct {
	log    *slog.Logger
	http   *httpapi.API
	micro  micro.Service
	cons   jetstream.ConsumeContext
	cancel context.CancelFunc
	wg     sync.WaitGroup
	cmds   rpc.Group // commands in flight
	mongo  *mongodrv.Client
	store  device.Store
	// relays counts the outbox relays still running; fewer than started makes it not ready.
	relays, relaysStarted atomic.Int32

	closeOnce sync.Once
	closeErr  error
}

var _ device.KeyRing = (*secretbox.Ring)(nil)

// New ensures the MFA_EVENTS stream and the credentials bucket exist, then starts the micro
// service, the outbox relay and the enrollment-endings consumer. ctx bounds start-up only;
// what New starts runs until Close. nc stays the caller's to drain after Close.
func New(ctx context.Context, nc *nats.Conn, cfg Config, log *slog.Logger) (*Service, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if cfg.Verifier == nil {
		return nil, errors.New("registry: Config.Verifier is required")
	}
	keys, current := cfg.SecretKeys, cfg.CurrentKey
	if len(keys) == 0 {
		keys, current = map[byte][]byte{1: cfg.SecretKey}, 1
	}
	box, err := secretbox.NewRing(current, keys)
	if err != nil {
		return nil, fmt.Errorf("registry: secret key: %w", err)
	}
	var olderRecovery [][]byte
	for id, k := range keys {
		if id != current {
			olderRecovery = append(olderRecovery, recoveryKey(k))
		}
	}
	clock := device.Clock(device.ClockFunc(time.Now))
	if cfg.Clock != nil {
		clock = device.ClockFunc(cfg.Clock)
	}

	js, err := jetstream.New(nc)
	if err != nil {
		return nil, fmt.Errorf("registry: jetstream: %w", err)
	}
	if _, err := natsx.EnsureEventStream(ctx, js, natsx.WithReplicas(cfg.Replicas), natsx.WithLogger(log)); err != nil {
		return nil, fmt.Errorf("registry: %w", err)
	}
	store, counter, relays, client, err := openStore(ctx, js, cfg, log.With("component", "outbox-relay"))
	if err != nil {
		return nil, fmt.Errorf("registry: %w", err)
	}
	opts := []device.Option{device.WithLockout(cfg.Lockout), device.WithRecoveryKey(recoveryKey(keys[current])), device.WithOlderRecoveryKeys(olderRecovery...)}
	if !cfg.StepUpOff {
		opts = append(opts, device.WithStepUp(natsapi.StatusStepUp{NC: nc}))
	} else {
		opts = append(opts, device.WithRedeemer(natsapi.StatusStepUp{NC: nc}))
	}
	if len(cfg.DeliveryKey) > 0 {
		if _, err := natsx.EnsureDeliveryStream(ctx, js, natsx.WithReplicas(cfg.Replicas), natsx.WithLogger(log)); err != nil {
			return nil, fmt.Errorf("registry: %w", err)
		}
		opts = append(opts, device.WithOOB(cfg.OOB, codeKey(keys[current]), natsapi.NewDeliveries(js, cfg.DeliveryKey),
			natsapi.NewNotifierChannels(nc), counter))
	} else {
		log.Info("no delivery key (MFA_DELIVERY_KEY): EMAIL and SMS are inactive")
	}
	passkeysOff := cfg.WebAuthnInactive
	if cfg.WebAuthn != nil {
		// Settings go-webauthn refuses leave passkeys inactive, as settings config refuses do.
		if rp, err := passkeys.New(*cfg.WebAuthn); err != nil {
			passkeysOff = fmt.Sprintf("the WebAuthn settings do not work: %v", err)
		} else {
			opts = append(opts, device.WithWebAuthn(rp, handleKey(keys[current])))
		}
	}
	svc := device.NewService(store, box, clock, opts...)
	if err := svc.WebAuthnInactive(); err != nil {
		why := passkeysOff
		if why == "" {
			why = err.Error()
		}
		log.Warn("passkeys (WEBAUTHN) are inactive: "+why, "rp_id", rpID(cfg.WebAuthn))
	}
	// The background work outlives New's ctx (often a start-up deadline) but keeps its values.
	runCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	s := &Service{log: log, cancel: cancel, mongo: client, store: store, http: httpapi.New(svc, svc, svc, cfg.DisableConfirmURL, auth.NewCache(cfg.Verifier, 0),
		ratelimit.PerMinute(cfg.UserStartsPerMinute, cfg.UserStartBurst, cfg.Clock), log)}
	for _, relay := range relays {
		s.relaysStarted.Add(1)
		s.relays.Add(1)
		s.wg.Go(func() {
			defer s.relays.Add(-1)
			if err := relay(runCtx); err != nil {
				log.Error("outbox relay stopped", "err", err)
			}
		})
	}
	if s.micro, err = natsapi.StartService(runCtx, nc, svc, log, rpc.WithLimits(cfg.Commands), rpc.WithGroup(&s.cmds)); err != nil {
		_ = s.Close()
		return nil, fmt.Errorf("registry: %w", err)
	}
	if s.cons, err = natsapi.ConsumeEnrollmentEndings(ctx, runCtx, js, svc, log.With("component", "enrollment-endings")); err != nil {
		_ = s.Close()
		return nil, fmt.Errorf("registry: %w", err)
	}
	return s, nil
}

// Ready implements serve.Readier: the store answers and the outbox relays run.
func (s *Service) Ready(ctx context.Context) error {
	if n, want := s.relays.Load(), s.relaysStarted.Load(); n < want {
		return fmt.Errorf("%d of %d outbox relays stopped", want-n, want)
	}
	if _, err := s.store.Get(ctx, "readyz-probe"); err != nil && !errors.Is(err, device.ErrNotFound) {
		return errors.New("the store does not answer")
	}
	return nil
}

// Routes registers the registry's HTTP routes (/device-srv/devices…) on rt.
func (s *Service) Routes(rt *httpx.Router) { s.http.Routes(rt) }

// Close stops taking commands and events, cancels work in flight and waits for the relay to
// stop. Events already written stay in the store's outbox and are published by the next relay
// to run. Close is safe to call more than once.
func (s *Service) Close() error {
	s.closeOnce.Do(func() {
		var errs []error
		if s.micro != nil {
			if err := s.micro.Stop(); err != nil {
				errs = append(errs, fmt.Errorf("stop micro service: %w", err))
			}
		}
		if s.cons != nil {
			s.cons.Stop()
		}
		s.cancel()
		wctx, cancel := context.WithTimeout(context.Background(), closeTimeout)
		defer cancel()
		if err := s.cmds.Wait(wctx); err != nil { // commands in flight see their context cancelled
			errs = append(errs, err)
		}
		if s.cons != nil {
			select {
			case <-s.cons.Closed(): // the handler in flight, if any, has returned
			case <-wctx.Done():
				errs = append(errs, errors.New("enrollment endings consumer did not stop in time"))
			}
		}
		s.wg.Wait()
		if s.mongo != nil {
			if err := s.mongo.Disconnect(wctx); err != nil {
				errs = append(errs, fmt.Errorf("mongodb disconnect: %w", err))
			}
		}
		s.closeErr = errors.Join(errs...)
	})
	return s.closeErr
}

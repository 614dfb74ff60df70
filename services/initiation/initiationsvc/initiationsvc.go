// Package initiationsvc wires the initiation service: the HTTP front door that starts
// enrollments by commanding the device registry and the status service over NATS.
package initiationsvc

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/mfaflow/mfaflow/pkg/auth"
	"github.com/mfaflow/mfaflow/pkg/httpx"
	"github.com/mfaflow/mfaflow/pkg/natsx"
	"github.com/mfaflow/mfaflow/pkg/ratelimit"
	"github.com/mfaflow/mfaflow/services/initiation/internal/httpapi"
	"github.com/mfaflow/mfaflow/services/initiation/internal/natsapi"
	"github.com/mfaflow/mfaflow/services/initiation/internal/qr"
	"github.com/mfaflow/mfaflow/services/initiation/internal/setup"
	"github.com/nats-io/nats.go"
)

// Config configures the initiation service.
type Config struct {
	Verifier auth.Verifier
	// Issuer names the service in authenticator apps; default "mfaflow".
	Issuer string
	// PublicURL is the base URL put in the QR for the companion app (required).
	PublicURL string
	// ClientID is the authenticator client id; default derived from Issuer.
	ClientID string
	// EnrollmentTTL is how long an enrollment stays open; default 10m.
	EnrollmentTTL time.Duration
	// RequestTimeout bounds each command to another service; default 5s.
	RequestTimeout time.Duration
	// UserStartsPerMinute bounds the enrollments one user may start per minute on this replica,
	// after a burst of UserStartBurst (MFA_USER_START_RATE, MFA_USER_START_BURST); both routes
	// share one bucket per user. 0 means unlimited.
	UserStartsPerMinute float64
	UserStartBurst      int
	// WebAuthn says passkeys can work with this deployment's settings (pkg/config.WebAuthn);
	// false lists WEBAUTHN as inactive and answers its initiation 409 method_inactive.
	WebAuthn bool
	Clock    func() time.Time
}

// Service is a running initiation service.
type Service struct{ api *httpapi.API }

type qrRenderer struct{}

func (qrRenderer) PNGDataURI(s string) (string, error) { return qr.PNGDataURI(s) }
func (qrRenderer) SVG(s string) (string, error)        { return qr.SVG(s) }

// clientIDNamespace derives a stable authenticator client id from the issuer when none is set.
var clientIDNamespace = uuid.MustParse("0d3c7f52-6c1e-4b1a-9f0e-8e5d2a4b6c71")

// New builds the initiation service on nc. It has no background work, so it needs no Close.
func New(_ context.Context, nc *nats.Conn, cfg Config, log *slog.Logger) (*Service, error) {
	if cfg.Verifier == nil {
		return nil, errors.New("initiation: a token verifier is required")
	}
	if cfg.PublicURL == "" {
		return nil, errors.New("initiation: a public URL is required")
	}
	if cfg.Issuer == "" {
		cfg.Issuer = "mfaflow"
	}
	if cfg.ClientID == "" {
		cfg.ClientID = uuid.NewSHA1(clientIDNamespace, []byte(cfg.Issuer)).String()
	}
	if cfg.EnrollmentTTL <= 0 {
		cfg.EnrollmentTTL = 10 * time.Minute
	}
	clients := &natsapi.Clients{NC: nc, Timeout: cfg.RequestTimeout}
	return &Service{api: &httpapi.API{
		Service: &setup.Service{
			Registry: clients, Status: clients, QR: qrRenderer{}, Notifier: &natsx.NotifierChannels{NC: nc},
			Issuer: cfg.Issuer, PublicURL: strings.TrimRight(cfg.PublicURL, "/"), ClientID: cfg.ClientID,
			TTL: cfg.EnrollmentTTL, Now: cfg.Clock, WebAuthn: cfg.WebAuthn,
		},
		// A frontend sends the same token with every request: check its signature once.
		Verifier:   auth.NewCache(cfg.Verifier, 0),
		Log:        log,
		StartLimit: ratelimit.PerMinute(cfg.UserStartsPerMinute, cfg.UserStartBurst, cfg.Clock),
	}}, nil
}

// Routes registers the initiation HTTP routes on rt.
func (s *Service) Routes(rt *httpx.Router) { s.api.Routes(rt) }

// Close does nothing: initiation has no background work. It exists so the service runs like the
// others.
func (s *Service) Close() error { return nil }

package initiationsvc

import (
	"context"
	"log/slog"

	"github.com/mfaflow/mfaflow/pkg/config"
	"github.com/mfaflow/mfaflow/pkg/serve"
	"github.com/nats-io/nats.go"
)

// Name names the service in logs, in its NATS connection and in $SRV discovery.
const Name = "initiation"

// ConfigFrom maps the process configuration (the MFA_* environment) to this service's Config.
// The service's main and the dev stack both call it, so the environment is wired once.
func ConfigFrom(env config.Config) (Config, error) {
	verifier, err := env.Verifier()
	if err != nil {
		return Config{}, err
	}
	_, werr := env.WebAuthn()
	return Config{
		WebAuthn: werr == nil,
		Verifier: verifier, Issuer: env.Issuer, PublicURL: env.PublicURL, ClientID: env.ClientID,
		EnrollmentTTL:       env.EnrollmentTTL,
		UserStartsPerMinute: env.UserStartRate, UserStartBurst: env.UserStartBurst,
	}, nil
}

// Run is the service's main: it runs the service as its own process against MFA_NATS_URL until
// ctx ends, then shuts down HTTP, the service and the NATS connection (awaiting its drain).
func Run(ctx context.Context, env config.Config) error {
	cfg, err := ConfigFrom(env)
	if err != nil {
		return err
	}
	return serve.Standalone(ctx, env, Name, func(nc *nats.Conn, log *slog.Logger) (serve.Component, error) {
		return New(ctx, nc, cfg, log)
	})
}

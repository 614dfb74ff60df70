package statussvc

import (
	"context"
	"errors"
	"log/slog"

	"github.com/mfaflow/mfaflow/pkg/config"
	"github.com/mfaflow/mfaflow/pkg/serve"
	"github.com/nats-io/nats.go"
)

// Name names the service in logs, in its NATS connection and in $SRV discovery.
const Name = "status"

// ConfigFrom maps the process configuration (the MFA_* environment) to this service's Config.
// The service's main and the dev stack both call it, so the environment is wired once.
func ConfigFrom(env config.Config) (Config, error) {
	verifier, err := env.Verifier()
	if err != nil {
		return Config{}, err
	}
	if env.SigningKey == "" {
		return Config{}, errors.New("MFA_SIGNING_KEY is required (PEM of an EC P-256 private key; it signs mfa_token)")
	}
	_, werr := env.WebAuthn()
	return Config{
		WebAuthn: werr == nil,
		Verifier: verifier, Commands: env.CommandLimits(), Store: env.Store, MongoURI: env.MongoURI, Replicas: env.NATSReplicas,
		PollRate: env.PollRate, PollBurst: env.PollBurst,
		UserStartsPerMinute: env.UserStartRate, UserStartBurst: env.UserStartBurst, UserStreams: env.UserStreams,
		SigningKey: env.SigningKey, TokenIssuer: env.PublicURL, VerificationTTL: env.VerificationTTL, StepUpMaxAge: env.StepUpMaxAge, MaxSentAttempts: env.OOBMaxAttempts,
		MaxPushes: env.PushRate, PushWebhookURL: env.PushWebhookURL, PushWebhookSecret: []byte(env.PushWebhookSecret),
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

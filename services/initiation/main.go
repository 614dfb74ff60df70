// Command initiation runs the initiation service alone against MFA_NATS_URL: the method list
// and enrollment initiation.
package main

import (
	"context"
	"log/slog"

	"github.com/mfaflow/mfaflow/pkg/config"
	"github.com/mfaflow/mfaflow/pkg/serve"
	"github.com/mfaflow/mfaflow/services/initiation/initiationsvc"
	"github.com/nats-io/nats.go"
)

func main() { serve.Command(run) }

func run(ctx context.Context, cfg config.Config) error {
	verifier, err := cfg.TokenVerifier()
	if err != nil {
		return err
	}
	return serve.Standalone(ctx, cfg, "initiation", func(nc *nats.Conn, log *slog.Logger) (serve.Component, error) {
		return initiationsvc.New(nc, initiationsvc.Config{
			Verifier: verifier, Issuer: cfg.Issuer, PublicURL: cfg.PublicURL, ClientID: cfg.ClientID,
			EnrollmentTTL: cfg.EnrollmentTTL,
		}, log)
	})
}

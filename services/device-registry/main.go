// Command device-registry runs the device registry alone against MFA_NATS_URL: the only holder
// of TOTP secrets (encrypted with MFA_SECRET_KEY), devices and code checks.
package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"

	"github.com/mfaflow/mfaflow/pkg/config"
	"github.com/mfaflow/mfaflow/pkg/rpc"
	"github.com/mfaflow/mfaflow/pkg/secretbox"
	"github.com/mfaflow/mfaflow/pkg/serve"
	"github.com/mfaflow/mfaflow/services/device-registry/registry"
	"github.com/nats-io/nats.go"
)

func main() { serve.Command(run) }

func run(ctx context.Context, cfg config.Config) error {
	if cfg.SecretKey == "" {
		return errors.New("MFA_SECRET_KEY is required (32 bytes, base64 or hex)")
	}
	key, err := secretbox.ParseKey(cfg.SecretKey)
	if err != nil {
		return fmt.Errorf("MFA_SECRET_KEY: %w", err)
	}
	verifier, err := cfg.TokenVerifier()
	if err != nil {
		return err
	}
	return serve.Standalone(ctx, cfg, "device-registry", func(nc *nats.Conn, log *slog.Logger) (serve.Component, error) {
		return registry.New(ctx, nc, registry.Config{SecretKey: key, Verifier: verifier, Commands: rpc.Limits{MaxInFlight: cfg.CommandConcurrency, Timeout: cfg.CommandTimeout}}, log)
	})
}

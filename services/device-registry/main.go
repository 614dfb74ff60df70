// Command device-registry runs the device registry alone against MFA_NATS_URL: the only holder
// of TOTP secrets (encrypted with MFA_SECRET_KEY), devices and code checks.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"

	"github.com/mfaflow/mfaflow/pkg/config"
	"github.com/mfaflow/mfaflow/pkg/httpx"
	"github.com/mfaflow/mfaflow/pkg/natsx"
	"github.com/mfaflow/mfaflow/pkg/secretbox"
	"github.com/mfaflow/mfaflow/pkg/serve"
	"github.com/mfaflow/mfaflow/services/device-registry/registry"
)

func main() {
	cfg, err := config.FromEnv(os.Getenv)
	if err != nil {
		fmt.Fprintln(os.Stderr, "configuration:", err)
		os.Exit(2)
	}
	serve.Main(cfg.Logger(), func(ctx context.Context) error { return run(ctx, cfg) })
}

func run(ctx context.Context, cfg config.Config) error {
	log := cfg.Logger().With("service", "device-registry")
	if cfg.NATSURL == "" {
		return errors.New("MFA_NATS_URL is required")
	}
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
	nc, err := natsx.Connect(cfg.NATSURL, "mfaflow-device-registry")
	if err != nil {
		return err
	}
	defer nc.Drain()
	svc, err := registry.New(ctx, nc, registry.Config{SecretKey: key, Verifier: verifier}, log)
	if err != nil {
		return err
	}
	defer svc.Close()
	// Listen only once the service is wired: an open port means ready.
	ln, err := serve.Listen(cfg.HTTPAddr)
	if err != nil {
		return err
	}
	rt := httpx.NewRouter()
	svc.Routes(rt)
	log.Info("serving", "addr", ln.Addr().String(), "config", cfg)
	return serve.HTTP(ctx, serve.NewServer(rt), ln)
}

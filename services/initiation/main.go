// Command initiation runs the initiation service alone against MFA_NATS_URL: the method list
// and enrollment initiation.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"

	"github.com/mfaflow/mfaflow/pkg/config"
	"github.com/mfaflow/mfaflow/pkg/httpx"
	"github.com/mfaflow/mfaflow/pkg/natsx"
	"github.com/mfaflow/mfaflow/pkg/serve"
	"github.com/mfaflow/mfaflow/services/initiation/initiationsvc"
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
	log := cfg.Logger().With("service", "initiation")
	if cfg.NATSURL == "" {
		return errors.New("MFA_NATS_URL is required")
	}
	verifier, err := cfg.TokenVerifier()
	if err != nil {
		return err
	}
	nc, err := natsx.Connect(cfg.NATSURL, "mfaflow-initiation")
	if err != nil {
		return err
	}
	defer nc.Drain()
	svc, err := initiationsvc.New(nc, initiationsvc.Config{
		Verifier: verifier, Issuer: cfg.Issuer, PublicURL: cfg.PublicURL, ClientID: cfg.ClientID,
		EnrollmentTTL: cfg.EnrollmentTTL,
	}, log)
	if err != nil {
		return err
	}
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

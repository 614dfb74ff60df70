// Command status runs the status service alone against MFA_NATS_URL: the enrollment state
// machine, the status HTTP API (poll, SSE, websocket), expiry and the outbox relay.
package main

import (
	"context"
	"log/slog"

	"github.com/mfaflow/mfaflow/pkg/config"
	"github.com/mfaflow/mfaflow/pkg/rpc"
	"github.com/mfaflow/mfaflow/pkg/serve"
	"github.com/mfaflow/mfaflow/services/status/statussvc"
	"github.com/nats-io/nats.go"
)

func main() { serve.Command(run) }

func run(ctx context.Context, cfg config.Config) error {
	verifier, err := cfg.TokenVerifier()
	if err != nil {
		return err
	}
	return serve.Standalone(ctx, cfg, "status", func(nc *nats.Conn, log *slog.Logger) (serve.Component, error) {
		return statussvc.New(ctx, nc, statussvc.Config{Verifier: verifier, Commands: rpc.Limits{MaxInFlight: cfg.CommandConcurrency, Timeout: cfg.CommandTimeout}, PollRate: cfg.PollRate, PollBurst: cfg.PollBurst}, log)
	})
}

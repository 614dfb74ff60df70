// Command mobile-bridge runs the websocket gateway for companion apps alone against
// MFA_NATS_URL.
package main

import (
	"context"
	"log/slog"

	"github.com/mfaflow/mfaflow/mobile-bridge/bridge"
	"github.com/mfaflow/mfaflow/pkg/config"
	"github.com/mfaflow/mfaflow/pkg/serve"
	"github.com/nats-io/nats.go"
)

func main() { serve.Command(run) }

func run(ctx context.Context, cfg config.Config) error {
	return serve.Standalone(ctx, cfg, "mobile-bridge", func(nc *nats.Conn, log *slog.Logger) (serve.Component, error) {
		return bridge.New(nc, bridge.Config{
			MaxConnections: cfg.BridgeMaxConnections, FrameRate: cfg.BridgeFrameRate, FrameBurst: cfg.BridgeFrameBurst,
		}, log), nil
	})
}

// Command devstack runs all of mfaflow in one process with an embedded NATS server: what
// `make run` starts.
package main

import (
	"context"
	"fmt"

	"github.com/mfaflow/mfaflow/devstack/stack"
	"github.com/mfaflow/mfaflow/pkg/config"
	"github.com/mfaflow/mfaflow/pkg/serve"
)

func main() { serve.Command(run) }

func run(ctx context.Context, cfg config.Config) error {
	log := cfg.Logger()
	log.Info("starting dev stack", "config", cfg)
	s, err := stack.Start(ctx, cfg, stack.Options{}, log)
	if err != nil {
		return err
	}
	defer s.Close()
	inbox := s.InboxURL()
	if inbox == "" {
		inbox = "off: messages go to MFA_SMTP_URL / MFA_SMS_PROVIDER"
	} else {
		inbox += "   (every mail and SMS the notifier sent; JSON: " + inbox + "/messages)"
	}
	passkeys := "on at " + cfg.PublicURL + " (open the demo page there: passkeys are bound to its host)"
	if _, err := cfg.WebAuthn(); err != nil {
		passkeys = "off: " + err.Error()
	}
	tokens := fmt.Sprintf(`curl -s -X POST %s/dev/token -d '{"sub":"alice"}'`, s.URL())
	if cfg.JWKSURL != "" {
		tokens = "from the identity provider (MFA_JWT_JWKS_URL); POST /dev/token is off"
	}
	fmt.Printf(`
mfaflow dev stack is up
  Demo page     %[1]s/
  HTTP API      %[1]s   (reference: %[1]s/openapi.json)
  Companion     go run ./mobile-bridge/cmd/companion enroll --qr qr.png   (bridge: %[1]s/mobile-bridge/v1/connect)
  NATS          %[2]s   (events: stream MFA_EVENTS, subjects mfa.events.>; watch: go run ./devstack/cmd/events)
  Tokens        %[4]s
  Dev inbox     %[5]s
  Passkeys      %[6]s
  Data dir      %[3]s
Press Ctrl-C to stop.
`, s.URL(), s.NATSURL(), cfg.DataDir, tokens, inbox, passkeys)
	select {
	case <-ctx.Done():
		log.Info("shutting down")
		return nil
	case <-s.Done():
		return s.Err()
	}
}

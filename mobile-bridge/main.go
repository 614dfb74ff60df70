// Command mobile-bridge runs the websocket gateway for companion apps alone against
// MFA_NATS_URL; see package bridgesvc.
package main

import (
	"github.com/mfaflow/mfaflow/mobile-bridge/bridgesvc"
	"github.com/mfaflow/mfaflow/pkg/serve"
)

func main() { serve.Command(bridgesvc.Run) }

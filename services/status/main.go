// Command status runs the status service alone against MFA_NATS_URL; see package statussvc.
package main

import (
	"github.com/mfaflow/mfaflow/pkg/serve"
	"github.com/mfaflow/mfaflow/services/status/statussvc"
)

func main() { serve.Command(statussvc.Run) }

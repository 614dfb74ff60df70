// Command initiation runs the initiation service alone against MFA_NATS_URL; see package initiationsvc.
package main

import (
	"github.com/mfaflow/mfaflow/pkg/serve"
	"github.com/mfaflow/mfaflow/services/initiation/initiationsvc"
)

func main() { serve.Command(initiationsvc.Run) }

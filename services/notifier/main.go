// Command notifier runs the notifier alone against MFA_NATS_URL; see package notifiersvc.
package main

import (
	"github.com/mfaflow/mfaflow/pkg/serve"
	"github.com/mfaflow/mfaflow/services/notifier/notifiersvc"
)

func main() { serve.Command(notifiersvc.Run) }

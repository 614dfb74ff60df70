// Command device-registry runs the device-registry service alone against MFA_NATS_URL; see package registrysvc.
package main

import (
	"github.com/mfaflow/mfaflow/pkg/serve"
	"github.com/mfaflow/mfaflow/services/device-registry/registrysvc"
)

func main() { serve.Command(registrysvc.Run) }

package device

import (
	"testing"

	"github.com/mfaflow/mfaflow/events/method"
)

// TestFactorChecksCoverTheRegistration: the registry answers for every registered method, with
// a check exactly for the methods whose sign-in ends with something the registry checks (a typed
// code, a passkey's assertion) rather than an answer on a device.
func TestFactorChecksCoverTheRegistration(t *testing.T) {
	for _, m := range method.All() {
		fc, ok := factorChecks[m.Name]
		if !ok || fc.ready == nil {
			t.Errorf("%s: no readiness check in factorChecks", m.Name)
			continue
		}
		if code := m.SignIn != method.Device; code != (fc.check != nil) {
			t.Errorf("%s: a check is %v, want %v", m.Name, fc.check != nil, code)
		}
	}
	if len(factorChecks) != len(method.All()) {
		t.Errorf("factorChecks answers for %d methods, the registration has %d", len(factorChecks), len(method.All()))
	}
}

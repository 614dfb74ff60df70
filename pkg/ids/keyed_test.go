package ids_test

import (
	"testing"

	"github.com/mfaflow/mfaflow/pkg/ids"
)

// Keyed ids must never change: a client retrying an initiation across a deploy must find what
// its first attempt made. The answers are those the status service derived before Keyed moved
// here.
func TestKeyed(t *testing.T) {
	for scope, want := range map[string][2]string{
		"enrollment":          {"e2cff6d3-ca1c-8d8d-8977-12d81f96de2f", "f4cdbbf8-d730-8c1b-a6c7-bccc4a6b318b"},
		"authentication/TOTP": {"97c8fc66-7eee-830f-85f3-6217d59e52ae", "f851bf07-f281-870a-a437-6f754e3ce3b2"},
		"authentication/PUSH": {"0d80db8b-c51b-84d4-9d2e-e51f55b455d2", "10affe78-a20d-8ead-b6f0-89d4404bad02"},
	} {
		id, exchangeID := ids.Keyed([]byte("secret"), scope, "alice", "key-1")
		if id != want[0] || exchangeID != want[1] || !ids.Valid(id) || !ids.Valid(exchangeID) {
			t.Errorf("%s: %s %s, want %s %s", scope, id, exchangeID, want[0], want[1])
		}
	}
	if a, _ := ids.Keyed([]byte("secret"), "enrollment", "alice", "key-2"); a == "e2cff6d3-ca1c-8d8d-8977-12d81f96de2f" {
		t.Error("another key, the same id")
	}
}

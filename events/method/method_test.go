package method_test

import (
	"testing"

	"github.com/mfaflow/mfaflow/events/method"
)

func TestRegistration(t *testing.T) {
	seen := map[string]bool{}
	for _, m := range method.All() {
		if m.Name == "" || m.Route == "" || len(m.AMR) == 0 || m.SignIn == 0 {
			t.Errorf("incomplete method %+v", m)
		}
		if seen[m.Name] || seen[m.Route] {
			t.Errorf("%s registered twice", m.Name)
		}
		seen[m.Name], seen[m.Route] = true, true
		if got, ok := method.ByRoute(m.Route); !ok || got.Name != m.Name {
			t.Errorf("ByRoute(%q) = %+v, %v", m.Route, got, ok)
		}
		if got, ok := method.ByName(m.Name); !ok || got.Route != m.Route {
			t.Errorf("ByName(%q) = %+v, %v", m.Name, got, ok)
		}
	}
	if m, ok := method.ByRoute("TOTP"); !ok || m.Name != method.TOTP {
		t.Errorf("route segments are case-insensitive: %+v %v", m, ok)
	}
	if _, ok := method.ByRoute("fax"); ok {
		t.Error("an unregistered method was found")
	}
	all := method.All()
	all[0].AMR[0] = "changed"
	if m, _ := method.ByName(all[0].Name); m.AMR[0] == "changed" {
		t.Error("All hands out the registration's own slices")
	}
}

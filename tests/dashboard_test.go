package tests_test

import (
	"encoding/json"
	"net/http"
	"os"
	"regexp"
	"testing"

	"github.com/mfaflow/mfaflow/events"
	"github.com/prometheus/client_golang/prometheus"
)

// TestDashboardQueriesExistingMetrics: every metric the Grafana dashboard in deploy/grafana
// queries is one the services register, so a renamed metric cannot leave an empty panel.
func TestDashboardQueriesExistingMetrics(t *testing.T) {
	// A metric vector appears once it has a sample: run an enrollment and a sign-in first.
	s := startSignIn(t, nil)
	alice := s.token(t, "alice", "", "")
	secret := s.enrollDevice(t, alice)
	s.nextStep()
	in := s.startAuth(t, alice, "totp", nil)
	s.MustJSON(t, http.MethodPost, "/verification-srv/authentication/totp/verification", alice,
		map[string]string{"exchange_id": in.ExchangeID.ExchangeID, "pass_code": s.code(t, secret)}, http.StatusOK, nil)
	s.rec.WaitTypes(t, in.StatusID, events.VerificationInitiated, events.VerificationSucceeded)
	data, err := os.ReadFile("../deploy/grafana/mfaflow-dashboard.json")
	if err != nil {
		t.Fatal(err)
	}
	var dash struct {
		Panels []struct {
			Title   string `json:"title"`
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
	}
	if err := json.Unmarshal(data, &dash); err != nil {
		t.Fatal(err)
	}
	families, err := prometheus.DefaultGatherer.Gather()
	if err != nil {
		t.Fatal(err)
	}
	known := map[string]bool{}
	for _, f := range families {
		known[f.GetName()] = true
		for _, suffix := range []string{"_bucket", "_sum", "_count"} {
			known[f.GetName()+suffix] = true
		}
	}
	name := regexp.MustCompile(`\bmfa_[a-z_]+`)
	queried := 0
	for _, p := range dash.Panels {
		if len(p.Targets) == 0 {
			t.Errorf("panel %q has no query", p.Title)
		}
		for _, tg := range p.Targets {
			for _, m := range name.FindAllString(tg.Expr, -1) {
				queried++
				if !known[m] {
					t.Errorf("panel %q queries %s, which no service registers", p.Title, m)
				}
			}
		}
	}
	if queried < 10 {
		t.Fatalf("only %d metric references in the dashboard", queried)
	}
}

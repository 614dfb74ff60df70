package tests_test

import (
	"bufio"
	"bytes"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/mfaflow/mfaflow/events"
	"github.com/mfaflow/mfaflow/pkg/natstest"
)

// scrape reads /metrics and returns the value of every sample line, by its full name with labels.
func scrape(t *testing.T, s *signIn) map[string]float64 {
	t.Helper()
	r := s.Do(t, http.MethodGet, "/metrics", "", nil)
	if r.Status != http.StatusOK {
		t.Fatalf("/metrics: %d", r.Status)
	}
	out := map[string]float64{}
	sc := bufio.NewScanner(bytes.NewReader(r.Body))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			t.Fatalf("metrics line %q: %v", line, err)
		}
		out[line[:i]] = v
	}
	return out
}

// sum adds up the samples of metric name whose labels contain every given label pair.
func sum(m map[string]float64, name string, labels ...string) float64 {
	total := 0.0
	for k, v := range m {
		if !strings.HasPrefix(k, name+"{") && k != name {
			continue
		}
		ok := true
		for _, l := range labels {
			if !strings.Contains(k, l) {
				ok = false
			}
		}
		if ok {
			total += v
		}
	}
	return total
}

// TestMetricsAndReadiness: after an enrollment and a sign-in, /metrics shows the requests by
// route and code, the commands by subject, the relayed events, the transitions and the factor
// check; /readyz answers ready. The dev stack is one process, so all services report in one
// /metrics; counters are compared before and after, since other tests share the process.
func TestMetricsAndReadiness(t *testing.T) {
	s := startSignIn(t, nil)
	if r := s.Do(t, http.MethodGet, "/readyz", "", nil); r.Status != http.StatusOK || !strings.Contains(string(r.Body), "ready") {
		t.Fatalf("/readyz: %d %s", r.Status, r.Body)
	}
	before := scrape(t, s)
	alice := s.token(t, "alice", "", "")
	secret := s.enrollDevice(t, alice)
	s.nextStep()
	in := s.startAuth(t, alice, "totp", nil)
	s.MustJSON(t, http.MethodPost, "/verification-srv/authentication/totp/verification", alice,
		map[string]string{"exchange_id": in.ExchangeID.ExchangeID, "pass_code": s.code(t, secret)}, http.StatusOK, nil)
	s.MustProblem(t, s.Do(t, http.MethodGet, "/verification-srv/verificationstatus/not-there", alice, nil), http.StatusNotFound, "not_found")
	s.rec.WaitTypes(t, in.StatusID, events.VerificationInitiated, events.VerificationSucceeded)

	natstest.Eventually(t, 10*time.Second, func() error {
		after := scrape(t, s)
		moved := func(name string, labels ...string) bool {
			return sum(after, name, labels...) > sum(before, name, labels...)
		}
		checks := map[string]bool{
			"initiation request 200": moved("mfa_http_requests_total", `route="POST /verification-srv/v2/setup/initiate/{type}"`, `code="200"`),
			"poll 404":               moved("mfa_http_requests_total", `route="GET /verification-srv/verificationstatus/{status_id}"`, `code="404"`),
			"latency histogram":      moved("mfa_http_request_duration_seconds_count", `route="POST /verification-srv/authentication/{method}/verification"`),
			"create command":         moved("mfa_nats_commands_total", `subject="mfa.status.v1.create"`, `outcome="ok"`),
			"factor check command":   moved("mfa_nats_command_duration_seconds_count", `subject="mfa.registry.v1.factors.check"`),
			"events relayed":         moved("mfa_outbox_relayed_events_total"),
			"enrolled":               moved("mfa_status_transitions_total", `kind="enrollment"`, `state="ENROLLED"`),
			"authenticated":          moved("mfa_status_transitions_total", `kind="authentication"`, `state="AUTHENTICATED"`),
			"factor check ok":        moved("mfa_factor_checks_total", `method="TOTP"`, `result="ok"`),
		}
		var missing []string
		for what, ok := range checks {
			if !ok {
				missing = append(missing, what)
			}
		}
		if len(missing) > 0 {
			return fmt.Errorf("metrics did not move: %v", missing)
		}
		return nil
	})
}

package tests_test

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/mfaflow/mfaflow/events"
	"github.com/mfaflow/mfaflow/tests/harness"
)

// TestImpossibleStatusIDs: ids that no enrollment can have (too long for a NATS control line,
// wildcards, extra subject tokens, control characters) answer 404 not_found on every status
// route, and the status service is still fully working afterwards: polls answer and live
// streams still hear changes over NATS. A 4,200-character id once made the NATS server drop the
// status service's connection ("maximum control line exceeded").
func TestImpossibleStatusIDs(t *testing.T) {
	st := harness.Start(t, harness.Options{Heartbeat: 100 * time.Millisecond}, nil)
	alice := st.Token(t, "alice")
	in := initiate(t, st, alice, "?qr=none")

	bad := []string{
		strings.Repeat("a", 4200),
		strings.Repeat("b", 129),
		"a%20b", "*", ">", "x.y.z", "a.>", "%0d%0aSet-Cookie:%20x", "%2A", "a%2Fb", "%C3%A9", "a%00b",
	}
	for _, id := range bad {
		name := id
		if len(name) > 20 {
			name = name[:20] + "…"
		}
		for _, route := range []struct{ method, suffix string }{
			{http.MethodGet, ""}, {http.MethodDelete, ""}, {http.MethodGet, "/events"}, {http.MethodGet, "/ws"},
		} {
			r := st.Do(t, route.method, "/verification-srv/verificationstatus/"+id+route.suffix, alice, nil)
			if r.Status != http.StatusNotFound {
				t.Fatalf("%s %s%s: %d %s", route.method, name, route.suffix, r.Status, r.Body)
			}
			st.MustProblem(t, r, http.StatusNotFound, "not_found")
		}
		// The websocket route refuses before upgrading, also when asked to upgrade.
		r := st.Do(t, http.MethodGet, "/verification-srv/verificationstatus/"+id+"/ws", alice, nil,
			"Connection", "Upgrade", "Upgrade", "websocket", "Sec-WebSocket-Version", "13", "Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==")
		st.MustProblem(t, r, http.StatusNotFound, "not_found")
	}
	// The typed-code route checks the exchange id the same way.
	for _, eid := range []string{strings.Repeat("e", 4200), "*", ">", "x.y", "a b", "\r\n"} {
		r := st.Do(t, http.MethodPost, "/verification-srv/v2/setup/enroll/totp", alice, map[string]string{"exchange_id": eid, "verification_code": "123456"})
		st.MustProblem(t, r, http.StatusNotFound, "not_found")
	}

	// Still up: a poll answers, and a live stream hears a change announced over NATS.
	if s := poll(t, st, alice, in.StatusID); s.Status != "INITIATED" {
		t.Fatalf("poll after bad ids: %+v", s)
	}
	resp, events := openSSE(t, st.URL, in.StatusID, alice)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("SSE after bad ids: %d", resp.StatusCode)
	}
	if _, s := nextStatus(t, events); s.Status != "INITIATED" {
		t.Fatalf("first live status %+v", s)
	}
	st.MustJSON(t, http.MethodDelete, "/verification-srv/verificationstatus/"+in.StatusID, alice, nil, http.StatusOK, nil)
	if _, s := nextStatus(t, events); s.Status != "CANCELLED" {
		t.Fatalf("live status after cancel %+v", s)
	}
}

// TestSubTooLongForQR: on the dev stack, a token whose sub is 10 KB cannot be enrolled (its
// otpauth URI cannot fit in a QR code): 400 bad_request and nothing stored, so no event. A
// normal initiation afterwards works and is the only event in the stream.
func TestSubTooLongForQR(t *testing.T) {
	st := harness.Start(t, harness.Options{}, nil)
	rec := st.RecordEvents(t)
	// POST /dev/token caps sub at 256 characters; a real identity provider need not.
	long, err := st.Stack.Token(strings.Repeat("u", 10_000))
	if err != nil {
		t.Fatal(err)
	}
	r := st.Do(t, http.MethodPost, "/verification-srv/v2/setup/initiate/totp", long, nil)
	st.MustProblem(t, r, http.StatusBadRequest, "bad_request")

	in := initiate(t, st, st.Token(t, "alice"), "?qr=none")
	rec.WaitTypes(t, in.StatusID, events.EnrollmentInitiated)
	if all := rec.All(); len(all) != 1 {
		t.Fatalf("events %v, want only the normal initiation", all)
	}
}

package tests_test

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/mfaflow/mfaflow/pkg/natstest"
	"github.com/mfaflow/mfaflow/tests/harness"
)

// The per-user limits of DESIGN.md ("Tokens and limits that hold against a stolen session"):
// MFA_USER_START_RATE and MFA_USER_START_BURST bound the enrollments, sign-ins and recovery-code
// sets one user starts, MFA_USER_STREAMS the live streams one user holds open.

// userLimits is a small limit on the sign-in world's frozen clock: 3 at once, then 1 a second.
// Step-up is off: these tests change one user's factors many times in a row, which is what the
// limits are about (tests/stepup_test.go covers step-up).
var userLimits = map[string]string{"MFA_USER_START_RATE": "60", "MFA_USER_START_BURST": "3", "MFA_STEP_UP": "off"}

// mustLimited requires the 429 of a per-user limit, with a Retry-After in whole seconds.
func mustLimited(t *testing.T, st *harness.Stack, r harness.Response, retryAfter string) {
	t.Helper()
	st.MustProblem(t, r, http.StatusTooManyRequests, "too_many_requests")
	if got := r.Header.Get("Retry-After"); got != retryAfter {
		t.Fatalf("Retry-After %q, want %q", got, retryAfter)
	}
}

// TestUserStartRateEnrollment: the 4th enrollment in a row of one user (both initiation routes
// share the user's bucket) is refused; another user is not; a second later one more goes.
func TestUserStartRateEnrollment(t *testing.T) {
	s := startSignIn(t, userLimits)
	alice, bob := s.token(t, "alice", "", ""), s.token(t, "bob", "", "")
	routes := []string{"/verification-srv/v2/setup/initiate/totp?qr=none", "/verification-actions-srv/setup/totp/initiation?qr=none"}
	for i := range 3 {
		s.MustJSON(t, http.MethodPost, routes[i%2], alice, nil, http.StatusOK, nil)
	}
	for _, route := range routes {
		mustLimited(t, s.Stack, s.Do(t, http.MethodPost, route, alice, nil), "1")
	}
	s.MustJSON(t, http.MethodPost, routes[0], bob, nil, http.StatusOK, nil)
	s.clock.Advance(time.Second)
	s.MustJSON(t, http.MethodPost, routes[1], alice, nil, http.StatusOK, nil)
	mustLimited(t, s.Stack, s.Do(t, http.MethodPost, routes[0], alice, nil), "1")
}

// TestUserStartRateSignIn: the 4th sign-in in a row of one user is refused, also when a service
// token starts them for the user: they count against the user named in the body, not the
// service, which may go on starting sign-ins for other users.
func TestUserStartRateSignIn(t *testing.T) {
	s := startSignIn(t, userLimits)
	const start = "/verification-srv/authentication/totp/initiation"
	users := map[string]string{}
	for _, sub := range []string{"alice", "bob", "carol"} {
		users[sub] = s.token(t, sub, "", "")
		s.enrollDevice(t, users[sub])
	}
	idp := s.token(t, "login-service", "openid mfa:verify", "shop-frontend")

	t.Run("User", func(t *testing.T) {
		for range 3 {
			s.startAuth(t, users["alice"], "totp", nil)
		}
		mustLimited(t, s.Stack, s.Do(t, http.MethodPost, start, users["alice"], nil), "1")
		s.startAuth(t, users["bob"], "totp", nil)
	})
	t.Run("ServiceTokenCountsAgainstTheUser", func(t *testing.T) {
		// bob started one above: two more by the service fill his burst.
		for range 2 {
			if in := s.startAuth(t, idp, "totp", map[string]any{"sub": "bob"}); in.Sub != "bob" {
				t.Fatalf("sign-in for %q, want bob", in.Sub)
			}
		}
		mustLimited(t, s.Stack, s.Do(t, http.MethodPost, start, idp, map[string]any{"sub": "bob"}), "1")
		mustLimited(t, s.Stack, s.Do(t, http.MethodPost, start, users["bob"], nil), "1")
		// The service is not limited as itself: carol's sign-ins are carol's.
		for range 3 {
			s.startAuth(t, idp, "totp", map[string]any{"sub": "carol"})
		}
		mustLimited(t, s.Stack, s.Do(t, http.MethodPost, start, users["carol"], nil), "1")
	})
}

// TestUserStartRateRecoveryCodes: the 4th recovery-code set in a row of one user is refused;
// another user's is not.
func TestUserStartRateRecoveryCodes(t *testing.T) {
	s := startSignIn(t, userLimits)
	alice, bob := s.token(t, "alice", "", ""), s.token(t, "bob", "", "")
	const path = "/verification-srv/backupcodes"
	for range 3 {
		s.MustJSON(t, http.MethodPost, path, alice, nil, http.StatusCreated, nil)
	}
	mustLimited(t, s.Stack, s.Do(t, http.MethodPost, path, alice, nil), "1")
	s.MustJSON(t, http.MethodPost, path, bob, nil, http.StatusCreated, nil)
	s.clock.Advance(time.Second)
	s.MustJSON(t, http.MethodPost, path, alice, nil, http.StatusCreated, nil)
}

// TestUserStartRateOff: MFA_USER_START_RATE=0 lets one user start far more than the burst.
func TestUserStartRateOff(t *testing.T) {
	s := startSignIn(t, map[string]string{"MFA_USER_START_RATE": "0", "MFA_USER_START_BURST": "1", "MFA_STEP_UP": "off"})
	alice := s.token(t, "alice", "", "")
	s.enrollDevice(t, alice)
	for range 5 {
		s.MustJSON(t, http.MethodPost, "/verification-srv/v2/setup/initiate/totp?qr=none", alice, nil, http.StatusOK, nil)
		s.startAuth(t, alice, "totp", nil)
		s.MustJSON(t, http.MethodPost, "/verification-srv/backupcodes", alice, nil, http.StatusCreated, nil)
	}
}

// liveStream is one open SSE or websocket status stream.
type liveStream struct {
	close func()
	// ended is closed when the server ends the stream.
	ended <-chan struct{}
}

// openStream opens a live stream of statusID as token's user; it returns the refusal (status
// and Retry-After) when the server does not open it.
func openStream(t *testing.T, st *harness.Stack, kind, statusID, token string) (*liveStream, int, string) {
	t.Helper()
	path := "/verification-srv/verificationstatus/" + statusID + "/" + kind + "?access_token=" + token
	ended := make(chan struct{})
	switch kind {
	case "events":
		ctx, cancel := context.WithCancel(context.Background())
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, st.URL+path, nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			cancel()
			t.Fatal(err)
		}
		if resp.StatusCode != http.StatusOK {
			defer cancel()
			defer resp.Body.Close()
			checkRefusal(t, resp)
			return nil, resp.StatusCode, resp.Header.Get("Retry-After")
		}
		events := make(chan sseEvent, 16)
		go readSSE(resp.Body, events)
		go func() {
			defer close(ended)
			for range events {
			}
		}()
		t.Cleanup(func() { cancel(); resp.Body.Close() })
		return &liveStream{close: func() { cancel(); resp.Body.Close() }, ended: ended}, http.StatusOK, ""
	case "ws":
		conn, resp, err := websocket.DefaultDialer.Dial("ws"+strings.TrimPrefix(st.URL, "http")+path, nil)
		if err != nil {
			if resp == nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			checkRefusal(t, resp)
			return nil, resp.StatusCode, resp.Header.Get("Retry-After")
		}
		go func() {
			defer close(ended)
			for {
				if _, _, err := conn.ReadMessage(); err != nil {
					return
				}
			}
		}()
		t.Cleanup(func() { conn.Close() })
		return &liveStream{close: func() { conn.Close() }, ended: ended}, http.StatusSwitchingProtocols, ""
	}
	t.Fatalf("unknown stream kind %q", kind)
	return nil, 0, ""
}

// checkRefusal requires a refused stream to be a plain problem+json answer, not an upgrade or
// an event stream that broke.
func checkRefusal(t *testing.T, resp *http.Response) {
	t.Helper()
	if ct := resp.Header.Get("Content-Type"); ct != "application/problem+json" {
		t.Fatalf("refused stream: status %d, content type %q, want problem+json", resp.StatusCode, ct)
	}
	if resp.Header.Get("Upgrade") != "" {
		t.Fatal("refused stream carries an Upgrade header")
	}
}

// mustOpen opens a stream that must be accepted.
func mustOpen(t *testing.T, st *harness.Stack, kind, statusID, token string) *liveStream {
	t.Helper()
	s, status, _ := openStream(t, st, kind, statusID, token)
	if s == nil {
		t.Fatalf("%s stream refused with %d", kind, status)
	}
	return s
}

// mustRefuse requires a stream to be refused by the user's stream limit.
func mustRefuse(t *testing.T, st *harness.Stack, kind, statusID, token string) {
	t.Helper()
	s, status, retry := openStream(t, st, kind, statusID, token)
	if s != nil {
		t.Fatalf("%s stream accepted past the user's limit", kind)
	}
	if status != http.StatusTooManyRequests || retry == "" {
		t.Fatalf("%s stream: status %d, Retry-After %q; want 429 with Retry-After", kind, status, retry)
	}
}

// eventuallyOpen retries a stream until the server has counted a closed one out.
func eventuallyOpen(t *testing.T, st *harness.Stack, kind, statusID, token string) *liveStream {
	t.Helper()
	var opened *liveStream
	natstest.Eventually(t, 10*time.Second, func() error {
		s, status, _ := openStream(t, st, kind, statusID, token)
		if s == nil {
			return fmt.Errorf("%s stream still refused with %d", kind, status)
		}
		opened = s
		return nil
	})
	return opened
}

// TestUserStreams: with MFA_USER_STREAMS=2 a user's third live stream, SSE or websocket, is
// refused with 429 before the stream starts (no upgrade, no event-stream headers); another user
// is unaffected; once a stream ends, whichever way (the client leaves, the enrollment ends, the
// stream was refused), the user may open one again.
func TestUserStreams(t *testing.T) {
	st := harness.Start(t, harness.Options{}, map[string]string{"MFA_USER_STREAMS": "2"})
	for _, kind := range []string{"events", "ws"} {
		t.Run(kind, func(t *testing.T) {
			alice, bob := st.Token(t, "alice-"+kind), st.Token(t, "bob-"+kind)
			in := initiate(t, st, alice, "?qr=none")
			first := mustOpen(t, st, kind, in.StatusID, alice)
			second := mustOpen(t, st, kind, in.StatusID, alice)
			mustRefuse(t, st, "events", in.StatusID, alice)
			mustRefuse(t, st, "ws", in.StatusID, alice)

			// bob's streams are his own; ones refused (another user's enrollment) hold no slot.
			for _, k := range []string{"events", "ws", "events"} {
				if s, status, _ := openStream(t, st, k, in.StatusID, bob); s != nil || status != http.StatusNotFound {
					t.Fatalf("bob's %s stream of alice's enrollment: %d, want 404", k, status)
				}
			}
			bobs := initiate(t, st, bob, "?qr=none")
			mustOpen(t, st, kind, bobs.StatusID, bob)
			mustOpen(t, st, kind, bobs.StatusID, bob)

			// The client leaves: its slot frees.
			first.close()
			third := eventuallyOpen(t, st, kind, in.StatusID, alice)
			mustRefuse(t, st, kind, in.StatusID, alice)

			// The enrollment ends: the server ends both streams, and their slots free.
			st.MustJSON(t, http.MethodDelete, "/verification-srv/verificationstatus/"+in.StatusID, alice, nil, http.StatusOK, nil)
			for _, s := range []*liveStream{second, third} {
				select {
				case <-s.ended:
				case <-time.After(10 * time.Second):
					t.Fatal("a stream of a cancelled enrollment did not end")
				}
			}
			next := initiate(t, st, alice, "?qr=none")
			eventuallyOpen(t, st, kind, next.StatusID, alice)
			mustOpen(t, st, kind, next.StatusID, alice)
			mustRefuse(t, st, kind, next.StatusID, alice)
		})
	}
}

// TestUserStreamsOff: MFA_USER_STREAMS=0 lets one user open many streams.
func TestUserStreamsOff(t *testing.T) {
	st := harness.Start(t, harness.Options{}, map[string]string{"MFA_USER_STREAMS": "0"})
	alice := st.Token(t, "alice")
	in := initiate(t, st, alice, "?qr=none")
	for i := range 30 {
		mustOpen(t, st, []string{"events", "ws"}[i%2], in.StatusID, alice)
	}
}

package webhook_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mfaflow/mfaflow/pkg/natstest"
	"github.com/mfaflow/mfaflow/pkg/testkit"
	"github.com/mfaflow/mfaflow/services/status/internal/webhook"
)

var secret = []byte("wake-up-secret-wake-up-secret-wake-up")

// request is what the test server saw of one request.
type request struct {
	Method string
	Header http.Header
	Body   []byte
}

// receiver is a real HTTP server that records requests and answers with status(n) for the
// n-th request (1-based).
type receiver struct {
	srv  *httptest.Server
	reqs chan request
	n    atomic.Int32
}

func newReceiver(t *testing.T, status func(n int) int) *receiver {
	t.Helper()
	r := &receiver{reqs: make(chan request, 100)}
	r.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		body, _ := io.ReadAll(req.Body)
		n := int(r.n.Add(1))
		r.reqs <- request{req.Method, req.Header.Clone(), body}
		w.WriteHeader(status(n))
	}))
	t.Cleanup(r.srv.Close)
	return r
}

func (r *receiver) next(t *testing.T) request {
	t.Helper()
	select {
	case req := <-r.reqs:
		return req
	case <-time.After(5 * time.Second):
		t.Fatal("no request arrived")
		return request{}
	}
}

func newLog() (*slog.Logger, *testkit.LogBuffer) {
	b := &testkit.LogBuffer{}
	return slog.New(slog.NewTextHandler(b, &slog.HandlerOptions{Level: slog.LevelDebug})), b
}

// logged is a check for natstest.Eventually: logs contain want.
func logged(logs *testkit.LogBuffer, want string) func() error {
	return func() error {
		if !strings.Contains(logs.String(), want) {
			return fmt.Errorf("not logged: %q", want)
		}
		return nil
	}
}

// MustNew starts a Notifier for url with short back-off and closes it at the end of the test.
func MustNew(tb testing.TB, cfg webhook.Config, log *slog.Logger) *webhook.Notifier {
	tb.Helper()
	if cfg.Secret == nil {
		cfg.Secret = secret
	}
	if cfg.Backoff == 0 {
		cfg.Backoff = time.Millisecond
	}
	n := webhook.New(cfg, log)
	if n == nil {
		tb.Fatal("New returned nil")
	}
	tb.Cleanup(n.Close)
	return n
}

func wakeUp() webhook.WakeUp {
	return webhook.WakeUp{PHID: "ph-1", ChallengeID: "ch-1", ExpiresAt: time.Now().Add(time.Minute)}
}

func TestDelivery(t *testing.T) {
	r := newReceiver(t, func(int) int { return http.StatusNoContent })
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	n := MustNew(t, webhook.Config{URL: r.srv.URL + "/wake?token=query-secret", Now: func() time.Time { return now }}, nil)
	loc := time.FixedZone("CET", 3600)
	if !n.Notify(webhook.WakeUp{PHID: "ph-1", ChallengeID: "ch-1", ExpiresAt: now.Add(5 * time.Minute).In(loc)}) {
		t.Fatal("Notify refused")
	}
	req := r.next(t)
	t.Run("Body", func(t *testing.T) {
		want := `{"ph_id":"ph-1","challenge_id":"ch-1","expires_at":"2026-01-01T00:05:00Z"}`
		if string(req.Body) != want || req.Method != http.MethodPost {
			t.Fatalf("%s %s, want POST %s", req.Method, req.Body, want)
		}
	})
	t.Run("NoNumberNoContext", func(t *testing.T) {
		var m map[string]any
		if err := json.Unmarshal(req.Body, &m); err != nil {
			t.Fatal(err)
		}
		for k := range m {
			if k != "ph_id" && k != "challenge_id" && k != "expires_at" {
				t.Fatalf("unexpected field %q in %s", k, req.Body)
			}
		}
	})
	t.Run("Headers", func(t *testing.T) {
		if got := req.Header.Get("Content-Type"); got != "application/json" {
			t.Fatalf("Content-Type %q", got)
		}
		if got := req.Header.Get(webhook.HeaderTimestamp); got != strconv.FormatInt(now.Unix(), 10) {
			t.Fatalf("timestamp %q", got)
		}
		if req.Header.Get(webhook.HeaderDelivery) == "" {
			t.Fatal("no delivery id")
		}
	})
	t.Run("SignatureVerifies", func(t *testing.T) {
		ts, sig := req.Header.Get(webhook.HeaderTimestamp), req.Header.Get(webhook.HeaderSignature)
		if !strings.HasPrefix(sig, "v1=") || len(sig) != 3+64 {
			t.Fatalf("signature %q", sig)
		}
		if err := webhook.Verify(secret, ts, sig, req.Body, now.Add(time.Minute), 5*time.Minute); err != nil {
			t.Fatal(err)
		}
		if err := webhook.Verify([]byte("another-secret-another-secret-another"), ts, sig, req.Body, now, 5*time.Minute); !errors.Is(err, webhook.ErrSignature) {
			t.Fatalf("wrong secret: %v", err)
		}
	})
	t.Run("DeliveryIDPerWakeUp", func(t *testing.T) {
		n.Notify(webhook.WakeUp{PHID: "ph-1", ChallengeID: "ch-2", ExpiresAt: now.Add(time.Minute)})
		if a, b := req.Header.Get(webhook.HeaderDelivery), r.next(t).Header.Get(webhook.HeaderDelivery); a == b {
			t.Fatalf("two wake-ups share delivery id %q", a)
		}
	})
}

func TestRetryAfter500(t *testing.T) {
	r := newReceiver(t, func(n int) int {
		if n <= 2 {
			return http.StatusInternalServerError
		}
		return http.StatusOK
	})
	log, logs := newLog()
	n := MustNew(t, webhook.Config{URL: r.srv.URL}, log)
	n.Notify(wakeUp())
	first, second, third := r.next(t), r.next(t), r.next(t)
	id := first.Header.Get(webhook.HeaderDelivery)
	if second.Header.Get(webhook.HeaderDelivery) != id || third.Header.Get(webhook.HeaderDelivery) != id {
		t.Fatalf("delivery ids differ across retries: %q %q %q", id, second.Header.Get(webhook.HeaderDelivery), third.Header.Get(webhook.HeaderDelivery))
	}
	if !bytes.Equal(first.Body, third.Body) {
		t.Fatalf("body changed across retries: %s / %s", first.Body, third.Body)
	}
	natstest.Eventually(t, 5*time.Second, logged(logs, "wake-up delivered"))
	if got := r.n.Load(); got != 3 {
		t.Fatalf("%d requests, want 3", got)
	}
}

func TestRetryStatuses(t *testing.T) {
	for _, tc := range []struct {
		name   string
		status int
		retry  bool
	}{
		{"TooManyRequests", http.StatusTooManyRequests, true},
		{"BadGateway", http.StatusBadGateway, true},
		{"BadRequest", http.StatusBadRequest, false},
		{"Gone", http.StatusGone, false},
		{"Redirect", http.StatusFound, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := newReceiver(t, func(int) int { return tc.status })
			log, logs := newLog()
			n := MustNew(t, webhook.Config{URL: r.srv.URL, MaxAttempts: 3}, log)
			n.Notify(wakeUp())
			natstest.Eventually(t, 5*time.Second, logged(logs, "wake-up not delivered"))
			want := int32(1)
			if tc.retry {
				want = 3
			}
			if got := r.n.Load(); got != want {
				t.Fatalf("%d requests, want %d", got, want)
			}
		})
	}
}

func TestNetworkErrorIsRetried(t *testing.T) {
	r := newReceiver(t, func(int) int { return http.StatusOK })
	url := r.srv.URL
	r.srv.Close() // nothing listens there any more
	log, logs := newLog()
	MustNew(t, webhook.Config{URL: url + "/?token=query-secret", MaxAttempts: 2}, log).Notify(wakeUp())
	natstest.Eventually(t, 5*time.Second, logged(logs, "wake-up not delivered"))
	if !strings.Contains(logs.String(), "attempts=2") {
		t.Fatalf("not retried: %s", logs)
	}
	if strings.Contains(logs.String(), "query-secret") || strings.Contains(logs.String(), string(secret)) {
		t.Fatalf("log holds the query or the secret: %s", logs)
	}
}

func TestStopsAtExpiry(t *testing.T) {
	var clock atomic.Int64
	start := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	clock.Store(start.UnixNano())
	now := func() time.Time { return time.Unix(0, clock.Load()) }
	r := newReceiver(t, func(n int) int {
		if n == 2 { // the challenge expires while the second attempt is in flight
			clock.Store(start.Add(time.Minute).UnixNano())
		}
		return http.StatusServiceUnavailable
	})
	log, logs := newLog()
	n := MustNew(t, webhook.Config{URL: r.srv.URL, MaxAttempts: 100, Now: now}, log)
	n.Notify(webhook.WakeUp{PHID: "ph-1", ChallengeID: "ch-1", ExpiresAt: start.Add(time.Minute)})
	natstest.Eventually(t, 5*time.Second, logged(logs, "challenge expire"))
	if got := r.n.Load(); got != 2 {
		t.Fatalf("%d requests, want 2", got)
	}

	t.Run("AlreadyExpired", func(t *testing.T) {
		n.Notify(webhook.WakeUp{PHID: "ph-1", ChallengeID: "ch-old", ExpiresAt: start.Add(time.Minute)})
		natstest.Eventually(t, 5*time.Second, logged(logs, "challenge_id=ch-old"))
		if got := r.n.Load(); got != 2 {
			t.Fatalf("%d requests, want none for an expired challenge", got)
		}
	})
	t.Run("BackoffPastExpiry", func(t *testing.T) {
		clock.Store(start.UnixNano())
		r := newReceiver(t, func(int) int { return http.StatusInternalServerError })
		log, logs := newLog()
		n := MustNew(t, webhook.Config{URL: r.srv.URL, Backoff: 10 * time.Second, Now: now}, log)
		n.Notify(webhook.WakeUp{PHID: "ph-1", ChallengeID: "ch-1", ExpiresAt: start.Add(5 * time.Second)})
		natstest.Eventually(t, 5*time.Second, logged(logs, "challenge expires before the next attempt"))
		if got := r.n.Load(); got != 1 {
			t.Fatalf("%d requests, want 1", got)
		}
	})
}

// blockingReceiver holds every request until the test ends, and reports each arrival.
func blockingReceiver(t *testing.T) (url string, arrived <-chan struct{}) {
	t.Helper()
	in, release := make(chan struct{}, 100), make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		in <- struct{}{}
		select {
		case <-release:
		case <-req.Context().Done():
		}
	}))
	t.Cleanup(srv.Close)
	t.Cleanup(func() { close(release) }) // runs first, so srv.Close does not wait on handlers
	return srv.URL, in
}

func wait(t *testing.T, c <-chan struct{}, count int) {
	t.Helper()
	for range count {
		select {
		case <-c:
		case <-time.After(5 * time.Second):
			t.Fatal("request did not arrive")
		}
	}
}

func TestQueueFull(t *testing.T) {
	url, arrived := blockingReceiver(t)
	log, logs := newLog()
	n := MustNew(t, webhook.Config{URL: url, QueueSize: 1}, log)
	for range 4 { // one per worker, each held by the receiver
		if !n.Notify(wakeUp()) {
			t.Fatal("refused while workers were free")
		}
		wait(t, arrived, 1)
	}
	if !n.Notify(wakeUp()) {
		t.Fatal("refused with room in the queue")
	}
	if n.Notify(wakeUp()) {
		t.Fatal("accepted with the queue full")
	}
	if !strings.Contains(logs.String(), "level=WARN") || !strings.Contains(logs.String(), "queue full") {
		t.Fatalf("no warning: %s", logs)
	}
}

func TestCloseReturnsPromptly(t *testing.T) {
	url, arrived := blockingReceiver(t)
	n := webhook.New(webhook.Config{URL: url, Secret: secret}, nil)
	for range 10 {
		n.Notify(wakeUp())
	}
	wait(t, arrived, 4)
	done := make(chan struct{})
	go func() { n.Close(); close(done) }()
	select {
	case <-done:
	case <-time.After(2 * time.Second):
		t.Fatal("Close blocked on requests in flight")
	}
	n.Close() // twice is fine
	if n.Notify(wakeUp()) {
		t.Fatal("accepted after Close")
	}
}

func TestNil(t *testing.T) {
	if n := webhook.New(webhook.Config{}, nil); n != nil {
		t.Fatal("New without a URL is not nil")
	}
	log, logs := newLog()
	if n := webhook.New(webhook.Config{URL: "mailto:x@example.com"}, log); n != nil || !strings.Contains(logs.String(), "level=ERROR") {
		t.Fatalf("New with a non-http URL is not nil, or says nothing: %s", logs)
	}
	var n *webhook.Notifier
	if n.Notify(wakeUp()) {
		t.Fatal("nil Notifier accepted")
	}
	n.Close()
}

func TestVerify(t *testing.T) {
	now := time.Unix(1_767_225_600, 0)
	body := []byte(`{"ph_id":"p","challenge_id":"c","expires_at":"2026-01-01T00:05:00Z"}`)
	ts := strconv.FormatInt(now.Unix(), 10)
	sig := webhook.Sign(secret, ts, body)
	for _, tc := range []struct {
		name    string
		ts, sig string
		body    []byte
		now     time.Time
		want    error
	}{
		{"OK", ts, sig, body, now, nil},
		{"OKWithinMaxAge", ts, sig, body, now.Add(5 * time.Minute), nil},
		{"ErrOld", ts, sig, body, now.Add(5*time.Minute + time.Second), webhook.ErrTimestamp},
		{"ErrFuture", ts, sig, body, now.Add(-6 * time.Minute), webhook.ErrTimestamp},
		{"ErrNoTimestamp", "", sig, body, now, webhook.ErrTimestamp},
		{"ErrOtherTimestamp", strconv.FormatInt(now.Unix()+1, 10), sig, body, now, webhook.ErrSignature},
		{"ErrBody", ts, sig, append(bytes.Clone(body), ' '), now, webhook.ErrSignature},
		{"ErrNoVersion", ts, strings.TrimPrefix(sig, "v1="), body, now, webhook.ErrSignature},
		{"ErrNotHex", ts, "v1=zz", body, now, webhook.ErrSignature},
		{"ErrEmpty", ts, "", body, now, webhook.ErrSignature},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := webhook.Verify(secret, tc.ts, tc.sig, tc.body, tc.now, 5*time.Minute); !errors.Is(err, tc.want) {
				t.Fatalf("got %v, want %v", err, tc.want)
			}
		})
	}
}

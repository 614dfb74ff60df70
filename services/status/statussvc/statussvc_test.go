package statussvc_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/mfaflow/mfaflow/events/commands"
	"github.com/mfaflow/mfaflow/pkg/auth"
	"github.com/mfaflow/mfaflow/pkg/httpx"
	"github.com/mfaflow/mfaflow/pkg/natstest"
	"github.com/mfaflow/mfaflow/services/status/statussvc"
	"github.com/nats-io/nats.go"
)

type replica struct {
	svc *statussvc.Service
	url string
}

func startReplica(t *testing.T, srv *natstest.Server, v auth.Verifier) replica {
	t.Helper()
	nc := srv.Connect(t)
	svc, err := statussvc.New(context.Background(), nc, statussvc.Config{Verifier: v}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = svc.Close() })
	rt := httpx.NewRouter()
	svc.Routes(rt)
	hs := httptest.NewServer(rt)
	t.Cleanup(hs.Close)
	return replica{svc: svc, url: hs.URL}
}

type status struct {
	Status string `json:"status"`
	ID     string `json:"id"`
	Sub    string `json:"sub"`
}

func call(t *testing.T, method, url, token string, hdr ...string) (int, http.Header, status) {
	t.Helper()
	req, err := http.NewRequest(method, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+token)
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	var s status
	if resp.StatusCode == http.StatusOK {
		if err := json.Unmarshal(body, &s); err != nil {
			t.Fatalf("%s %s: %v in %s", method, url, err, body)
		}
	}
	return resp.StatusCode, resp.Header, s
}

func create(t *testing.T, nc *nats.Conn, sub string) (statusID, exchangeID string) {
	t.Helper()
	statusID, exchangeID = uuid.NewString(), uuid.NewString()
	data, _ := json.Marshal(commands.CreateEnrollmentRequest{StatusID: statusID, ExchangeID: exchangeID, Sub: sub, Method: "totp", ExpiresAt: time.Now().Add(10 * time.Minute)})
	msg, err := nc.Request(commands.StatusCreate, data, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if code := msg.Header.Get("Nats-Service-Error-Code"); code != "" {
		t.Fatalf("create: %s %s", code, msg.Header.Get("Nats-Service-Error"))
	}
	return statusID, exchangeID
}

// Polls are answered from each replica's view: a change written on replica A is seen by polls
// on replica B (through B's watch), a write on A is seen by A's next poll at once, ownership
// and unknown ids are answered exactly as before, and no poll ever shows an older version.
func TestPollsAcrossReplicas(t *testing.T) {
	srv := natstest.Start(t)
	hs := auth.HS256{Key: []byte("0123456789abcdef0123456789abcdef")}
	a, b := startReplica(t, srv, hs), startReplica(t, srv, hs)
	alice, _ := hs.Mint("alice", time.Hour)
	bob, _ := hs.Mint("bob", time.Hour)
	id, _ := create(t, srv.Connect(t), "alice")
	path := "/verification-srv/verificationstatus/" + id

	for _, r := range []replica{a, b} {
		code, h, s := call(t, http.MethodGet, r.url+path, alice)
		if code != http.StatusOK || s.Status != "INITIATED" || s.ID != id || h.Get("ETag") != fmt.Sprintf(`"%s-INITIATED-1"`, id) {
			t.Fatalf("first poll: %d %+v %q", code, s, h.Get("ETag"))
		}
		// Polled again: from the view now, and still the same answers for others and unknowns.
		if code, _, _ := call(t, http.MethodGet, r.url+path, alice, "If-None-Match", h.Get("ETag")); code != http.StatusNotModified {
			t.Fatalf("conditional poll: %d", code)
		}
		if code, _, _ := call(t, http.MethodGet, r.url+path, bob); code != http.StatusNotFound {
			t.Fatalf("another user's poll: %d, want 404", code)
		}
		if code, _, _ := call(t, http.MethodGet, r.url+"/verification-srv/verificationstatus/"+uuid.NewString(), alice); code != http.StatusNotFound {
			t.Fatalf("unknown id: %d, want 404", code)
		}
	}
	hitsB, _ := b.svc.ViewStats()
	if hitsB == 0 {
		t.Fatal("replica B answered no poll from its view")
	}

	// Written on A (cancel): A's next poll sees it at once, without waiting for anything.
	if code, _, s := call(t, http.MethodDelete, a.url+path, alice); code != http.StatusOK || s.Status != "CANCELLED" {
		t.Fatalf("cancel on A: %d %+v", code, s)
	}
	hitsA, _ := a.svc.ViewStats()
	code, h, s := call(t, http.MethodGet, a.url+path, alice)
	if code != http.StatusOK || s.Status != "CANCELLED" || h.Get("ETag") != fmt.Sprintf(`"%s-CANCELLED-2"`, id) {
		t.Fatalf("poll on A right after its write: %d %+v %q", code, s, h.Get("ETag"))
	}
	if h, _ := a.svc.ViewStats(); h != hitsA+1 {
		t.Fatal("the poll after the write on A did not come from A's view")
	}

	// B held INITIATED in its view; its watch brings CANCELLED, and once seen it stays.
	seen := false
	natstest.Eventually(t, 5*time.Second, func() error {
		code, _, s := call(t, http.MethodGet, b.url+path, alice)
		switch {
		case code != http.StatusOK:
			return fmt.Errorf("poll on B: %d", code)
		case s.Status == "CANCELLED":
			seen = true
			return nil
		case s.Status != "INITIATED":
			return fmt.Errorf("poll on B: %s", s.Status)
		}
		return fmt.Errorf("B still shows %s", s.Status)
	})
	if !seen {
		t.Fatal("unreachable")
	}
	for range 20 {
		if _, _, s := call(t, http.MethodGet, b.url+path, alice); s.Status != "CANCELLED" {
			t.Fatalf("B went back to %s after showing CANCELLED", s.Status)
		}
	}
	if h, _ := b.svc.ViewStats(); h <= hitsB {
		t.Fatal("B answered none of its later polls from its view")
	}
	if code, _, _ := call(t, http.MethodGet, b.url+path, bob); code != http.StatusNotFound {
		t.Fatalf("another user's poll on B: %d, want 404", code)
	}
}

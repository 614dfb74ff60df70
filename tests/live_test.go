package tests_test

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/mfaflow/mfaflow/events/protocol"
	"github.com/mfaflow/mfaflow/pkg/httpx"
	"github.com/mfaflow/mfaflow/pkg/natsx"
	"github.com/mfaflow/mfaflow/services/status/statussvc"
	"github.com/mfaflow/mfaflow/tests/harness"
)

// sseEvent is one Server-Sent Event, or a heartbeat comment.
type sseEvent struct {
	ID, Event, Data string
	Heartbeat       bool
}

// readSSE parses a text/event-stream into events until the stream ends.
func readSSE(body io.Reader, out chan<- sseEvent) {
	defer close(out)
	sc := bufio.NewScanner(body)
	var ev sseEvent
	for sc.Scan() {
		line := sc.Text()
		switch {
		case line == "":
			if ev != (sseEvent{}) {
				out <- ev
			}
			ev = sseEvent{}
		case strings.HasPrefix(line, ":"):
			ev.Heartbeat = true
		case strings.HasPrefix(line, "id: "):
			ev.ID = line[4:]
		case strings.HasPrefix(line, "event: "):
			ev.Event = line[7:]
		case strings.HasPrefix(line, "data: "):
			ev.Data = line[6:]
		}
	}
}

// nextStatus waits for the next status event, skipping heartbeats and retry hints.
func nextStatus(t *testing.T, events <-chan sseEvent) (sseEvent, statusResponse) {
	t.Helper()
	timeout := time.After(10 * time.Second)
	for {
		select {
		case ev, ok := <-events:
			if !ok {
				t.Fatal("stream ended before the next status")
			}
			if ev.Event != "status" {
				continue
			}
			var s statusResponse
			if err := json.Unmarshal([]byte(ev.Data), &s); err != nil {
				t.Fatalf("data %q: %v", ev.Data, err)
			}
			return ev, s
		case <-timeout:
			t.Fatal("no status event within 10s")
		}
	}
}

func openSSE(t *testing.T, baseURL, statusID, token string) (*http.Response, <-chan sseEvent) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, baseURL+"/verification-srv/verificationstatus/"+statusID+"/events?access_token="+token, nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	events := make(chan sseEvent, 16)
	if resp.StatusCode == http.StatusOK {
		go readSSE(resp.Body, events)
	}
	return resp, events
}

// startStatusReplica runs a second status service on the stack's NATS, with its own HTTP
// server, as a second production replica would.
func startStatusReplica(t *testing.T, st *harness.Stack, heartbeat time.Duration) string {
	t.Helper()
	return startStatusReplicaWithClock(t, st, heartbeat, nil)
}

// startStatusReplicaWithClock is startStatusReplica with the replica's own clock.
func startStatusReplicaWithClock(t *testing.T, st *harness.Stack, heartbeat time.Duration, clock func() time.Time) string {
	t.Helper()
	nc, err := natsx.Connect(st.NATSURL(), "status-replica-2")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	svc, err := statussvc.New(context.Background(), nc, statussvc.Config{Verifier: st.Verifier(), Heartbeat: heartbeat, Clock: clock}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = svc.Close() })
	rt := httpx.NewRouter()
	svc.Routes(rt)
	srv := httptest.NewServer(rt)
	t.Cleanup(srv.Close)
	return srv.URL
}

// TestLiveStatusAcrossReplicas: a frontend subscribed on one status replica sees transitions
// made by another, first the current state at once, then every change, heartbeats while idle,
// and the stream ends after the terminal state.
func TestLiveStatusAcrossReplicas(t *testing.T) {
	st := harness.Start(t, harness.Options{Heartbeat: 100 * time.Millisecond}, nil)
	replica := startStatusReplica(t, st, 100*time.Millisecond)
	alice := st.Token(t, "alice")
	in := initiate(t, st, alice, "?qr=none")

	resp, events := openSSE(t, replica, in.StatusID, alice)
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "text/event-stream" || resp.Header.Get("Cache-Control") != "no-store" {
		t.Fatalf("SSE answer %d %v", resp.StatusCode, resp.Header)
	}
	first, s := nextStatus(t, events)
	if rev, err := strconv.ParseUint(first.ID, 10, 64); s.Status != "INITIATED" || err != nil || rev == 0 {
		t.Fatalf("first event %+v %+v (the id must be the store revision)", first, s)
	}
	// Idle: heartbeats keep the stream open.
	deadline := time.After(5 * time.Second)
	for beat := false; !beat; {
		select {
		case ev := <-events:
			beat = ev.Heartbeat
		case <-deadline:
			t.Fatal("no heartbeat on an idle stream")
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := dial(t, st).Scan(ctx, in.ExchangeID.ExchangeID, protocol.Device{DeviceID: "live-phone"}); err != nil {
		t.Fatal(err)
	}
	second, s := nextStatus(t, events)
	if s.Status != "SCANNED" {
		t.Fatalf("second status %+v", s)
	}
	// The typed code goes through the stack's own HTTP API, i.e. the other replica.
	st.MustJSON(t, http.MethodPost, "/verification-srv/v2/setup/enroll/totp", alice,
		map[string]string{"exchange_id": in.ExchangeID.ExchangeID, "verification_code": codeFor(t, in.TOTPSecret)}, http.StatusOK, nil)
	third, s := nextStatus(t, events)
	if s.Status != "ENROLLED" || s.PHID == "" {
		t.Fatalf("third status %+v", s)
	}
	a, _ := strconv.Atoi(first.ID)
	b, _ := strconv.Atoi(second.ID)
	c, _ := strconv.Atoi(third.ID)
	if !(a < b && b < c) {
		t.Fatalf("ids not increasing: %s %s %s", first.ID, second.ID, third.ID)
	}
	select {
	case _, open := <-drainStatuses(events):
		if open {
			t.Fatal("another status after ENROLLED")
		}
	case <-time.After(5 * time.Second):
		t.Fatal("stream did not end after ENROLLED")
	}
}

// drainStatuses forwards only status events and closes when the stream ends.
func drainStatuses(in <-chan sseEvent) <-chan sseEvent {
	out := make(chan sseEvent)
	go func() {
		defer close(out)
		for ev := range in {
			if ev.Event == "status" {
				out <- ev
				return
			}
		}
	}()
	return out
}

func TestLiveStatusAuth(t *testing.T) {
	st := harness.Start(t, harness.Options{}, nil)
	alice, bob := st.Token(t, "alice"), st.Token(t, "bob")
	in := initiate(t, st, alice, "?qr=none")
	for _, suffix := range []string{"/events", "/ws"} {
		path := "/verification-srv/verificationstatus/" + in.StatusID + suffix
		st.MustProblem(t, st.Do(t, http.MethodGet, path, "", nil), http.StatusUnauthorized, "unauthorized")
		st.MustProblem(t, st.Do(t, http.MethodGet, path+"?access_token="+bob, "", nil), http.StatusNotFound, "not_found")
		st.MustProblem(t, st.Do(t, http.MethodGet, path+"?access_token=garbage", "", nil), http.StatusUnauthorized, "unauthorized")
	}
	// The plain poll does not take a token from the URL, where it would end up in logs.
	st.MustProblem(t, st.Do(t, http.MethodGet, "/verification-srv/verificationstatus/"+in.StatusID+"?access_token="+alice, "", nil), http.StatusUnauthorized, "unauthorized")
}

func TestLiveStatusWebsocket(t *testing.T) {
	st := harness.Start(t, harness.Options{}, nil)
	alice := st.Token(t, "alice")
	in := initiate(t, st, alice, "?qr=none")
	url := "ws" + strings.TrimPrefix(st.URL, "http") + "/verification-srv/verificationstatus/" + in.StatusID + "/ws?access_token=" + alice
	conn, _, err := websocket.DefaultDialer.Dial(url, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	var s statusResponse
	if err := conn.ReadJSON(&s); err != nil || s.Status != "INITIATED" {
		t.Fatalf("first message %+v, %v", s, err)
	}
	st.MustJSON(t, http.MethodDelete, "/verification-srv/verificationstatus/"+in.StatusID, alice, nil, http.StatusOK, nil)
	if err := conn.ReadJSON(&s); err != nil || s.Status != "CANCELLED" {
		t.Fatalf("second message %+v, %v", s, err)
	}
	_, _, err = conn.ReadMessage()
	if !websocket.IsCloseError(err, websocket.CloseNormalClosure) {
		t.Fatalf("after the terminal state: %v, want a normal close", err)
	}
}

// TestPollingIsCheap: conditional polls answer 304, and a poll loop that is too fast gets 429
// with Retry-After.
func TestPollingIsCheap(t *testing.T) {
	st := harness.Start(t, harness.Options{}, map[string]string{"MFA_POLL_RATE": "0.5", "MFA_POLL_BURST": "2"})
	alice := st.Token(t, "alice")
	in := initiate(t, st, alice, "?qr=none")
	path := "/verification-srv/verificationstatus/" + in.StatusID
	r := st.Do(t, http.MethodGet, path, alice, nil)
	tag := r.Header.Get("ETag")
	if r.Status != http.StatusOK || tag == "" || r.Header.Get("Cache-Control") != "no-store" {
		t.Fatalf("poll: %d etag=%q cache=%q", r.Status, tag, r.Header.Get("Cache-Control"))
	}
	if r := st.Do(t, http.MethodGet, path, alice, nil, "If-None-Match", tag); r.Status != http.StatusNotModified || len(r.Body) != 0 {
		t.Fatalf("conditional poll: %d %s", r.Status, r.Body)
	}
	r = st.Do(t, http.MethodGet, path, alice, nil, "If-None-Match", tag)
	st.MustProblem(t, r, http.StatusTooManyRequests, "too_many_requests")
	if secs, err := strconv.Atoi(r.Header.Get("Retry-After")); err != nil || secs < 1 || secs > 2 {
		t.Fatalf("Retry-After %q", r.Header.Get("Retry-After"))
	}
	// A change gives a new ETag (another user's polls are limited separately).
	st.MustJSON(t, http.MethodDelete, path, alice, nil, http.StatusOK, nil)
	bob := st.Token(t, "bob")
	st.MustProblem(t, st.Do(t, http.MethodGet, path, bob, nil), http.StatusNotFound, "not_found")
}

// TestSSEReconnectAfterTheEnd: EventSource reconnects whenever a stream ends, sending the last
// id it saw. Once the enrollment is final, a client that saw the final state gets 204, which
// stops it; one whose stream broke earlier gets the final state first.
func TestSSEReconnectAfterTheEnd(t *testing.T) {
	st := harness.Start(t, harness.Options{}, nil)
	alice := st.Token(t, "alice")
	in := initiate(t, st, alice, "?qr=none")
	path := "/verification-srv/verificationstatus/" + in.StatusID + "/events?access_token=" + alice
	_, open := openSSE(t, st.URL, in.StatusID, alice)
	initiated, _ := nextStatus(t, open)
	st.MustJSON(t, http.MethodDelete, "/verification-srv/verificationstatus/"+in.StatusID, alice, nil, http.StatusOK, nil)
	final, _ := nextStatus(t, open)
	finalID := final.ID

	first := st.Do(t, http.MethodGet, path, "", nil)
	if first.Status != http.StatusOK || !strings.Contains(string(first.Body), "id: "+finalID+"\n") || !strings.Contains(string(first.Body), `"status":"CANCELLED"`) {
		t.Fatalf("first connection: %d %s", first.Status, first.Body)
	}
	missed := st.Do(t, http.MethodGet, path, "", nil, "Last-Event-ID", initiated.ID)
	if missed.Status != http.StatusOK || !strings.Contains(string(missed.Body), `"status":"CANCELLED"`) {
		t.Fatalf("reconnect of a client that missed the end: %d %s", missed.Status, missed.Body)
	}
	if seen := st.Do(t, http.MethodGet, path, "", nil, "Last-Event-ID", finalID); seen.Status != http.StatusNoContent {
		t.Fatalf("reconnect of a client that saw the end: %d %s", seen.Status, seen.Body)
	}
}

// TestLiveOrderSurvivesClockSkew: a replica whose clock is a minute behind cancels an
// enrollment, so the CANCELLED status carries an updated_at before INITIATED's. A subscriber on
// another replica must still see CANCELLED at once and its stream must end: live updates are
// ordered by the store's revision, not by replicas' clocks (ordering by updated_at dropped the
// change and left the stream open forever).
func TestLiveOrderSurvivesClockSkew(t *testing.T) {
	st := harness.Start(t, harness.Options{Heartbeat: time.Hour}, nil)
	alice := st.Token(t, "alice")
	in := initiate(t, st, alice, "?qr=none")
	// Started after the initiation, so the INITIATED write is the stack's own (the replica
	// would take its share of the create commands otherwise).
	behind := startStatusReplicaWithClock(t, st, time.Hour, func() time.Time { return time.Now().Add(-time.Minute) })

	_, events := openSSE(t, st.URL, in.StatusID, alice)
	first, s := nextStatus(t, events)
	if s.Status != "INITIATED" {
		t.Fatalf("first status %s", s.Status)
	}
	cancel := httptestDo(t, http.MethodDelete, behind+"/verification-srv/verificationstatus/"+in.StatusID, alice)
	if cancel.StatusCode != http.StatusOK {
		t.Fatalf("cancel on the lagging replica: %d", cancel.StatusCode)
	}
	next, c := nextStatus(t, events)
	if c.Status != "CANCELLED" || !c.UpdatedAt.Before(s.UpdatedAt) {
		t.Fatalf("second status %+v (updated_at must be before INITIATED's %v for this test to mean anything)", c, s.UpdatedAt)
	}
	a, _ := strconv.ParseUint(first.ID, 10, 64)
	b, _ := strconv.ParseUint(next.ID, 10, 64)
	if b <= a {
		t.Fatalf("SSE ids %s then %s: must increase", first.ID, next.ID)
	}
	select {
	case _, ok := <-events:
		for ok {
			_, ok = <-events
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the stream stayed open after CANCELLED")
	}
}

func httptestDo(t *testing.T, method, url, token string) *http.Response {
	t.Helper()
	req, err := http.NewRequest(method, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp
}

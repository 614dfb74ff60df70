package tests_test

import (
	"context"
	"encoding/json"
	"fmt"
	"github.com/mfaflow/mfaflow/pkg/testkit"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/mfaflow/mfaflow/pkg/httpx"
	"github.com/mfaflow/mfaflow/pkg/natstest"
	"github.com/mfaflow/mfaflow/pkg/natsx"
	"github.com/mfaflow/mfaflow/services/status/statussvc"
	"github.com/mfaflow/mfaflow/tests/harness"
)

// loggedReplica runs a status replica on the stack's NATS whose log goes to a buffer, and
// reports how many requests it is still handling.
func loggedReplica(t *testing.T, st *harness.Stack) (url string, log *testkit.LogBuffer, inFlight *atomic.Int64) {
	t.Helper()
	nc, err := natsx.Connect(st.NATSURL(), "status-replica-logged")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	log = &testkit.LogBuffer{}
	logger := slog.New(slog.NewTextHandler(log, &slog.HandlerOptions{Level: slog.LevelDebug}))
	svc, err := statussvc.New(context.Background(), nc, statussvc.Config{Verifier: st.Verifier(), Heartbeat: 100 * time.Millisecond}, logger)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = svc.Close() })
	rt := httpx.NewRouter()
	svc.Routes(rt)
	inFlight = new(atomic.Int64)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		inFlight.Add(1)
		defer inFlight.Add(-1)
		rt.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	return srv.URL, log, inFlight
}

// TestClientsLeavingAreNoErrors: clients that hang up mid-request (a poll whose connection
// closes at once, an SSE stream cancelled, a websocket dropped without a close frame) and a
// client that asks /ws without a WebSocket upgrade leave no ERROR line in the status log; the
// handshake failure answers the documented code with a fixed text.
func TestClientsLeavingAreNoErrors(t *testing.T) {
	st := harness.Start(t, harness.Options{}, nil)
	replica, log, inFlight := loggedReplica(t, st)
	alice := st.Token(t, "alice")
	in := initiate(t, st, alice, "?qr=none")
	host := strings.TrimPrefix(replica, "http://")
	statusPath := "/verification-srv/verificationstatus/" + in.StatusID

	// Polls and stream requests whose connection closes right after the request is sent.
	for i := range 30 {
		conn, err := net.Dial("tcp", host)
		if err != nil {
			t.Fatal(err)
		}
		path := statusPath
		if i%2 == 1 {
			path += "/events"
		}
		fmt.Fprintf(conn, "GET %s HTTP/1.1\r\nHost: %s\r\nAuthorization: Bearer %s\r\n\r\n", path, host, alice)
		conn.Close()
	}

	// An SSE stream the client cancels after the first event.
	resp, events := openSSE(t, replica, in.StatusID, alice)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("SSE %d", resp.StatusCode)
	}
	nextStatus(t, events)
	resp.Body.Close()

	// A websocket dropped without a close frame.
	ws, _, err := websocket.DefaultDialer.Dial("ws"+strings.TrimPrefix(replica, "http")+statusPath+"/ws?access_token="+alice, nil)
	if err != nil {
		t.Fatal(err)
	}
	var s statusResponse
	if err := ws.ReadJSON(&s); err != nil || s.Status != "INITIATED" {
		t.Fatalf("ws first message %+v %v", s, err)
	}
	ws.NetConn().Close()

	// /ws without an upgrade: the documented code, a fixed message, nothing of the library's.
	req, _ := http.NewRequest(http.MethodGet, replica+statusPath+"/ws", nil)
	req.Header.Set("Authorization", "Bearer "+alice)
	hr, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var p harness.Problem
	_ = json.NewDecoder(hr.Body).Decode(&p)
	hr.Body.Close()
	if hr.StatusCode != http.StatusBadRequest || p.Code != "bad_request" || strings.Contains(p.Detail, "websocket:") || strings.Contains(p.Detail, "Connection") {
		t.Fatalf("handshake answer %d %+v", hr.StatusCode, p)
	}

	// Every handler has returned before the log is judged.
	natstest.Eventually(t, 10*time.Second, func() error {
		if n := inFlight.Load(); n != 0 {
			return fmt.Errorf("%d requests still in flight", n)
		}
		return nil
	})
	out := log.String()
	if strings.Contains(out, "level=ERROR") {
		t.Fatalf("a client leaving was logged as an error:\n%s", out)
	}
	if !strings.Contains(out, "websocket handshake refused") {
		t.Fatalf("the handshake failure was not logged (at debug level):\n%s", out)
	}
	t.Logf("client-gone debug lines: %d", strings.Count(out, "client went away"))
	// The service still answers.
	if got := poll(t, st, alice, in.StatusID); got.Status != "INITIATED" {
		t.Fatalf("poll %+v", got)
	}
}

package httpx_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"github.com/mfaflow/mfaflow/pkg/testkit"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/mfaflow/mfaflow/pkg/fault"
	"github.com/mfaflow/mfaflow/pkg/httpx"
)

func newLog() (*slog.Logger, *testkit.LogBuffer) {
	b := &testkit.LogBuffer{}
	return slog.New(slog.NewTextHandler(b, &slog.HandlerOptions{Level: slog.LevelDebug})), b
}

// TestWriteErrorClientCancelled: a handler whose work fails because the client cancelled the
// request (a real HTTP client, a real server) logs that at debug level, never as ERROR or WARN.
func TestWriteErrorClientCancelled(t *testing.T) {
	log, buf := newLog()
	started, done := make(chan struct{}), make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		defer close(done)
		close(started)
		<-r.Context().Done()
		// What a store or NATS call gives back when its context ends, wrapped as usual.
		httpx.WriteError(w, r, log, fmt.Errorf("get status: kv get: %w", r.Context().Err()))
	}))
	defer srv.Close()
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, srv.URL+"/x", nil)
	errc := make(chan error, 1)
	go func() {
		resp, err := http.DefaultClient.Do(req)
		if err == nil {
			resp.Body.Close()
		}
		errc <- err
	}()
	<-started
	cancel()
	if err := <-errc; !errors.Is(err, context.Canceled) {
		t.Fatalf("client: %v", err)
	}
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("handler did not see the cancellation")
	}
	out := buf.String()
	if strings.Contains(out, "level=ERROR") || strings.Contains(out, "level=WARN") {
		t.Fatalf("a client cancelling was logged as a server problem:\n%s", out)
	}
	if !strings.Contains(out, "level=DEBUG") || strings.Count(out, "\n") != 1 {
		t.Fatalf("want one debug line, got:\n%s", out)
	}
}

// TestWriteErrorBrokenPipe: a write to a gone client is not an error either.
func TestWriteErrorBrokenPipe(t *testing.T) {
	log, buf := newLog()
	for _, err := range []error{
		fmt.Errorf("write frame: %w", syscall.EPIPE),
		fmt.Errorf("read: %w", syscall.ECONNRESET),
	} {
		rec := httptest.NewRecorder()
		httpx.WriteError(rec, httptest.NewRequest(http.MethodGet, "/x", nil), log, err)
	}
	if out := buf.String(); strings.Contains(out, "level=ERROR") || strings.Count(out, "level=DEBUG") != 2 {
		t.Fatalf("log:\n%s", out)
	}
}

// TestWriteErrorInternal: a real internal failure, however deeply wrapped, is logged once at
// ERROR with its chain and answered 500 internal with a fixed detail that holds none of it.
func TestWriteErrorInternal(t *testing.T) {
	log, buf := newLog()
	rec := httptest.NewRecorder()
	err := fmt.Errorf("record enrollment: %w", fmt.Errorf("nats: %w", errors.New("secret-ish internal detail")))
	httpx.WriteError(rec, httptest.NewRequest(http.MethodGet, "/x", nil), log, err)
	out := buf.String()
	if strings.Count(out, "level=ERROR") != 1 || strings.Count(out, "\n") != 1 || !strings.Contains(out, "secret-ish internal detail") {
		t.Fatalf("log:\n%s", out)
	}
	body, _ := io.ReadAll(rec.Result().Body)
	var p httpx.Problem
	if json.Unmarshal(body, &p) != nil || rec.Code != 500 || p.Code != string(fault.Internal) || p.Detail != "internal error" || strings.Contains(string(body), "nats") {
		t.Fatalf("answer %d %s", rec.Code, body)
	}
	// A fault is the client's problem: answered as is, nothing logged.
	buf2log, buf2 := newLog()
	rec = httptest.NewRecorder()
	httpx.WriteError(rec, httptest.NewRequest(http.MethodGet, "/x", nil), buf2log, fmt.Errorf("lookup: %w", fault.New(fault.NotFound, "no such enrollment")))
	if rec.Code != 404 || buf2.String() != "" {
		t.Fatalf("fault: %d, log %q", rec.Code, buf2.String())
	}
}

// TestWriteErrorTransient: a store that was out of reach (fault.ErrTransient in the chain, as
// pkg/mongodoc marks a driver timeout or lost connection) is answered 503 unavailable, not 500.
func TestWriteErrorTransient(t *testing.T) {
	log, _ := newLog()
	rec := httptest.NewRecorder()
	err := fmt.Errorf("create credential: %w", fmt.Errorf("mongodb insert x: %w: %w", fault.ErrTransient, errors.New("connection closed")))
	httpx.WriteError(rec, httptest.NewRequest(http.MethodPost, "/x", nil), log, err)
	body, _ := io.ReadAll(rec.Result().Body)
	var p httpx.Problem
	if json.Unmarshal(body, &p) != nil || rec.Code != http.StatusServiceUnavailable || p.Code != string(fault.Unavailable) || strings.Contains(string(body), "mongodb") {
		t.Fatalf("answer %d %s", rec.Code, body)
	}
}

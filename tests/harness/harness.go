// Package harness boots the real dev stack for end-to-end tests — embedded NATS with JetStream on
// a random port, every service, one HTTP server on a random port — and gives tests small,
// honest helpers: HTTP calls with tokens, and a recorder of every event on MFA_EVENTS.
package harness

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/mfaflow/mfaflow/devstack/stack"
	"github.com/mfaflow/mfaflow/events"
	"github.com/mfaflow/mfaflow/pkg/config"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Stack is a running dev stack for one test.
type Stack struct {
	*stack.Stack
	URL string
}

// Options tune the stack for a test.
type Options = stack.Options

// Start boots a dev stack that is closed when the test ends. env overrides configuration
// variables (e.g. MFA_ENROLLMENT_TTL).
func Start(tb testing.TB, opt Options, env map[string]string) *Stack {
	tb.Helper()
	vars := map[string]string{
		"MFA_HTTP_ADDR":          "127.0.0.1:0",
		"MFA_EMBEDDED_NATS_ADDR": "127.0.0.1:0",
		"MFA_DATA_DIR":           tb.TempDir(),
	}
	for k, v := range env {
		vars[k] = v
	}
	cfg, err := config.FromEnv(func(k string) string { return vars[k] })
	if err != nil {
		tb.Fatalf("config: %v", err)
	}
	level := slog.LevelWarn
	if os.Getenv("MFA_TEST_LOG") != "" {
		level = slog.LevelDebug
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	s, err := stack.Start(context.Background(), cfg, opt, log)
	if err != nil {
		tb.Fatalf("start dev stack: %v", err)
	}
	tb.Cleanup(s.Close)
	return &Stack{Stack: s, URL: s.URL()}
}

// Token mints a dev token for sub through POST /dev/token, as a user would.
func (s *Stack) Token(tb testing.TB, sub string) string {
	tb.Helper()
	var out struct {
		Token string `json:"token"`
	}
	s.MustJSON(tb, http.MethodPost, "/dev/token", "", map[string]string{"sub": sub}, http.StatusOK, &out)
	if out.Token == "" {
		tb.Fatal("dev token: empty token")
	}
	return out.Token
}

// Response is a finished HTTP exchange.
type Response struct {
	Status int
	Header http.Header
	Body   []byte
}

// Do sends a request; body is JSON-encoded unless it is nil, a string or []byte.
func (s *Stack) Do(tb testing.TB, method, path, token string, body any, header ...string) Response {
	tb.Helper()
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		rd = bytes.NewBufferString(b)
	case []byte:
		rd = bytes.NewReader(b)
	default:
		data, err := json.Marshal(b)
		if err != nil {
			tb.Fatal(err)
		}
		rd = bytes.NewReader(data)
	}
	req, err := http.NewRequest(method, s.URL+path, rd)
	if err != nil {
		tb.Fatal(err)
	}
	if rd != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		tb.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		tb.Fatal(err)
	}
	return Response{Status: resp.StatusCode, Header: resp.Header, Body: data}
}

// MustJSON sends a request, requires the status and decodes the JSON answer into out.
func (s *Stack) MustJSON(tb testing.TB, method, path, token string, body any, status int, out any) Response {
	tb.Helper()
	r := s.Do(tb, method, path, token, body)
	if r.Status != status {
		tb.Fatalf("%s %s: status %d, want %d: %s", method, path, r.Status, status, r.Body)
	}
	if out != nil {
		if err := json.Unmarshal(r.Body, out); err != nil {
			tb.Fatalf("%s %s: decode %s: %v", method, path, r.Body, err)
		}
	}
	return r
}

// Problem is an RFC 9457 body.
type Problem struct {
	Type   string `json:"type"`
	Title  string `json:"title"`
	Status int    `json:"status"`
	Detail string `json:"detail"`
	Code   string `json:"code"`
}

// MustProblem requires a problem+json answer with status and code.
func (s *Stack) MustProblem(tb testing.TB, r Response, status int, code string) Problem {
	tb.Helper()
	if r.Status != status {
		tb.Fatalf("status %d, want %d: %s", r.Status, status, r.Body)
	}
	if ct := r.Header.Get("Content-Type"); ct != "application/problem+json" {
		tb.Fatalf("content type %q, want application/problem+json", ct)
	}
	var p Problem
	if err := json.Unmarshal(r.Body, &p); err != nil {
		tb.Fatalf("decode problem %s: %v", r.Body, err)
	}
	if p.Code != code || p.Status != status {
		tb.Fatalf("problem %+v, want code %s status %d", p, code, status)
	}
	return p
}

// Event is one message read from MFA_EVENTS.
type Event struct {
	events.Envelope
	MsgID string
	Raw   []byte
	NATS  string // NATS subject
}

// Recorder collects every event on MFA_EVENTS from the start of the stream.
type Recorder struct {
	mu     sync.Mutex
	events []Event
}

// RecordEvents starts an ordered consumer on MFA_EVENTS for the rest of the test.
func (s *Stack) RecordEvents(tb testing.TB) *Recorder {
	tb.Helper()
	nc, err := nats.Connect(s.NATSURL())
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		tb.Fatal(err)
	}
	ctx := context.Background()
	cons, err := js.OrderedConsumer(ctx, events.Stream, jetstream.OrderedConsumerConfig{FilterSubjects: []string{events.StreamSubjects}})
	if err != nil {
		tb.Fatal(err)
	}
	rec := &Recorder{}
	cc, err := cons.Consume(func(m jetstream.Msg) {
		ev := Event{Raw: append([]byte(nil), m.Data()...), MsgID: m.Headers().Get(jetstream.MsgIDHeader), NATS: m.Subject()}
		if err := json.Unmarshal(m.Data(), &ev.Envelope); err != nil {
			ev.Type = events.Type("undecodable: " + err.Error())
		}
		rec.mu.Lock()
		rec.events = append(rec.events, ev)
		rec.mu.Unlock()
	})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(cc.Stop)
	return rec
}

// All returns the events received so far.
func (r *Recorder) All() []Event {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]Event(nil), r.events...)
}

// For returns the events whose CloudEvent subject is subject, in stream order.
func (r *Recorder) For(subject string) []Event {
	var out []Event
	for _, e := range r.All() {
		if e.Subject == subject {
			out = append(out, e)
		}
	}
	return out
}

// WaitTypes waits until the events for subject have exactly the given types, in order.
func (r *Recorder) WaitTypes(tb testing.TB, subject string, want ...events.Type) []Event {
	tb.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		got := r.For(subject)
		var types []events.Type
		for _, e := range got {
			types = append(types, e.Type)
		}
		if fmt.Sprint(types) == fmt.Sprint(want) {
			return got
		}
		if time.Now().After(deadline) {
			tb.Fatalf("events for %s: got %v, want %v", subject, types, want)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

package main

import (
	"context"
	"errors"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/mfaflow/mfaflow/events"
	"github.com/mfaflow/mfaflow/pkg/natstest"
	"github.com/mfaflow/mfaflow/pkg/natsx"
	"github.com/mfaflow/mfaflow/pkg/testkit"
)

func TestNATSURL(t *testing.T) {
	for _, tc := range []struct {
		name string
		env  map[string]string
		want string
	}{
		{"Default", nil, "nats://127.0.0.1:4222"},
		{"EmbeddedAddr", map[string]string{"MFA_EMBEDDED_NATS_ADDR": "127.0.0.1:4223"}, "nats://127.0.0.1:4223"},
		{"EmbeddedAllInterfaces", map[string]string{"MFA_EMBEDDED_NATS_ADDR": "0.0.0.0:4224"}, "nats://127.0.0.1:4224"},
		{"EmbeddedPortOnly", map[string]string{"MFA_EMBEDDED_NATS_ADDR": ":4225"}, "nats://127.0.0.1:4225"},
		{"EmbeddedIPv6", map[string]string{"MFA_EMBEDDED_NATS_ADDR": "[::1]:4226"}, "nats://[::1]:4226"},
		{"NATSURLWins", map[string]string{"MFA_NATS_URL": "nats://a:4222,nats://b:4222", "MFA_EMBEDDED_NATS_ADDR": "127.0.0.1:4223"}, "nats://a:4222,nats://b:4222"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := natsURL(func(k string) string { return tc.env[k] }); got != tc.want {
				t.Fatalf("natsURL = %q, want %q", got, tc.want)
			}
		})
	}
}

// TestRunOnEmbeddedAddr: with MFA_NATS_URL unset, the command reads the stream of the NATS at
// MFA_EMBEDDED_NATS_ADDR, not the default port.
func TestRunOnEmbeddedAddr(t *testing.T) {
	srv := natstest.Start(t)
	js := srv.JetStream(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if _, err := natsx.EnsureEventStream(ctx, js); err != nil {
		t.Fatal(err)
	}
	subject := events.EnrollmentInitiated.Subject()
	if _, err := js.Publish(ctx, subject, []byte(`{"id":"e1"}`)); err != nil {
		t.Fatal(err)
	}
	addr := srv.Addr().String()
	url := natsURL(func(k string) string {
		if k == "MFA_EMBEDDED_NATS_ADDR" {
			return addr
		}
		return ""
	})
	out := &testkit.LogBuffer{}
	rctx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- run(rctx, url, events.StreamSubjects, false, out) }()
	natstest.Eventually(t, 10*time.Second, func() error {
		if !strings.Contains(out.String(), `{"id":"e1"}`) {
			return errors.New("event not printed yet")
		}
		return nil
	})
	stop()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// TestRunSaysWhereItTried: a NATS that is not there is named in the error.
func TestRunSaysWhereItTried(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // nothing listens there now
	url := natsURL(func(k string) string {
		if k == "MFA_EMBEDDED_NATS_ADDR" {
			return addr
		}
		return ""
	})
	err = run(t.Context(), url, events.StreamSubjects, false, &testkit.LogBuffer{})
	if err == nil || !strings.HasPrefix(err.Error(), "connect nats://"+addr+": ") {
		t.Fatalf("err = %v, want one that starts with connect nats://%s", err, addr)
	}
}

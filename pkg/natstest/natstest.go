// Package natstest starts real embedded NATS servers for tests: one per call, JetStream on, a
// random port and a temporary store directory, shut down when the test ends.
package natstest

import (
	"testing"
	"time"

	"github.com/mfaflow/mfaflow/pkg/natsx"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Server is a running test server.
type Server struct {
	*server.Server
	URL string
}

// Start runs a fresh JetStream-enabled NATS server for tb.
func Start(tb testing.TB) *Server {
	tb.Helper()
	s, err := natsx.StartEmbedded(natsx.EmbeddedOptions{StoreDir: tb.TempDir()})
	if err != nil {
		tb.Fatalf("start nats: %v", err)
	}
	tb.Cleanup(func() {
		s.Shutdown()
		s.WaitForShutdown()
	})
	return &Server{Server: s, URL: s.ClientURL()}
}

// Connect opens a connection to s that is closed when the test ends.
func (s *Server) Connect(tb testing.TB) *nats.Conn {
	tb.Helper()
	nc, err := nats.Connect(s.URL)
	if err != nil {
		tb.Fatalf("connect nats: %v", err)
	}
	tb.Cleanup(nc.Close)
	return nc
}

// JetStream returns a JetStream context on a new connection to s.
func (s *Server) JetStream(tb testing.TB) jetstream.JetStream {
	tb.Helper()
	js, err := jetstream.New(s.Connect(tb))
	if err != nil {
		tb.Fatalf("jetstream: %v", err)
	}
	return js
}

// Eventually calls check until it returns nil or the deadline passes, then fails the test with
// the last error. It is how tests wait on facts ("the event arrived") instead of sleeping.
func Eventually(tb testing.TB, deadline time.Duration, check func() error) {
	tb.Helper()
	end := time.Now().Add(deadline)
	wait := 5 * time.Millisecond
	for {
		err := check()
		if err == nil {
			return
		}
		if time.Now().After(end) {
			tb.Fatalf("condition not met within %v: %v", deadline, err)
		}
		time.Sleep(wait)
		if wait < 100*time.Millisecond {
			wait *= 2
		}
	}
}

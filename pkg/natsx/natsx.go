// Package natsx is mfaflow's NATS plumbing: an embedded server for the dev stack and tests,
// connections with sane reconnect settings, and the MFA_EVENTS stream.
package natsx

import (
	"errors"
	"fmt"
	"net"
	neturl "net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/mfaflow/mfaflow/events"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// EmbeddedOptions configures an in-process NATS server.
type EmbeddedOptions struct {
	// Addr is host:port to listen on; port 0 (or "") picks a random free port on 127.0.0.1.
	Addr string
	// StoreDir is where JetStream keeps its files.
	StoreDir string
}

// StartEmbedded starts a NATS server with JetStream in this process and waits until it accepts
// connections. Shut it down with Shutdown and WaitForShutdown.
func StartEmbedded(o EmbeddedOptions) (*server.Server, error) {
	host, port := "127.0.0.1", server.RANDOM_PORT
	if o.Addr != "" {
		h, p, err := net.SplitHostPort(o.Addr)
		if err != nil {
			return nil, fmt.Errorf("embedded nats address %q: %w", o.Addr, err)
		}
		if h != "" {
			host = h
		}
		if n, err := strconv.Atoi(p); err == nil && n != 0 {
			port = n
		}
	}
	if port != server.RANDOM_PORT {
		// The server retries a busy port quietly; say so at once instead.
		ln, err := net.Listen("tcp", net.JoinHostPort(host, strconv.Itoa(port)))
		if err != nil {
			return nil, fmt.Errorf("embedded nats cannot listen on %s (set MFA_EMBEDDED_NATS_ADDR, or MFA_NATS_URL to use a running server): %w", o.Addr, err)
		}
		_ = ln.Close()
	}
	opts := &server.Options{
		Host:      host,
		Port:      port,
		JetStream: true,
		StoreDir:  o.StoreDir,
		NoSigs:    true,
		NoLog:     true,
		// A stable name keeps the JetStream store valid across restarts of the dev stack.
		ServerName: "mfaflow-embedded",
	}
	s, err := server.NewServer(opts)
	if err != nil {
		return nil, fmt.Errorf("embedded nats: %w", err)
	}
	go s.Start()
	if !s.ReadyForConnections(10 * time.Second) {
		s.Shutdown()
		return nil, errors.New("embedded nats: not ready after 10s (is the address in use?)")
	}
	return s, nil
}

// Connect dials NATS with the name shown in monitoring and reconnects for as long as it takes,
// so a NATS restart does not kill a service.
func Connect(url, name string, opts ...nats.Option) (*nats.Conn, error) {
	nc, err := nats.Connect(url, append([]nats.Option{
		nats.Name(name),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(250 * time.Millisecond),
		nats.RetryOnFailedConnect(false),
	}, opts...)...)
	if err != nil {
		return nil, fmt.Errorf("connect to nats %s: %w", Redact(url), err)
	}
	return nc, nil
}

// Redact drops the user and password (or token) of every URL in a NATS URL list, so it can be
// logged.
func Redact(urls string) string {
	parts := strings.Split(urls, ",")
	for i, p := range parts {
		if u, err := neturl.Parse(strings.TrimSpace(p)); err == nil && u.User != nil {
			u.User = nil
			parts[i] = u.String()
		}
	}
	return strings.Join(parts, ",")
}

// EventStreamConfig is the MFA_EVENTS stream. The dedupe window is what makes a publish retried
// by the outbox relay (or by two replicas) land once.
func EventStreamConfig() jetstream.StreamConfig {
	return jetstream.StreamConfig{
		Name:        events.Stream,
		Description: "mfaflow CloudEvents: enrollments and devices",
		Subjects:    []string{events.StreamSubjects},
		Storage:     jetstream.FileStorage,
		Retention:   jetstream.LimitsPolicy,
		MaxAge:      7 * 24 * time.Hour,
		Duplicates:  2 * time.Minute,
	}
}

// Drain drains nc (subscriptions finish the messages they hold, pending publishes are flushed)
// and waits until it is closed, at most timeout; nc.Drain alone returns at once. A connection
// that is already closed drains to nil.
func Drain(nc *nats.Conn, timeout time.Duration) error {
	if nc.IsClosed() {
		return nil
	}
	closed := make(chan struct{})
	var once sync.Once
	nc.SetClosedHandler(func(*nats.Conn) { once.Do(func() { close(closed) }) })
	if err := nc.Drain(); err != nil {
		if nc.IsClosed() {
			return nil
		}
		return fmt.Errorf("drain nats connection: %w", err)
	}
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case <-closed:
		return nil
	case <-t.C:
		nc.Close()
		return fmt.Errorf("drain nats connection: not done after %s", timeout)
	}
}

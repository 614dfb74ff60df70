// Package natstest starts real embedded NATS servers for tests: one per call, JetStream on, a
// random port and a temporary store directory, shut down when the test ends.
package natstest

import (
	"errors"
	"fmt"
	"net"
	"strings"
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

// Cluster is a JetStream cluster of embedded servers on loopback, for replicated streams.
type Cluster struct {
	Servers []*server.Server
	// URL lists every node's client URL, comma-separated, as MFA_NATS_URL does.
	URL string
}

// StartCluster runs an n-node JetStream cluster (routes on random loopback ports, a store
// directory each) and waits until it has a JetStream meta leader that knows every peer; it is
// shut down when the test ends. Each configure function may change every node's options before
// it starts (accounts and users, for instance). A 3-node cluster comes up in about a second.
func StartCluster(tb testing.TB, n int, configure ...func(*server.Options)) *Cluster {
	tb.Helper()
	ports := make([]int, n)
	routes := make([]string, n)
	for i := range ports {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			tb.Fatal(err)
		}
		ports[i] = ln.Addr().(*net.TCPAddr).Port
		_ = ln.Close()
		routes[i] = fmt.Sprintf("nats://127.0.0.1:%d", ports[i])
	}
	c := &Cluster{}
	var urls []string
	for i := range n {
		opts := &server.Options{
			ServerName: fmt.Sprintf("n%d", i+1), Host: "127.0.0.1", Port: server.RANDOM_PORT,
			JetStream: true, StoreDir: tb.TempDir(), NoSigs: true, NoLog: true,
			Cluster: server.ClusterOpts{Name: "mfaflow-test", Host: "127.0.0.1", Port: ports[i]},
			Routes:  server.RoutesFromStr(strings.Join(routes, ",")),
		}
		for _, f := range configure {
			f(opts)
		}
		s, err := server.NewServer(opts)
		if err != nil {
			tb.Fatalf("cluster node %d: %v", i+1, err)
		}
		go s.Start()
		tb.Cleanup(func() {
			s.Shutdown()
			s.WaitForShutdown()
		})
		if !s.ReadyForConnections(10 * time.Second) {
			tb.Fatalf("cluster node %d not ready", i+1)
		}
		c.Servers = append(c.Servers, s)
		urls = append(urls, s.ClientURL())
	}
	c.URL = strings.Join(urls, ",")
	Eventually(tb, 20*time.Second, func() error {
		for _, s := range c.Servers {
			if s.JetStreamIsLeader() && len(s.JetStreamClusterPeers()) == n {
				return nil
			}
		}
		return errors.New("no JetStream meta leader with every peer yet")
	})
	return c
}

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
	// Servers are the nodes in order; a node PlanCluster planned but nobody started is nil.
	Servers []*server.Server
	// URL lists every node's client URL, comma-separated, as MFA_NATS_URL does.
	URL  string
	opts []*server.Options
}

// StartCluster runs an n-node JetStream cluster (routes on random loopback ports, a store
// directory each) and waits until it has a JetStream meta leader that knows every peer; it is
// shut down when the test ends. Each configure function may change every node's options before
// it starts (accounts and users, for instance). A 3-node cluster comes up in about a second.
func StartCluster(tb testing.TB, n int, configure ...func(*server.Options)) *Cluster {
	tb.Helper()
	c := PlanCluster(tb, n, configure...)
	for i := range n {
		c.StartNode(tb, i)
	}
	c.WaitForMetaLeader(tb)
	return c
}

// PlanCluster fixes the addresses and options of an n-node cluster (as StartCluster) and starts
// none of it: a test starts the nodes with StartNode when it wants them, for instance to have
// services start against a cluster that is still forming. URL is set already.
func PlanCluster(tb testing.TB, n int, configure ...func(*server.Options)) *Cluster {
	tb.Helper()
	ports := freePorts(tb, 2*n)
	clusterPorts, clientPorts := ports[:n], ports[n:]
	routes := make([]string, n)
	urls := make([]string, n)
	for i := range n {
		routes[i] = fmt.Sprintf("nats://127.0.0.1:%d", clusterPorts[i])
		urls[i] = fmt.Sprintf("nats://127.0.0.1:%d", clientPorts[i])
	}
	c := &Cluster{Servers: make([]*server.Server, n), URL: strings.Join(urls, ",")}
	for i := range n {
		opts := &server.Options{
			ServerName: fmt.Sprintf("n%d", i+1), Host: "127.0.0.1", Port: clientPorts[i],
			JetStream: true, StoreDir: tb.TempDir(), NoSigs: true, NoLog: true,
			Cluster: server.ClusterOpts{Name: "mfaflow-test", Host: "127.0.0.1", Port: clusterPorts[i]},
			Routes:  server.RoutesFromStr(strings.Join(routes, ",")),
		}
		for _, f := range configure {
			f(opts)
		}
		c.opts = append(c.opts, opts)
	}
	return c
}

// StartNode starts node i (from 0) of a planned cluster and waits until it accepts clients; it
// is shut down when the test ends.
func (c *Cluster) StartNode(tb testing.TB, i int) *server.Server {
	tb.Helper()
	s, err := server.NewServer(c.opts[i])
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
	c.Servers[i] = s
	return s
}

// WaitForMetaLeader waits until a node is the JetStream meta leader and knows every peer.
func (c *Cluster) WaitForMetaLeader(tb testing.TB) {
	tb.Helper()
	Eventually(tb, 20*time.Second, func() error {
		for _, s := range c.Servers {
			if s != nil && s.JetStreamIsLeader() && len(s.JetStreamClusterPeers()) == len(c.Servers) {
				return nil
			}
		}
		return errors.New("no JetStream meta leader with every peer yet")
	})
}

// freePorts picks n distinct free loopback ports (free when asked; the nodes take them soon).
func freePorts(tb testing.TB, n int) []int {
	tb.Helper()
	ports := make([]int, n)
	for i := range ports {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			tb.Fatal(err)
		}
		defer ln.Close()
		ports[i] = ln.Addr().(*net.TCPAddr).Port
	}
	return ports
}

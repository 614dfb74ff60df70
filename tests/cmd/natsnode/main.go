// Command natsnode is one node of a NATS JetStream cluster for the soak test: a real nats-server
// built from the nats-server/v2 module, on loopback ports the test chooses, so the test can
// kill -9 it and start it again on the same store directory.
package main

import (
	"flag"
	"fmt"
	"net"
	"os"
	"strconv"

	"github.com/nats-io/nats-server/v2/server"
)

func main() {
	name := flag.String("name", "n1", "server name (stable across restarts: JetStream peers are named)")
	addr := flag.String("addr", "127.0.0.1:4222", "client listen address")
	cluster := flag.String("cluster", "127.0.0.1:6222", "cluster (route) listen address")
	routes := flag.String("routes", "", "comma-separated nats-route:// URLs of every node")
	monitor := flag.String("http", "", "monitoring listen address (/healthz); empty = off")
	store := flag.String("store", "", "JetStream store directory")
	flag.Parse()
	if err := run(*name, *addr, *cluster, *routes, *monitor, *store); err != nil {
		fmt.Fprintln(os.Stderr, "natsnode:", err)
		os.Exit(1)
	}
}

func hostPort(addr string) (string, int, error) {
	h, p, err := net.SplitHostPort(addr)
	if err != nil {
		return "", 0, err
	}
	n, err := strconv.Atoi(p)
	return h, n, err
}

func run(name, addr, cluster, routes, monitor, store string) error {
	host, port, err := hostPort(addr)
	if err != nil {
		return fmt.Errorf("-addr: %w", err)
	}
	chost, cport, err := hostPort(cluster)
	if err != nil {
		return fmt.Errorf("-cluster: %w", err)
	}
	opts := &server.Options{
		ServerName: name, Host: host, Port: port,
		JetStream: true, StoreDir: store,
		Cluster: server.ClusterOpts{Name: "mfaflow-soak", Host: chost, Port: cport},
		Routes:  server.RoutesFromStr(routes),
	}
	if monitor != "" {
		if opts.HTTPHost, opts.HTTPPort, err = hostPort(monitor); err != nil {
			return fmt.Errorf("-http: %w", err)
		}
	}
	s, err := server.NewServer(opts)
	if err != nil {
		return err
	}
	s.ConfigureLogger()
	if err := server.Run(s); err != nil {
		return err
	}
	s.WaitForShutdown()
	return nil
}

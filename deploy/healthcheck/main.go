// Command healthcheck is the container health probe of the mfaflow image: distroless images have
// no shell, curl or wget, so `docker compose` runs this instead. It asks the service in the same
// container for GET /healthz on the port of MFA_HTTP_ADDR and exits 0 on 200, 1 otherwise.
// Kubernetes does not need it: its probes call /healthz themselves.
package main

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"time"
)

func main() {
	if err := check(os.Getenv("MFA_HTTP_ADDR")); err != nil {
		fmt.Fprintln(os.Stderr, "healthcheck:", err)
		os.Exit(1)
	}
}

// check asks http://127.0.0.1:<port of addr>/healthz (addr defaults to :8080, as in pkg/config).
func check(addr string) error {
	if addr == "" {
		addr = ":8080"
	}
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("MFA_HTTP_ADDR %q: %w", addr, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+net.JoinHostPort("127.0.0.1", port)+"/healthz", nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET /healthz: %s", resp.Status)
	}
	return nil
}

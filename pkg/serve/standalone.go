package serve

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"time"

	"github.com/mfaflow/mfaflow/pkg/config"
	"github.com/mfaflow/mfaflow/pkg/fault"
	"github.com/mfaflow/mfaflow/pkg/httpx"
	"github.com/mfaflow/mfaflow/pkg/metrics"
	"github.com/mfaflow/mfaflow/pkg/natsx"
	"github.com/nats-io/nats.go"
)

// Command is the whole of a main: it reads the configuration from the environment (exit 2 on a
// bad one), then runs run until SIGINT or SIGTERM (exit 1 if it fails).
func Command(run func(ctx context.Context, cfg config.Config) error) {
	cfg, err := config.FromEnv(os.Getenv)
	if err != nil {
		fmt.Fprintln(os.Stderr, "configuration:", err)
		os.Exit(2)
	}
	Main(cfg.Logger(), func(ctx context.Context) error { return run(ctx, cfg) })
}

// Component is a wired service: HTTP routes and a way to stop its background work.
type Component interface {
	Routes(rt *httpx.Router)
	Close() error
}

// Standalone runs one service as its own process against MFA_NATS_URL: it connects, lets wire
// build the service, listens only then (an open port means ready), serves until ctx ends and
// shuts down in order: HTTP, the service, the NATS connection.
func Standalone(ctx context.Context, cfg config.Config, name string, wire func(nc *nats.Conn, log *slog.Logger) (Component, error)) error {
	log := cfg.Logger().With("service", name)
	if cfg.NATSURL == "" {
		return errors.New("MFA_NATS_URL is required")
	}
	natsOpts, err := cfg.NATSOptions()
	if err != nil {
		return err
	}
	nc, err := natsx.Connect(cfg.NATSURL, "mfaflow-"+name, natsOpts...)
	if err != nil {
		return err
	}
	defer func() {
		if err := natsx.Drain(nc, ShutdownTimeout); err != nil {
			log.Warn("nats drain", "err", err)
		}
	}()
	svc, err := wire(nc, log)
	if err != nil {
		return err
	}
	defer func() {
		if err := svc.Close(); err != nil {
			log.Warn("close", "err", err)
		}
	}()
	ln, err := Listen(cfg.HTTPAddr)
	if err != nil {
		return err
	}
	rt := httpx.NewRouter()
	svc.Routes(rt)
	rt.HandleFunc("GET /healthz", Healthz(nc))
	rt.HandleFunc("GET /readyz", Readyz([]*nats.Conn{nc}, svc))
	rt.Handle("GET /metrics", metrics.Handler())
	log.Info("serving", "addr", ln.Addr().String(), "config", cfg)
	return HTTP(ctx, NewServer(rt), ln)
}

// Readier is a component that can say whether it can do its work now (its store reachable,
// its relay running).
type Readier interface {
	Ready(ctx context.Context) error
}

// Readyz answers 200 {"status":"ready"} while every connection is up and every component that
// is a Readier is ready, and 503 unavailable otherwise: a load balancer sends traffic only to a
// process that can serve it. /healthz stays the liveness check (connected to NATS at all).
func Readyz(conns []*nats.Conn, components ...any) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		for _, nc := range conns {
			if !nc.IsConnected() {
				httpx.WriteProblem(w, r, fault.New(fault.Unavailable, "not connected to NATS"))
				return
			}
		}
		ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
		defer cancel()
		for _, c := range components {
			if rd, ok := c.(Readier); ok {
				if err := rd.Ready(ctx); err != nil {
					httpx.WriteProblem(w, r, fault.New(fault.Unavailable, "not ready: "+err.Error()))
					return
				}
			}
		}
		httpx.WriteJSON(w, http.StatusOK, map[string]string{"status": "ready"})
	}
}

// Healthz answers 200 {"status":"ok"} while every connection is up, and 503 unavailable while
// one is reconnecting, so a load balancer stops sending traffic to a process cut off from NATS.
func Healthz(conns ...*nats.Conn) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		for _, nc := range conns {
			if !nc.IsConnected() {
				httpx.WriteProblem(w, r, fault.New(fault.Unavailable, "not connected to NATS"))
				return
			}
		}
		httpx.WriteJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	}
}

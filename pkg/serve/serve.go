// Package serve runs mfaflow processes: signal handling and graceful HTTP shutdown, so every
// main stays a few lines of wiring.
package serve

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"
)

// ShutdownTimeout bounds each shutdown step.
const ShutdownTimeout = 10 * time.Second

// Main runs run with a context cancelled on SIGINT or SIGTERM and exits non-zero on error.
func Main(log *slog.Logger, run func(ctx context.Context) error) {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx); err != nil && !errors.Is(err, context.Canceled) {
		log.Error("exiting", "err", err)
		os.Exit(1)
	}
}

// NewServer returns an http.Server with timeouts suited to a JSON API that also holds
// long-lived streams (no WriteTimeout: SSE and websockets manage their own deadlines).
func NewServer(h http.Handler) *http.Server {
	return &http.Server{
		Handler:           h,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    64 << 10,
	}
}

// Listen opens addr now, so a bad or busy address fails start-up instead of a goroutine later.
func Listen(addr string) (net.Listener, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("listen %s: %w", addr, err)
	}
	return ln, nil
}

type stopKey struct{}

// HTTP serves srv on ln until ctx ends, then shuts it down gracefully. Long-lived responses
// (see LongLived) are told to finish as shutdown begins, since Shutdown would otherwise wait
// for them until its deadline.
func HTTP(ctx context.Context, srv *http.Server, ln net.Listener) error {
	stopCtx, stop := context.WithCancel(context.Background())
	defer stop()
	srv.BaseContext = func(net.Listener) context.Context {
		return context.WithValue(context.Background(), stopKey{}, stopCtx)
	}
	srv.RegisterOnShutdown(stop)
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return fmt.Errorf("http server: %w", err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), ShutdownTimeout)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		return fmt.Errorf("http shutdown: %w", err)
	}
	return nil
}

// LongLived returns the context of a long-lived response (a stream, a websocket): it ends with
// the request, or when the server begins shutting down, so the handler can say goodbye and
// return. Outside HTTP it is the request's context.
func LongLived(r *http.Request) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancel(r.Context())
	stop, ok := r.Context().Value(stopKey{}).(context.Context)
	if !ok {
		return ctx, cancel
	}
	unregister := context.AfterFunc(stop, cancel)
	return ctx, func() { unregister(); cancel() }
}

// ShuttingDown reports whether the server serving r has begun shutting down.
func ShuttingDown(r *http.Request) bool {
	stop, ok := r.Context().Value(stopKey{}).(context.Context)
	return ok && stop.Err() != nil
}

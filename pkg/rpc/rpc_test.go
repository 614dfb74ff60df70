package rpc_test

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mfaflow/mfaflow/pkg/fault"
	"github.com/mfaflow/mfaflow/pkg/natstest"
	"github.com/mfaflow/mfaflow/pkg/rpc"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"
)

type echo struct {
	N int `json:"n"`
}

// serve registers h as endpoint subject of a fresh micro service on its own connection and
// returns a client connection.
func serve(tb testing.TB, srv *natstest.Server, subject string, h micro.Handler) *nats.Conn {
	tb.Helper()
	nc := srv.Connect(tb)
	svc, err := micro.AddService(nc, micro.Config{Name: "rpctest", Version: "0.0.1"})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = svc.Stop() })
	if err := svc.AddEndpoint(strings.ReplaceAll(subject, ".", "-"), h, micro.WithEndpointSubject(subject)); err != nil {
		tb.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		tb.Fatal(err)
	}
	return srv.Connect(tb)
}

func quiet() *slog.Logger { return slog.New(slog.DiscardHandler) }

// wait receives from ch or fails the test after d.
func wait[T any](t *testing.T, ch <-chan T, d time.Duration, what string) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(d):
		t.Fatalf("timed out waiting for %s", what)
		panic("unreachable")
	}
}

func TestBoundedInFlightAndFastRefusal(t *testing.T) {
	const n, m = 4, 3
	srv := natstest.Start(t)
	var inFlight, peak atomic.Int32
	entered := make(chan struct{}, n+m)
	release := make(chan struct{})
	h := rpc.Endpoint(t.Context(), quiet(), func(ctx context.Context, r echo) (echo, error) {
		now := inFlight.Add(1)
		defer inFlight.Add(-1)
		for p := peak.Load(); now > p && !peak.CompareAndSwap(p, now); p = peak.Load() {
		}
		entered <- struct{}{}
		select {
		case <-release:
			return r, nil
		case <-ctx.Done():
			return echo{}, ctx.Err()
		}
	}, rpc.WithLimits(rpc.Limits{MaxInFlight: n, Timeout: 30 * time.Second}))
	nc := serve(t, srv, "test.bounded", h)

	results := make(chan error, n)
	for i := range n {
		go func() {
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			var got echo
			err := rpc.Call(ctx, nc, "test.bounded", echo{N: i}, &got)
			if err == nil && got.N != i {
				err = errors.New("wrong reply")
			}
			results <- err
		}()
	}
	for range n {
		wait(t, entered, 10*time.Second, "a command to start")
	}
	if got := inFlight.Load(); got != n {
		t.Fatalf("in flight = %d, want %d", got, n)
	}
	for range m {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		start := time.Now()
		err := rpc.Call(ctx, nc, "test.bounded", echo{}, nil)
		cancel()
		var fe *fault.Error
		if !errors.As(err, &fe) || fe.Code != fault.Unavailable || fe.Message != rpc.MsgBusy {
			t.Fatalf("extra request: %v, want unavailable %q", err, rpc.MsgBusy)
		}
		if d := time.Since(start); d > 2*time.Second {
			t.Fatalf("refusal took %v", d)
		}
	}
	close(release)
	for range n {
		if err := wait(t, results, 10*time.Second, "a reply"); err != nil {
			t.Fatal(err)
		}
	}
	if p := peak.Load(); p != n {
		t.Fatalf("peak in flight = %d, want %d", p, n)
	}
}

func TestAWaitingHandlerDoesNotBlockOthers(t *testing.T) {
	srv := natstest.Start(t)
	meet := make(chan struct{})
	h := rpc.Endpoint(t.Context(), quiet(), func(ctx context.Context, r echo) (echo, error) {
		// Two commands rendezvous: each completes only if the other runs at the same time.
		select {
		case meet <- struct{}{}:
		case <-meet:
		case <-ctx.Done():
			return echo{}, ctx.Err()
		}
		return r, nil
	}, rpc.WithLimits(rpc.Limits{Timeout: 5 * time.Second}))
	nc := serve(t, srv, "test.rendezvous", h)
	errs := make(chan error, 2)
	for i := range 2 {
		go func() {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			errs <- rpc.Call(ctx, nc, "test.rendezvous", echo{N: i}, nil)
		}()
	}
	for range 2 {
		if err := wait(t, errs, 15*time.Second, "a reply"); err != nil {
			t.Fatalf("handlers ran one at a time: %v", err)
		}
	}
}

func TestDeadline(t *testing.T) {
	srv := natstest.Start(t)
	const timeout = 100 * time.Millisecond
	h := rpc.Endpoint(t.Context(), quiet(), func(ctx context.Context, r echo) (echo, error) {
		<-ctx.Done()
		return echo{}, ctx.Err()
	}, rpc.WithLimits(rpc.Limits{Timeout: timeout}))
	nc := serve(t, srv, "test.deadline", h)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	start := time.Now()
	err := rpc.Call(ctx, nc, "test.deadline", echo{}, nil)
	var fe *fault.Error
	if !errors.As(err, &fe) || fe.Code != fault.Unavailable || fe.Message != rpc.MsgTimedOut {
		t.Fatalf("got %v, want unavailable %q", err, rpc.MsgTimedOut)
	}
	if ctx.Err() != nil {
		t.Fatal("the caller's own deadline ran out: the command was not cancelled")
	}
	if d := time.Since(start); d < timeout {
		t.Fatalf("answered after %v, before the %v deadline", d, timeout)
	}
}

func TestLimitsAndShutdown(t *testing.T) {
	srv := natstest.Start(t)
	var group rpc.Group
	svcCtx, stop := context.WithCancel(context.Background())
	defer stop()
	entered := make(chan struct{}, 1)
	finished := make(chan struct{})
	h := rpc.Endpoint(svcCtx, quiet(), func(ctx context.Context, r echo) (echo, error) {
		entered <- struct{}{}
		<-ctx.Done() // cancelled by the service's shutdown
		close(finished)
		return echo{}, ctx.Err()
	}, rpc.WithLimits(rpc.Limits{MaxInFlight: 1}), rpc.WithGroup(&group))
	nc := serve(t, srv, "test.shutdown", h)
	first := make(chan error, 1)
	go func() {
		cctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		first <- rpc.Call(cctx, nc, "test.shutdown", echo{}, nil)
	}()
	wait(t, entered, 10*time.Second, "the command to start")
	// MaxInFlight 1: a second command is refused.
	cctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := rpc.Call(cctx, nc, "test.shutdown", echo{}, nil); fault.CodeOf(err) != fault.Unavailable {
		t.Fatalf("second command: %v, want unavailable", err)
	}
	stop()
	wctx, wcancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer wcancel()
	if err := group.Wait(wctx); err != nil {
		t.Fatal(err)
	}
	<-finished
	err := wait(t, first, 10*time.Second, "the cancelled command's reply")
	var fe *fault.Error
	if !errors.As(err, &fe) || fe.Code != fault.Unavailable || fe.Message != rpc.MsgStopping {
		t.Fatalf("cancelled command: %v, want unavailable %q", err, rpc.MsgStopping)
	}
	if err := rpc.Call(cctx, nc, "test.shutdown", echo{}, nil); fault.CodeOf(err) != fault.Unavailable {
		t.Fatalf("command after shutdown: %v, want unavailable", err)
	}
}

func TestErrorsAndBadInput(t *testing.T) {
	srv := natstest.Start(t)
	lockedUntil := time.Date(2026, 3, 14, 9, 28, 53, 589123456, time.UTC)
	h := rpc.Endpoint(t.Context(), quiet(), func(ctx context.Context, r echo) (echo, error) {
		switch r.N {
		case 1:
			return echo{}, fault.New(fault.NotFound, "no such thing")
		case 2:
			return echo{}, errors.New("secret internals")
		case 3:
			return echo{}, &fault.Error{Code: fault.Locked, Message: "locked", Until: lockedUntil}
		}
		return r, nil
	})
	nc := serve(t, srv, "test.errors", h)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var got echo
	if err := rpc.Call(ctx, nc, "test.errors", echo{N: 7}, &got); err != nil || got.N != 7 {
		t.Fatalf("%v %+v", err, got)
	}
	if err := rpc.Call(ctx, nc, "test.errors", echo{N: 1}, nil); fault.CodeOf(err) != fault.NotFound {
		t.Fatalf("got %v", err)
	}
	if err := rpc.Call(ctx, nc, "test.errors", echo{N: 2}, nil); fault.CodeOf(err) != fault.Internal || strings.Contains(err.Error(), "secret") {
		t.Fatalf("got %v", err)
	}
	// A refusal that ends at a known time says when, to the nanosecond.
	if fe := fault.From(rpc.Call(ctx, nc, "test.errors", echo{N: 3}, nil)); fe.Code != fault.Locked || !fe.Until.Equal(lockedUntil) {
		t.Fatalf("got %+v, want locked until %v", fe, lockedUntil)
	}
	if fe := fault.From(rpc.Call(ctx, nc, "test.errors", echo{N: 1}, nil)); !fe.Until.IsZero() {
		t.Fatalf("a refusal without an end came back with Until %v", fe.Until)
	}
	if err := rpc.Call(ctx, nc, "test.errors", json.RawMessage(`"not an object"`), nil); fault.CodeOf(err) != fault.BadRequest {
		t.Fatalf("got %v", err)
	}
	big := strings.Repeat("x", rpc.MaxRequestBytes)
	if err := rpc.Call(ctx, nc, "test.errors", big, nil); fault.CodeOf(err) != fault.PayloadTooLarge {
		t.Fatalf("got %v", err)
	}
}

// BenchmarkEndpointParallel runs commands from many clients at once against an endpoint whose
// handler, like status's enroll, waits on another service (a downstream endpoint taking ~1 ms,
// as a store write would). "inline" is the old adapter (micro runs the handler on its one
// subscription goroutine); "concurrent" is rpc.Endpoint.
func BenchmarkEndpointParallel(b *testing.B) {
	for _, mode := range []string{"inline", "concurrent"} {
		b.Run(mode, func(b *testing.B) {
			srv := natstest.Start(b)
			down := serve(b, srv, "bench.down", rpc.Endpoint(b.Context(), quiet(), func(ctx context.Context, r echo) (echo, error) {
				t := time.NewTimer(time.Millisecond) // the downstream's own work
				defer t.Stop()
				select {
				case <-t.C:
				case <-ctx.Done():
				}
				return r, nil
			}))
			upstream := func(ctx context.Context, r echo) (echo, error) {
				var out echo
				err := rpc.Call(ctx, down, "bench.down", r, &out)
				return out, err
			}
			var h micro.Handler
			if mode == "inline" {
				h = micro.HandlerFunc(func(req micro.Request) {
					var r echo
					_ = json.Unmarshal(req.Data(), &r)
					out, err := upstream(b.Context(), r)
					if err != nil {
						_ = req.Error(string(fault.Internal), "internal error", nil)
						return
					}
					_ = req.RespondJSON(out)
				})
			} else {
				h = rpc.Endpoint(b.Context(), quiet(), upstream)
			}
			nc := serve(b, srv, "bench.up", h)
			var mu sync.Mutex
			var failed error
			b.SetParallelism(16)
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				for i := 0; pb.Next(); i++ {
					ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
					err := rpc.Call(ctx, nc, "bench.up", echo{N: i}, nil)
					cancel()
					if err != nil {
						mu.Lock()
						failed = err
						mu.Unlock()
					}
				}
			})
			b.StopTimer()
			if failed != nil {
				b.Fatal(failed)
			}
		})
	}
}

// TestUnknownRemoteCodeHidesItsText: a responder answering with a code that is not a fault
// code (a micro-level error, another version of a service) must not have its message passed
// on as if it were written for clients: the caller sees "internal" with the fixed text.
func TestUnknownRemoteCodeHidesItsText(t *testing.T) {
	srv := natstest.Start(t)
	nc := serve(t, srv, "test.unknown", micro.HandlerFunc(func(r micro.Request) {
		_ = r.Error("E42", "stack trace: db password=hunter2", nil)
	}))
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	err := rpc.Call(ctx, nc, "test.unknown", echo{}, nil)
	if err == nil {
		t.Fatal("an error reply answered success")
	}
	fe := fault.From(err)
	if fe.Code != fault.Internal || strings.Contains(fe.Message, "hunter2") {
		t.Fatalf("unknown remote code reached the caller as %+v", fe)
	}
}

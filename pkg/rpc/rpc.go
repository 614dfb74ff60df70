// Package rpc carries commands between mfaflow services over NATS request/reply: a JSON client
// call that turns micro error replies back into *fault.Error, and the matching server helpers.
package rpc

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"reflect"
	"sync"
	"time"

	"github.com/mfaflow/mfaflow/pkg/fault"
	"github.com/mfaflow/mfaflow/pkg/metrics"
	"github.com/mfaflow/mfaflow/pkg/natsx"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"
)

// HeaderUntil is the header of an error reply that carries fault.Error.Until (RFC 3339 with
// nanoseconds, UTC): when a refusal that lasts a while ends, e.g. a locked user's code checks.
// Call puts it back into the *fault.Error it returns.
const HeaderUntil = "Mfa-Fault-Until"

// MaxRequestBytes bounds a command payload; larger requests are refused as payload_too_large.
const MaxRequestBytes = 64 << 10

// Call sends req as JSON to subject and decodes the reply into resp (when resp is not nil).
// A micro error reply comes back as *fault.Error with the responder's code (and Until, from
// HeaderUntil); no responder or a
// timeout is fault.Unavailable, so callers can tell "the other service said no" from "nobody
// answered".
func Call(ctx context.Context, nc *nats.Conn, subject string, req, resp any) error {
	body, err := json.Marshal(req)
	if err != nil {
		return fmt.Errorf("encode %s request: %w", subject, err)
	}
	msg, err := nc.RequestWithContext(ctx, subject, body)
	if err != nil {
		if natsx.IsTransient(err) {
			return fault.New(fault.Unavailable, "a backing service did not answer; try again")
		}
		return fmt.Errorf("request %s: %w", subject, err)
	}
	if code := msg.Header.Get(micro.ErrorCodeHeader); code != "" {
		if !fault.Code(code).Known() {
			// Not one of ours (a micro-level error, another version): its text is not written
			// for clients, so it travels as a plain error, which answers "internal" and is logged
			// once where it is answered.
			return fmt.Errorf("%s answered unknown error code %q: %s", subject, code, msg.Header.Get(micro.ErrorHeader))
		}
		fe := &fault.Error{Code: fault.Code(code), Message: msg.Header.Get(micro.ErrorHeader)}
		if until := msg.Header.Get(HeaderUntil); until != "" {
			// A malformed time says nothing about the refusal itself: keep the code.
			fe.Until, _ = time.Parse(time.RFC3339Nano, until)
		}
		return fe
	}
	if resp == nil {
		return nil
	}
	if err := json.Unmarshal(msg.Data, resp); err != nil {
		return fmt.Errorf("decode %s reply: %w", subject, err)
	}
	return nil
}

// Handler is a typed command handler: it gets the decoded request and returns the reply or an
// error. Errors that are not *fault.Error reach the caller as "internal" and are logged here.
type Handler[Req, Resp any] func(ctx context.Context, req Req) (Resp, error)

// The defaults of Limits.
const (
	// DefaultMaxInFlight bounds the commands one endpoint runs at once on one replica. Commands
	// are short and mostly wait on NATS or the store (a few KiB of goroutine each), so 256 keeps a
	// replica busy through a burst while memory stays bounded (256 × 64 KiB requests is 16 MiB at
	// worst); past that a caller is better served by an immediate `unavailable` and another
	// replica than by a queue it cannot see.
	DefaultMaxInFlight = 256
	// DefaultTimeout bounds one command. Callers give up after 5 s (their request timeout), so a
	// command still running at 10 s answers nobody and only holds a slot.
	DefaultTimeout = 10 * time.Second
)

// Limits bound the commands of one endpoint on one replica. Zero fields take the defaults.
type Limits struct {
	// MaxInFlight commands run at once; one more is answered with fault.Unavailable at once.
	MaxInFlight int
	// Timeout is the deadline of each command's context.
	Timeout time.Duration
}

func (l Limits) withDefaults() Limits {
	if l.MaxInFlight <= 0 {
		l.MaxInFlight = DefaultMaxInFlight
	}
	if l.Timeout <= 0 {
		l.Timeout = DefaultTimeout
	}
	return l
}

// Group tracks the commands in flight of the endpoints it is given to (WithGroup), so a service
// can wait for them at shutdown: stop the micro service (no new commands), cancel the handlers'
// context, then Wait. The zero Group is ready to use.
type Group struct {
	mu   sync.Mutex
	n    int           // commands in flight
	idle chan struct{} // closed when n drops to 0; nil while idle
}

func (g *Group) add() {
	g.mu.Lock()
	if g.n == 0 {
		g.idle = make(chan struct{})
	}
	g.n++
	g.mu.Unlock()
}

func (g *Group) done() {
	g.mu.Lock()
	g.n--
	if g.n == 0 {
		close(g.idle)
		g.idle = nil
	}
	g.mu.Unlock()
}

// Wait blocks until no command tracked by g is in flight, or ctx ends. Unlike with a
// sync.WaitGroup, a command may safely start while Wait runs (a message micro delivered just
// before it stopped); Wait returns once the count reaches zero.
func (g *Group) Wait(ctx context.Context) error {
	g.mu.Lock()
	idle := g.idle
	g.mu.Unlock()
	if idle == nil {
		return nil
	}
	select {
	case <-idle:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("commands still in flight: %w", ctx.Err())
	}
}

// Option configures an Endpoint.
type Option func(*endpointOptions)

type endpointOptions struct {
	limits Limits
	group  *Group
}

// WithLimits sets the endpoint's limits; zero fields keep the defaults.
func WithLimits(l Limits) Option { return func(o *endpointOptions) { o.limits = l } }

// WithGroup makes the endpoint track its commands in flight in g.
func WithGroup(g *Group) Option { return func(o *endpointOptions) { o.group = g } }

// Messages of the refusals Endpoint makes itself. Fixed, so callers and tests can rely on them.
const (
	MsgBusy     = "too many commands in flight on this replica; try again"
	MsgTimedOut = "the command timed out; try again"
	MsgStopping = "the service is stopping; try again"
	// MsgUnavailable answers a command that failed because NATS or JetStream was out of reach.
	MsgUnavailable = "the event store is briefly unavailable; try again"
)

// Endpoint adapts h to a micro handler: it bounds and decodes the request, runs h with a context
// derived from ctx with the endpoint's Timeout, and answers with JSON or a micro error whose code
// is the fault code.
//
// micro delivers an endpoint's requests on one goroutine and would run h inline, one request at a
// time per replica, so a handler waiting on another service would serialise the endpoint. Endpoint
// instead runs each command in its own goroutine, at most MaxInFlight at once (each call of
// Endpoint has its own bound); a request beyond that is answered fault.Unavailable at once, and
// the caller can retry, possibly on another replica. When ctx ends, commands in flight see their
// context cancelled and new ones are refused.
//
// Because the handler returns before the command has answered, micro's $SRV.STATS count every
// request but measure only the hand-off and count as errors only the refusals made before it
// (too large, malformed, busy, stopping).
func Endpoint[Req, Resp any](ctx context.Context, log *slog.Logger, h Handler[Req, Resp], opts ...Option) micro.Handler {
	var o endpointOptions
	for _, opt := range opts {
		opt(&o)
	}
	limits := o.limits.withDefaults()
	slots := make(chan struct{}, limits.MaxInFlight)
	return micro.HandlerFunc(func(r micro.Request) {
		if len(r.Data()) > MaxRequestBytes {
			respondError(r, fault.New(fault.PayloadTooLarge, "request too large"))
			return
		}
		if ctx.Err() != nil {
			respondError(r, fault.New(fault.Unavailable, MsgStopping))
			return
		}
		select {
		case slots <- struct{}{}:
		default:
			respondError(r, fault.New(fault.Unavailable, MsgBusy))
			return
		}
		if o.group != nil {
			o.group.add()
		}
		r = detach(r)
		go func() {
			defer func() {
				<-slots
				if o.group != nil {
					o.group.done()
				}
			}()
			run(ctx, log, limits.Timeout, h, r)
		}()
	})
}

// run decodes r, runs h under its deadline and answers.
func run[Req, Resp any](ctx context.Context, log *slog.Logger, timeout time.Duration, h Handler[Req, Resp], r micro.Request) {
	start, outcome := time.Now(), "ok"
	defer func() {
		metrics.Commands.WithLabelValues(r.Subject(), outcome).Inc()
		metrics.CommandDuration.WithLabelValues(r.Subject()).Observe(time.Since(start).Seconds())
	}()
	var req Req
	if err := json.Unmarshal(r.Data(), &req); err != nil {
		outcome = string(fault.BadRequest)
		respondError(r, fault.New(fault.BadRequest, "malformed request"))
		return
	}
	cctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	resp, err := h(cctx, req)
	if err != nil {
		fe := fault.From(err)
		if fe.Code == fault.Internal {
			switch {
			case errors.Is(cctx.Err(), context.DeadlineExceeded) && ctx.Err() == nil:
				log.Warn("command timed out", "subject", r.Subject(), "timeout", timeout, "err", err)
				fe = fault.New(fault.Unavailable, MsgTimedOut)
			case ctx.Err() != nil:
				fe = fault.New(fault.Unavailable, MsgStopping)
			case natsx.IsTransient(err) || errors.Is(err, fault.ErrTransient):
				// NATS, a JetStream stream or the store was out of reach (a node down, a leader
				// election, a lost connection): the caller may retry, as for a timeout.
				log.Warn("command hit an outage of NATS or the store", "subject", r.Subject(), "err", err)
				fe = fault.New(fault.Unavailable, MsgUnavailable)
			default:
				log.Error("command failed", "subject", r.Subject(), "err", err)
			}
		}
		outcome = string(fe.Code)
		respondError(r, fe)
		return
	}
	if err := r.RespondJSON(resp); err != nil {
		log.Warn("reply failed", "subject", r.Subject(), "err", err)
	}
}

// detach returns a shallow copy of micro's request, so answering it from the command's goroutine
// does not race with micro reading the original's answer error (for $SRV.STATS) as soon as the
// handler returns. The copy shares the underlying message. A Request that is not a pointer to a
// struct (a test double) is returned as it is.
func detach(r micro.Request) micro.Request {
	v := reflect.ValueOf(r)
	if v.Kind() != reflect.Pointer || v.IsNil() || v.Elem().Kind() != reflect.Struct {
		return r
	}
	cp := reflect.New(v.Elem().Type())
	cp.Elem().Set(v.Elem())
	if c, ok := cp.Interface().(micro.Request); ok {
		return c
	}
	return r
}

func respondError(r micro.Request, fe *fault.Error) {
	if !fe.Until.IsZero() {
		_ = r.Error(string(fe.Code), fe.Message, nil, micro.WithHeaders(micro.Headers{HeaderUntil: {fe.Until.UTC().Format(time.RFC3339Nano)}}))
		return
	}
	_ = r.Error(string(fe.Code), fe.Message, nil)
}

// Package rpc carries commands between mfaflow services over NATS request/reply: a JSON client
// call that turns micro error replies back into *fault.Error, and the matching server helpers.
package rpc

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"

	"github.com/mfaflow/mfaflow/pkg/fault"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"
)

// MaxRequestBytes bounds a command payload; larger requests are refused as payload_too_large.
const MaxRequestBytes = 64 << 10

// Call sends req as JSON to subject and decodes the reply into resp (when resp is not nil).
// A micro error reply comes back as *fault.Error with the responder's code; no responder or a
// timeout is fault.Unavailable, so callers can tell "the other service said no" from "nobody
// answered".
func Call(ctx context.Context, nc *nats.Conn, subject string, req, resp any) error {
	body, err := json.Marshal(req)
	if err != nil {
		return fmt.Errorf("encode %s request: %w", subject, err)
	}
	msg, err := nc.RequestWithContext(ctx, subject, body)
	if err != nil {
		if errors.Is(err, nats.ErrNoResponders) || errors.Is(err, context.DeadlineExceeded) || errors.Is(err, nats.ErrTimeout) ||
			errors.Is(err, nats.ErrConnectionClosed) || errors.Is(err, nats.ErrConnectionDraining) || errors.Is(err, nats.ErrDisconnected) {
			return fault.New(fault.Unavailable, "a backing service did not answer; try again")
		}
		return fmt.Errorf("request %s: %w", subject, err)
	}
	if code := msg.Header.Get(micro.ErrorCodeHeader); code != "" {
		return &fault.Error{Code: fault.Code(code), Message: msg.Header.Get(micro.ErrorHeader)}
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

// Endpoint adapts h to a micro handler: it bounds and decodes the request, runs h with ctx,
// and answers with JSON or a micro error whose code is the fault code.
func Endpoint[Req, Resp any](ctx context.Context, log *slog.Logger, h Handler[Req, Resp]) micro.Handler {
	return micro.HandlerFunc(func(r micro.Request) {
		if len(r.Data()) > MaxRequestBytes {
			respondError(r, fault.New(fault.PayloadTooLarge, "request too large"))
			return
		}
		var req Req
		if err := json.Unmarshal(r.Data(), &req); err != nil {
			respondError(r, fault.New(fault.BadRequest, "malformed request"))
			return
		}
		resp, err := h(ctx, req)
		if err != nil {
			fe := fault.From(err)
			if fe.Code == fault.Internal {
				log.Error("command failed", "subject", r.Subject(), "err", err)
			}
			respondError(r, fe)
			return
		}
		if err := r.RespondJSON(resp); err != nil {
			log.Warn("reply failed", "subject", r.Subject(), "err", err)
		}
	})
}

func respondError(r micro.Request, fe *fault.Error) {
	_ = r.Error(string(fe.Code), fe.Message, nil)
}

package bridgesvc

import (
	"context"
	"encoding/json"
	"errors"

	"github.com/mfaflow/mfaflow/events/commands"
	"github.com/mfaflow/mfaflow/events/protocol"
	"github.com/mfaflow/mfaflow/pkg/fault"
	"github.com/mfaflow/mfaflow/pkg/rpc"
)

// handle answers one text frame with an ack or an error frame. Everything the bridge can judge
// on its own is checked here, before any NATS call, so a broken client costs the status service
// nothing.
func (c *conn) handle(data []byte) any {
	var req protocol.Request
	if err := json.Unmarshal(data, &req); err != nil {
		// On a type error Unmarshal still fills the fields it could, so the id is echoed when
		// the client got that much right; on a syntax error it stays empty.
		return errorFrame(req.ID, decodeFault(err))
	}
	if req.ID == "" {
		return errorFrame("", fault.New(fault.BadRequest, "id is required"))
	}

	ctx, cancel := context.WithTimeout(c.s.ctx, c.s.cfg.RequestTimeout)
	defer cancel()
	switch req.Type {
	case protocol.TypeLogin:
		return c.login(ctx, req)
	case protocol.TypePushResponse:
		return c.pushResponse(ctx, req)
	}
	var (
		reply commands.EnrollmentReply
		err   error
	)
	switch req.Type {
	case protocol.TypeScan:
		reply, err = c.scan(ctx, req)
	case protocol.TypeEnroll:
		reply, err = c.enroll(ctx, req)
	default:
		err = fault.New(fault.BadRequest, "unknown frame type")
	}
	if err != nil {
		return errorFrame(req.ID, c.fault(req.Type, err))
	}
	return toAck(req.ID, reply)
}

func (c *conn) scan(ctx context.Context, req protocol.Request) (commands.EnrollmentReply, error) {
	var reply commands.EnrollmentReply
	if req.ExchangeID == "" {
		return reply, fault.New(fault.BadRequest, "exchange_id is required")
	}
	cmd := commands.ScanRequest{ExchangeID: req.ExchangeID, Device: toCommandDevice(req.Device)}
	err := rpc.Call(ctx, c.s.nc, commands.StatusScan, cmd, &reply)
	return reply, err
}

func (c *conn) enroll(ctx context.Context, req protocol.Request) (commands.EnrollmentReply, error) {
	var reply commands.EnrollmentReply
	if req.ExchangeID == "" {
		return reply, fault.New(fault.BadRequest, "exchange_id is required")
	}
	// A malformed code is a client bug, not a guess: it must not count as a wrong code
	// (invalid_code), which the status service tallies towards FAILED.
	if !validCode(req.Code) {
		return reply, fault.New(fault.BadRequest, "code must be 6 to 8 digits")
	}
	dev := toCommandDevice(req.Device)
	if req.DeviceKey != nil {
		k := &commands.DeviceKey{Kty: req.DeviceKey.Kty, Crv: req.DeviceKey.Crv, X: req.DeviceKey.X, Y: req.DeviceKey.Y}
		if _, err := parseDeviceKey(k); err != nil {
			return reply, fault.New(fault.BadRequest, `device_key must be a JWK {"kty":"EC","crv":"P-256","x","y"} of a point on the curve`)
		}
		dev.Key = k
	}
	cmd := commands.EnrollRequest{ExchangeID: req.ExchangeID, Code: req.Code, Device: dev}
	err := rpc.Call(ctx, c.s.nc, commands.StatusEnroll, cmd, &reply)
	return reply, err
}

// fault is the one place where a failed request becomes what the client sees, and where it is
// logged. Only the operation and the error are logged: never the code, never the exchange id.
func (c *conn) fault(op string, err error) *fault.Error {
	if errors.Is(err, context.Canceled) && c.s.ctx.Err() != nil {
		return fault.New(fault.Unavailable, "server shutting down; reconnect")
	}
	fe := fault.From(err)
	switch {
	case fe.Code == fault.Unavailable:
		c.log.Warn("status service unavailable", "op", op, "err", err)
	case fe.Code == fault.Internal || !fe.Code.Known():
		// An unknown code would be a contract break with the status service; clients only
		// know the documented codes, so it is reported as internal.
		c.log.Error("bridge request failed", "op", op, "err", err)
		fe = fault.New(fault.Internal, "internal error")
	}
	return fe
}

func decodeFault(err error) *fault.Error {
	var ute *json.UnmarshalTypeError
	if errors.As(err, &ute) {
		if ute.Field != "" {
			return fault.New(fault.BadRequest, "field "+ute.Field+" has the wrong type")
		}
		return fault.New(fault.BadRequest, "frame must be a JSON object")
	}
	return fault.New(fault.BadRequest, "frame is not valid JSON")
}

func validCode(code string) bool {
	if len(code) < 6 || len(code) > 8 {
		return false
	}
	for i := 0; i < len(code); i++ {
		if code[i] < '0' || code[i] > '9' {
			return false
		}
	}
	return true
}

func toCommandDevice(d *protocol.Device) commands.Device {
	if d == nil {
		return commands.Device{}
	}
	return commands.Device{DeviceID: d.DeviceID, Name: d.Name, Platform: d.Platform}
}

func toAck(id string, r commands.EnrollmentReply) protocol.Ack {
	return protocol.Ack{
		Type:     protocol.TypeAck,
		ID:       id,
		Status:   r.Status,
		StatusID: r.ID,
		DeviceID: r.DeviceID,
		PHID:     r.PHID,
	}
}

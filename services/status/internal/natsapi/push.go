package natsapi

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"sync"
	"time"

	"github.com/mfaflow/mfaflow/events/commands"
	"github.com/mfaflow/mfaflow/pkg/fault"
	"github.com/mfaflow/mfaflow/pkg/ids"
	"github.com/mfaflow/mfaflow/pkg/rpc"
	"github.com/mfaflow/mfaflow/services/status/internal/signin"
	"github.com/nats-io/nats.go"
)

var _ signin.PushDirectory = (*Registry)(nil)

// PushDevices implements signin.PushDirectory.
func (r *Registry) PushDevices(ctx context.Context, sub string) ([]string, error) {
	ctx, cancel := context.WithTimeout(ctx, r.timeout())
	defer cancel()
	var reply commands.PushDevicesReply
	if err := rpc.Call(ctx, r.NC, commands.RegistryPushDevices, commands.DeviceRequest{Sub: sub}, &reply); err != nil {
		return nil, err
	}
	out := make([]string, 0, len(reply.Devices))
	for _, d := range reply.Devices {
		out = append(out, d.PHID)
	}
	return out, nil
}

// DeviceOf implements signin.PushDirectory.
func (r *Registry) DeviceOf(ctx context.Context, phid, sub string) (bool, error) {
	if !ids.Valid(phid) {
		return false, nil
	}
	ctx, cancel := context.WithTimeout(ctx, r.timeout())
	defer cancel()
	var info commands.DeviceInfo
	err := rpc.Call(ctx, r.NC, commands.RegistryDeviceGet, commands.DeviceRequest{PHID: phid}, &info)
	if fault.CodeOf(err) == fault.NotFound {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	return info.Sub == sub && info.Key != nil, nil
}

// CountFailure implements signin.PushDirectory.
func (r *Registry) CountFailure(ctx context.Context, sub string) error {
	_, err := r.factor(ctx, commands.RegistryFactorsFailure, commands.FactorRequest{Sub: sub})
	return err
}

// MarkUsed implements signin.PushDirectory.
func (r *Registry) MarkUsed(ctx context.Context, phid, sub string) error {
	ctx, cancel := context.WithTimeout(ctx, r.timeout())
	defer cancel()
	return rpc.Call(ctx, r.NC, commands.RegistryDeviceUsed, commands.DeviceRequest{PHID: phid, Sub: sub}, nil)
}

// PushSender delivers challenges to the bridge replica that holds each device's session, over
// core NATS request/reply; a device without a session (no responder) gets it when it logs in,
// and WakeUp, when set, is told so it can nudge a sleeping app.
type PushSender struct {
	NC  *nats.Conn
	Log *slog.Logger
	// WakeUp hears of every device the challenge did not reach.
	WakeUp func(phid, challengeID string, expiresAt time.Time)
	// Timeout bounds one delivery; 0 means 3s.
	Timeout time.Duration

	wg sync.WaitGroup
}

var _ signin.PushSender = (*PushSender)(nil)

// Send implements signin.PushSender: it delivers in the background, one request per device.
func (p *PushSender) Send(c signin.Challenge, phids []string) {
	msg := commands.PushChallenge{
		ChallengeID: c.ChallengeID, StatusID: c.StatusID, Sub: c.Sub, Numbers: c.Numbers,
		Context: c.Context, ExpiresAt: c.ExpiresAt,
	}
	data, err := json.Marshal(msg)
	if err != nil {
		p.Log.Error("encode push challenge", "err", err)
		return
	}
	timeout := p.Timeout
	if timeout <= 0 {
		timeout = 3 * time.Second
	}
	for _, phid := range phids {
		if !ids.Valid(phid) {
			continue
		}
		p.wg.Go(func() {
			delivered := false
			reply, err := p.NC.Request(commands.BridgeDevicePrefix+phid, data, timeout)
			if err == nil {
				var d commands.PushDelivery
				delivered = json.Unmarshal(reply.Data, &d) == nil && d.Delivered
			} else if !errors.Is(err, nats.ErrNoResponders) && !errors.Is(err, nats.ErrTimeout) {
				p.Log.Warn("push delivery failed", "ph_id", phid, "err", err)
			}
			if !delivered && p.WakeUp != nil {
				p.WakeUp(phid, c.ChallengeID, c.ExpiresAt)
			}
		})
	}
}

// Wait waits for deliveries in flight (Close of the service).
func (p *PushSender) Wait() { p.wg.Wait() }

func toCommandChallenges(cs []signin.Challenge) []commands.PushChallenge {
	out := make([]commands.PushChallenge, 0, len(cs))
	for _, c := range cs {
		out = append(out, commands.PushChallenge{
			ChallengeID: c.ChallengeID, StatusID: c.StatusID, Sub: c.Sub, Numbers: c.Numbers,
			Context: c.Context, ExpiresAt: c.ExpiresAt,
		})
	}
	return out
}

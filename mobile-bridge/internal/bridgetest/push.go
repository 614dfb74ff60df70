package bridgetest

import (
	"context"
	"io"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/mfaflow/mfaflow/events/commands"
	"github.com/mfaflow/mfaflow/events/method"
	"github.com/mfaflow/mfaflow/pkg/fault"
	"github.com/mfaflow/mfaflow/pkg/rpc"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"
)

// Registry is the scripted stand-in for the device registry: it answers RegistryDeviceGet from
// the devices added to it.
type Registry struct {
	mu      sync.Mutex
	devices map[string]commands.DeviceInfo
	gets    []commands.DeviceRequest
}

// StartRegistry registers the registry stand-in as a micro service on nc.
func StartRegistry(tb testing.TB, nc *nats.Conn) *Registry {
	tb.Helper()
	r := &Registry{devices: map[string]commands.DeviceInfo{}}
	svc, err := micro.AddService(nc, micro.Config{Name: commands.RegistryService, Version: "0.0.0"})
	if err != nil {
		tb.Fatalf("add registry stand-in: %v", err)
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	if err := svc.AddEndpoint("devices-get", rpc.Endpoint(context.Background(), log, r.get),
		micro.WithEndpointSubject(commands.RegistryDeviceGet)); err != nil {
		tb.Fatalf("add devices.get endpoint: %v", err)
	}
	if err := nc.Flush(); err != nil {
		tb.Fatalf("flush registry stand-in: %v", err)
	}
	tb.Cleanup(func() { _ = svc.Stop() })
	return r
}

// Add registers a device (replacing one with the same ph_id).
func (r *Registry) Add(d commands.DeviceInfo) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.devices[d.PHID] = d
}

// Remove forgets a device, as the registry does when the user removes it.
func (r *Registry) Remove(phID string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	delete(r.devices, phID)
}

// Gets returns the device lookups received so far.
func (r *Registry) Gets() []commands.DeviceRequest {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]commands.DeviceRequest(nil), r.gets...)
}

func (r *Registry) get(_ context.Context, req commands.DeviceRequest) (commands.DeviceInfo, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.gets = append(r.gets, req)
	d, ok := r.devices[req.PHID]
	if !ok {
		return commands.DeviceInfo{}, fault.New(fault.NotFound, "no such device")
	}
	return d, nil
}

// Challenge scripts a push challenge of the status stand-in.
type Challenge struct {
	commands.PushChallenge
	// Right is the number that approves; any other approve answers DENIED, like the real service.
	Right string
}

type challenge struct {
	Challenge
	acked    bool
	answered string // the status after the answer; empty while pending
}

// AddChallenge scripts an open challenge: push.pending lists it for its Sub until it is answered.
func (s *Status) AddChallenge(ch Challenge) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.challenges = append(s.challenges, &challenge{Challenge: ch})
}

// PushAcks returns the delivery acknowledgements received so far.
func (s *Status) PushAcks() []commands.PushAckRequest {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]commands.PushAckRequest(nil), s.pushAcks...)
}

// PushResponds returns the push answers received so far.
func (s *Status) PushResponds() []commands.PushRespondRequest {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]commands.PushRespondRequest(nil), s.pushResponds...)
}

// PushPendings returns the pending lookups received so far.
func (s *Status) PushPendings() []commands.PushPendingRequest {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]commands.PushPendingRequest(nil), s.pushPendings...)
}

func (s *Status) addPushEndpoints(tb testing.TB, svc micro.Service, log *slog.Logger) {
	tb.Helper()
	ctx := context.Background()
	for subject, h := range map[string]micro.Handler{
		commands.StatusPushPending: rpc.Endpoint(ctx, log, s.pushPending),
		commands.StatusPushAck:     rpc.Endpoint(ctx, log, s.pushAck),
		commands.StatusPushRespond: rpc.Endpoint(ctx, log, s.pushRespond),
	} {
		name := "push-" + subject[len(commands.StatusGroup+".push."):]
		if err := svc.AddEndpoint(name, h, micro.WithEndpointSubject(subject)); err != nil {
			tb.Fatalf("add %s endpoint: %v", subject, err)
		}
	}
}

func (s *Status) pushPending(_ context.Context, req commands.PushPendingRequest) (commands.PushPendingReply, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.pushPendings = append(s.pushPendings, req)
	reply := commands.PushPendingReply{Challenges: []commands.PushChallenge{}}
	for _, ch := range s.challenges {
		if ch.Sub == req.Sub && ch.answered == "" && time.Now().Before(ch.ExpiresAt) {
			reply.Challenges = append(reply.Challenges, ch.PushChallenge)
		}
	}
	return reply, nil
}

func (s *Status) pushAck(_ context.Context, req commands.PushAckRequest) (struct{}, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.pushAcks = append(s.pushAcks, req)
	ch := s.findChallenge(req.ChallengeID)
	if ch == nil {
		return struct{}{}, fault.New(fault.NotFound, "no such challenge")
	}
	ch.acked = true
	return struct{}{}, nil
}

func (s *Status) pushRespond(_ context.Context, req commands.PushRespondRequest) (commands.EnrollmentReply, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.pushResponds = append(s.pushResponds, req)
	ch := s.findChallenge(req.ChallengeID)
	switch {
	case ch == nil || ch.Sub != req.Sub:
		return commands.EnrollmentReply{}, fault.New(fault.NotFound, "no such challenge")
	case ch.answered != "":
		return commands.EnrollmentReply{}, fault.New(fault.Conflict, "challenge already answered")
	case !time.Now().Before(ch.ExpiresAt):
		return commands.EnrollmentReply{}, fault.New(fault.Expired, "challenge expired")
	}
	ch.answered = "DENIED"
	if req.Decision == "approve" && req.Number == ch.Right {
		ch.answered = "AUTHENTICATED"
	}
	return commands.EnrollmentReply{
		Status: ch.answered, ID: ch.StatusID, Sub: ch.Sub, Method: method.Push,
		ExpiresAt: ch.ExpiresAt, UpdatedAt: time.Now(), PHID: req.PHID,
	}, nil
}

func (s *Status) findChallenge(id string) *challenge {
	for _, ch := range s.challenges {
		if ch.ChallengeID == id {
			return ch
		}
	}
	return nil
}

// Deliver plays the status service sending a challenge to a device's session, as any NATS
// client can: a request on commands.BridgeDevicePrefix + phID.
func Deliver(ctx context.Context, nc *nats.Conn, phID string, ch commands.PushChallenge) (commands.PushDelivery, error) {
	var d commands.PushDelivery
	err := rpc.Call(ctx, nc, commands.BridgeDevicePrefix+phID, ch, &d)
	return d, err
}

// Package bridgetest boots a real bridge for tests: an embedded NATS server, scripted stand-ins
// for the status service and the device registry answering the bridge's commands, and the
// bridge behind an httptest server.
//
// The stand-in exists because the real status service lives in another module and brings its
// own store; tests of the bridge and of the companion client care about the wire contract
// (commands in, EnrollmentReply or fault out), which the stand-in honours through the same
// rpc.Endpoint plumbing. The end-to-end tests cover the real path.
package bridgetest

import (
	"context"
	"io"
	"log/slog"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mfaflow/mfaflow/events/commands"
	"github.com/mfaflow/mfaflow/events/method"
	"github.com/mfaflow/mfaflow/events/protocol"
	"github.com/mfaflow/mfaflow/mobile-bridge/bridgesvc"
	"github.com/mfaflow/mfaflow/pkg/fault"
	"github.com/mfaflow/mfaflow/pkg/httpx"
	"github.com/mfaflow/mfaflow/pkg/natstest"
	"github.com/mfaflow/mfaflow/pkg/rpc"
	"github.com/mfaflow/mfaflow/pkg/testkit"
	"github.com/mfaflow/mfaflow/pkg/totp"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"
)

// Enrollment scripts how the stand-in answers commands for one exchange id.
type Enrollment struct {
	// StatusID and Sub are echoed in replies as the enrollment's id and user.
	StatusID string
	Sub      string
	// Secret is what enroll codes are checked against, with Params (zero means totp.Default)
	// and one step of skew, like the real service.
	Secret string
	Params totp.Params
	// Fault, when set, is the answer to every command on this exchange.
	Fault *fault.Error
	// Block, when set, holds every command on this exchange until it is closed (or the
	// stand-in stops), to play a status service that does not answer in time.
	Block <-chan struct{}
}

type record struct {
	Enrollment
	state    string
	deviceID string
}

// Status is the scripted stand-in for the status service.
type Status struct {
	stop chan struct{}

	mu      sync.Mutex
	byEID   map[string]*record
	scans   []commands.ScanRequest
	enrolls []commands.EnrollRequest

	challenges   []*challenge
	pushPendings []commands.PushPendingRequest
	pushAcks     []commands.PushAckRequest
	pushResponds []commands.PushRespondRequest
}

// StartStatus registers the stand-in as a micro service on nc; it stops when the test ends.
func StartStatus(tb testing.TB, nc *nats.Conn) *Status {
	tb.Helper()
	s := &Status{stop: make(chan struct{}), byEID: map[string]*record{}}
	svc, err := micro.AddService(nc, micro.Config{Name: commands.StatusService, Version: "0.0.0"})
	if err != nil {
		tb.Fatalf("add status stand-in: %v", err)
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	ctx := context.Background()
	if err := svc.AddEndpoint("scan", rpc.Endpoint(ctx, log, s.scan), micro.WithEndpointSubject(commands.StatusScan)); err != nil {
		tb.Fatalf("add scan endpoint: %v", err)
	}
	if err := svc.AddEndpoint("enroll", rpc.Endpoint(ctx, log, s.enroll), micro.WithEndpointSubject(commands.StatusEnroll)); err != nil {
		tb.Fatalf("add enroll endpoint: %v", err)
	}
	s.addPushEndpoints(tb, svc, log)
	// The server must have seen the subscriptions before another connection sends a command,
	// or that command meets "no responders"; a flush is the round trip that guarantees it.
	if err := nc.Flush(); err != nil {
		tb.Fatalf("flush status stand-in: %v", err)
	}
	tb.Cleanup(func() {
		close(s.stop)
		_ = svc.Stop()
	})
	return s
}

// Add scripts an enrollment in state INITIATED.
func (s *Status) Add(exchangeID string, e Enrollment) {
	if e.Params == (totp.Params{}) {
		e.Params = totp.Default
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.byEID[exchangeID] = &record{Enrollment: e, state: "INITIATED"}
}

// Scans returns the scan commands received so far.
func (s *Status) Scans() []commands.ScanRequest {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]commands.ScanRequest(nil), s.scans...)
}

// Enrolls returns the enroll commands received so far.
func (s *Status) Enrolls() []commands.EnrollRequest {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]commands.EnrollRequest(nil), s.enrolls...)
}

// Calls is the number of commands received so far.
func (s *Status) Calls() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.scans) + len(s.enrolls)
}

// lookup records nothing itself; it finds the script and applies Fault and Block.
func (s *Status) lookup(eid string) (*record, error) {
	s.mu.Lock()
	rec, ok := s.byEID[eid]
	s.mu.Unlock()
	if !ok {
		return nil, fault.New(fault.NotFound, "no enrollment for this exchange id")
	}
	if rec.Block != nil {
		select {
		case <-rec.Block:
		case <-s.stop:
		}
	}
	if rec.Fault != nil {
		return nil, rec.Fault
	}
	return rec, nil
}

func (s *Status) scan(_ context.Context, req commands.ScanRequest) (commands.EnrollmentReply, error) {
	s.mu.Lock()
	s.scans = append(s.scans, req)
	s.mu.Unlock()
	rec, err := s.lookup(req.ExchangeID)
	if err != nil {
		return commands.EnrollmentReply{}, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	switch rec.state {
	case "INITIATED":
		rec.state, rec.deviceID = "SCANNED", req.Device.DeviceID
	case "SCANNED":
		// a repeated scan is idempotent
	default:
		return commands.EnrollmentReply{}, fault.New(fault.Conflict, "enrollment is "+rec.state)
	}
	return s.reply(rec), nil
}

func (s *Status) enroll(_ context.Context, req commands.EnrollRequest) (commands.EnrollmentReply, error) {
	s.mu.Lock()
	s.enrolls = append(s.enrolls, req)
	s.mu.Unlock()
	rec, err := s.lookup(req.ExchangeID)
	if err != nil {
		return commands.EnrollmentReply{}, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if rec.state == "ENROLLED" {
		return commands.EnrollmentReply{}, fault.New(fault.Conflict, "enrollment is ENROLLED")
	}
	if _, ok, err := totp.Check(rec.Secret, req.Code, time.Now(), rec.Params, 1, 0); err != nil || !ok {
		return commands.EnrollmentReply{}, fault.New(fault.InvalidCode, "wrong code")
	}
	rec.state = "ENROLLED"
	if req.Device.DeviceID != "" {
		rec.deviceID = req.Device.DeviceID
	}
	r := s.reply(rec)
	r.PHID = "ph-" + rec.StatusID
	return r, nil
}

func (s *Status) reply(rec *record) commands.EnrollmentReply {
	return commands.EnrollmentReply{
		Status:    rec.state,
		ID:        rec.StatusID,
		Sub:       rec.Sub,
		Method:    method.TOTP,
		ExpiresAt: time.Now().Add(10 * time.Minute),
		UpdatedAt: time.Now(),
		DeviceID:  rec.deviceID,
	}
}

// Env is a running bridge with its dependencies.
type Env struct {
	NATS     *natstest.Server
	Status   *Status   // nil for StartBridge
	Registry *Registry // nil for StartBridge
	Bridge   *bridgesvc.Service
	// URL is the base URL of the HTTP server (what an otpauth URI carries as burl).
	URL string
	// WSURL is the bridge endpoint as a ws:// URL.
	WSURL string

	logs *testkit.LogBuffer
}

// Start boots NATS, the status stand-in and the bridge with cfg.
func Start(tb testing.TB, cfg bridgesvc.Config) *Env {
	tb.Helper()
	ns := natstest.Start(tb)
	status := StartStatus(tb, ns.Connect(tb))
	registry := StartRegistry(tb, ns.Connect(tb))
	env := StartBridge(tb, ns.Connect(tb), cfg)
	env.NATS, env.Status, env.Registry = ns, status, registry
	return env
}

// Replica boots another bridge replica on the same NATS server, sharing the stand-ins.
func (e *Env) Replica(tb testing.TB, cfg bridgesvc.Config) *Env {
	tb.Helper()
	r := StartBridge(tb, e.NATS.Connect(tb), cfg)
	r.NATS, r.Status, r.Registry = e.NATS, e.Status, e.Registry
	return r
}

// StartBridge boots only the bridge, on nc, so a test can choose what answers (or nothing).
func StartBridge(tb testing.TB, nc *nats.Conn, cfg bridgesvc.Config) *Env {
	tb.Helper()
	logs := &testkit.LogBuffer{}
	log := slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	svc, err := bridgesvc.New(context.Background(), nc, cfg, log)
	if err != nil {
		tb.Fatal(err)
	}
	rt := httpx.NewRouter()
	svc.Routes(rt)
	srv := httptest.NewServer(rt)
	tb.Cleanup(srv.Close)
	tb.Cleanup(func() {
		if err := svc.Close(); err != nil {
			tb.Errorf("close bridge: %v", err)
		}
	})
	return &Env{
		Bridge: svc,
		URL:    srv.URL,
		WSURL:  "ws" + strings.TrimPrefix(srv.URL, "http") + protocol.Path,
		logs:   logs,
	}
}

// Logs returns everything the bridge has logged so far (at debug level and up).
func (e *Env) Logs() string { return e.logs.String() }

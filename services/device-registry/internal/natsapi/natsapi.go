// Package natsapi is the registry's NATS face: the micro service other services call to
// create, activate and discard credentials, and the JetStream consumer that discards the
// pending credential of every enrollment that ended without one.
//
// It decodes messages, calls the domain, and maps domain errors to fault codes in one place
// (toFault); it holds no rules of its own.
package natsapi

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/mfaflow/mfaflow/events/commands"
	"github.com/mfaflow/mfaflow/events/method"
	"github.com/mfaflow/mfaflow/pkg/factor"
	"github.com/mfaflow/mfaflow/pkg/fault"
	"github.com/mfaflow/mfaflow/pkg/metrics"
	"github.com/mfaflow/mfaflow/pkg/rpc"
	"github.com/mfaflow/mfaflow/pkg/totp"
	"github.com/mfaflow/mfaflow/services/device-registry/internal/device"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"
)

// Version is the micro service version shown in $SRV.INFO.
const Version = "0.1.0"

// Registry is what the NATS adapter needs of the domain.
type Registry interface {
	CreatePending(ctx context.Context, statusID, sub string, expiresAt time.Time) (string, totp.Params, []byte, error)
	VerifyPending(ctx context.Context, statusID, sub, code string, dev device.NewDevice, sealed []byte) (device.Claim, error)
	Activate(ctx context.Context, statusID, sub string, claim device.Claim) (device.Credential, error)
	DiscardPending(ctx context.Context, statusID string) error
	Ready(ctx context.Context, sub, method string) error
	Authenticate(ctx context.Context, sub, method, code, statusID string, challenge []byte) (device.Authenticated, error)
	CreatePendingOOB(ctx context.Context, statusID, sub string, expiresAt time.Time, d device.Destination) (device.OOBChallenge, error)
	ResendPendingOOB(ctx context.Context, statusID, sub string, sealed []byte) (device.OOBChallenge, error)
	Challenge(ctx context.Context, sub, method, phid, statusID, locale string) (device.OOBChallenge, error)
	Contact(ctx context.Context, sub string) (email, locale string, err error)
	RememberClaims(ctx context.Context, sub, email string, emailVerified bool, locale string) error
	CountFailure(ctx context.Context, sub string) error
	Device(ctx context.Context, phid string) (device.Credential, error)
	PushDevices(ctx context.Context, sub string) ([]device.Credential, error)
	MarkUsed(ctx context.Context, phid, sub string) error
	RequireStepUp(ctx context.Context, sub, token string) error
	CreatePendingWebAuthn(ctx context.Context, statusID, sub string, expiresAt time.Time, name string) (device.PasskeyCeremony, error)
	VerifyPendingWebAuthn(ctx context.Context, statusID, sub string, response, sealed []byte) (device.Claim, error)
	ChallengeWebAuthn(ctx context.Context, sub, statusID string) (device.PasskeyCeremony, error)
}

var _ Registry = (*device.Service)(nil)

// StartService adds the commands.RegistryService micro service to nc. Handlers run with ctx, so
// cancelling it aborts commands in flight; stop the service with its Stop method. opts (limits,
// the group that tracks commands in flight) apply to every endpoint, each with its own bound.
func StartService(ctx context.Context, nc *nats.Conn, reg Registry, log *slog.Logger, opts ...rpc.Option) (micro.Service, error) {
	svc, err := micro.AddService(nc, micro.Config{
		Name:        commands.RegistryService,
		Version:     Version,
		Description: "mfaflow device registry: the only holder of TOTP secrets",
	})
	if err != nil {
		return nil, fmt.Errorf("add micro service %s: %w", commands.RegistryService, err)
	}
	h := handlers{reg: reg}
	g := svc.AddGroup(commands.RegistryGroup)
	endpoints := []struct {
		name, subject string
		handler       micro.Handler
	}{
		{"credentials-create", commands.RegistryCreateCredential, rpc.Endpoint(ctx, log, h.create, opts...)},
		{"credentials-verify", commands.RegistryVerifyCredential, rpc.Endpoint(ctx, log, h.verify, opts...)},
		{"credentials-activate", commands.RegistryActivateCredential, rpc.Endpoint(ctx, log, h.activate, opts...)},
		{"credentials-discard", commands.RegistryDiscardCredential, rpc.Endpoint(ctx, log, h.discard, opts...)},
		{"factors-ready", commands.RegistryFactorsReady, rpc.Endpoint(ctx, log, h.ready, opts...)},
		{"factors-check", commands.RegistryFactorsCheck, rpc.Endpoint(ctx, log, h.check, opts...)},
		{"factors-failure", commands.RegistryFactorsFailure, rpc.Endpoint(ctx, log, h.failure, opts...)},
		{"devices-get", commands.RegistryDeviceGet, rpc.Endpoint(ctx, log, h.deviceGet, opts...)},
		{"devices-push", commands.RegistryPushDevices, rpc.Endpoint(ctx, log, h.pushDevices, opts...)},
		{"devices-used", commands.RegistryDeviceUsed, rpc.Endpoint(ctx, log, h.deviceUsed, opts...)},
		{"credentials-resend", commands.RegistryResendCredential, rpc.Endpoint(ctx, log, h.resend, opts...)},
		{"factors-challenge", commands.RegistryFactorsChallenge, rpc.Endpoint(ctx, log, h.challenge, opts...)},
		{"contact", commands.RegistryContact, rpc.Endpoint(ctx, log, h.contact, opts...)},
	}
	for _, e := range endpoints {
		// The group adds its prefix; the commands package spells the full subject.
		rel := strings.TrimPrefix(e.subject, commands.RegistryGroup+".")
		if err := g.AddEndpoint(e.name, e.handler, micro.WithEndpointSubject(rel)); err != nil {
			_ = svc.Stop()
			return nil, fmt.Errorf("add endpoint %s: %w", e.subject, err)
		}
	}
	// Make sure the server has the subscriptions before anyone is told we are up.
	if err := nc.Flush(); err != nil {
		_ = svc.Stop()
		return nil, fmt.Errorf("flush: %w", err)
	}
	return svc, nil
}

type handlers struct {
	reg Registry
}

func (h handlers) create(ctx context.Context, req commands.CreateCredentialRequest) (commands.CreateCredentialReply, error) {
	// A retry of an initiation in progress was let through by its first attempt, whose proof is
	// spent; every other enrollment of a user who has a factor needs a new one.
	if !req.Retry {
		if err := h.reg.RequireStepUp(ctx, req.Sub, req.StepUpToken); err != nil {
			return commands.CreateCredentialReply{}, toFault(err)
		}
	}
	if req.ContactEmail != "" || req.Locale != "" {
		// Best effort: the enrollment goes on without it.
		_ = h.reg.RememberClaims(ctx, req.Sub, req.ContactEmail, req.ContactEmail != "", req.Locale)
	}
	if req.Method == method.WebAuthn {
		c, err := h.reg.CreatePendingWebAuthn(ctx, req.StatusID, req.Sub, req.ExpiresAt, req.FriendlyName)
		if err != nil {
			return commands.CreateCredentialReply{}, toFault(err)
		}
		return commands.CreateCredentialReply{PendingCredential: c.Sealed, PublicKey: c.Options}, nil
	}
	if req.Method != "" && req.Method != method.TOTP {
		c, err := h.reg.CreatePendingOOB(ctx, req.StatusID, req.Sub, req.ExpiresAt,
			device.Destination{Method: req.Method, Address: req.Destination, Region: req.Region, Locale: req.Locale})
		if err != nil {
			return commands.CreateCredentialReply{}, toFault(err)
		}
		return oobReply(c), nil
	}
	secret, p, sealed, err := h.reg.CreatePending(ctx, req.StatusID, req.Sub, req.ExpiresAt)
	if err != nil {
		return commands.CreateCredentialReply{}, toFault(err)
	}
	return commands.CreateCredentialReply{Secret: secret, Algorithm: p.Algorithm, Digits: p.Digits, Period: p.Period, PendingCredential: sealed}, nil
}

func (h handlers) verify(ctx context.Context, req commands.VerifyCredentialRequest) (commands.CredentialClaim, error) {
	if len(req.Credential) > 0 {
		cl, err := h.reg.VerifyPendingWebAuthn(ctx, req.StatusID, req.Sub, req.Credential, req.PendingCredential)
		if err != nil {
			return commands.CredentialClaim{}, toFault(err)
		}
		return commands.CredentialClaim{PHID: cl.PHID, DeviceID: cl.DeviceID}, nil
	}
	dev := device.NewDevice{
		DeviceID: req.Device.DeviceID,
		Name:     req.Device.Name,
		Platform: req.Device.Platform,
	}
	if k := req.Device.Key; k != nil {
		if k.Kty != "EC" || k.Crv != "P-256" {
			return commands.CredentialClaim{}, fault.New(fault.BadRequest, "device_key must be an EC P-256 JWK")
		}
		dev.Key = &device.PushKey{X: k.X, Y: k.Y}
	}
	cl, err := h.reg.VerifyPending(ctx, req.StatusID, req.Sub, req.Code, dev, req.PendingCredential)
	if err != nil {
		return commands.CredentialClaim{}, toFault(err)
	}
	return commands.CredentialClaim{PHID: cl.PHID, DeviceID: cl.DeviceID}, nil
}

func (h handlers) activate(ctx context.Context, req commands.ActivateCredentialRequest) (commands.CredentialClaim, error) {
	c, err := h.reg.Activate(ctx, req.StatusID, req.Sub, device.Claim{PHID: req.PHID, DeviceID: req.DeviceID})
	if err != nil {
		return commands.CredentialClaim{}, toFault(err)
	}
	return commands.CredentialClaim{PHID: c.PHID, DeviceID: c.DeviceID}, nil
}

// discardReply is the empty object the discard command answers with.
type discardReply struct{}

func (h handlers) discard(ctx context.Context, req commands.DiscardCredentialRequest) (discardReply, error) {
	if err := h.reg.DiscardPending(ctx, req.StatusID); err != nil {
		return discardReply{}, toFault(err)
	}
	return discardReply{}, nil
}

func (h handlers) ready(ctx context.Context, req commands.FactorRequest) (commands.FactorReply, error) {
	if err := h.reg.Ready(ctx, req.Sub, req.Method); err != nil {
		return commands.FactorReply{}, toFault(err)
	}
	return commands.FactorReply{}, nil
}

func (h handlers) check(ctx context.Context, req commands.FactorRequest) (commands.FactorReply, error) {
	res, err := h.reg.Authenticate(ctx, req.Sub, req.Method, req.Code, req.StatusID, req.Challenge)
	if result, ok := checkResult(err); ok {
		metrics.FactorChecks.WithLabelValues(methodLabel(req.Method), result).Inc()
	}
	if err != nil {
		return commands.FactorReply{}, toFault(err)
	}
	return commands.FactorReply{PHID: res.PHID, Remaining: res.Remaining, UserVerified: res.UserVerified}, nil
}

func oobReply(c device.OOBChallenge) commands.CreateCredentialReply {
	return commands.CreateCredentialReply{PendingCredential: c.Sealed, Destination: c.Masked, DeliveryID: c.DeliveryID, CodeExpiresAt: c.CodeExpiresAt}
}

func (h handlers) resend(ctx context.Context, req commands.ResendCredentialRequest) (commands.CreateCredentialReply, error) {
	c, err := h.reg.ResendPendingOOB(ctx, req.StatusID, req.Sub, req.PendingCredential)
	if err != nil {
		return commands.CreateCredentialReply{}, toFault(err)
	}
	return oobReply(c), nil
}

func (h handlers) contact(ctx context.Context, req commands.ContactRequest) (commands.ContactReply, error) {
	email, locale, err := h.reg.Contact(ctx, req.Sub)
	if errors.Is(err, device.ErrNoContact) {
		return commands.ContactReply{}, fault.New(fault.NotFound, "the user has no contact address")
	}
	if err != nil {
		return commands.ContactReply{}, toFault(err)
	}
	return commands.ContactReply{Email: email, Locale: locale}, nil
}

func (h handlers) challenge(ctx context.Context, req commands.ChallengeRequest) (commands.ChallengeReply, error) {
	if req.Method == method.WebAuthn {
		c, err := h.reg.ChallengeWebAuthn(ctx, req.Sub, req.StatusID)
		if err != nil {
			return commands.ChallengeReply{}, toFault(err)
		}
		return commands.ChallengeReply{Challenge: c.Sealed, PublicKey: c.Options}, nil
	}
	c, err := h.reg.Challenge(ctx, req.Sub, req.Method, req.PHID, req.StatusID, req.Locale)
	if err != nil {
		return commands.ChallengeReply{}, toFault(err)
	}
	return commands.ChallengeReply{PHID: c.PHID, Destination: c.Masked, DeliveryID: c.DeliveryID, CodeExpiresAt: c.CodeExpiresAt, Challenge: c.Sealed}, nil
}

// methodLabel bounds the method label to the known factors.
func methodLabel(m string) string {
	switch m {
	case method.TOTP, method.BackupCode, method.Push, method.Email, method.SMS, method.WebAuthn:
		return m
	}
	return "other"
}

// checkResult is the result label of a factor check: the outcomes a user causes; ok is false
// for other errors (an outage), which are not a check.
func checkResult(err error) (result string, ok bool) {
	switch {
	case err == nil:
		return "ok", true
	case errors.Is(err, factor.ErrLocked):
		return "locked", true
	case errors.Is(err, factor.ErrInvalidCode):
		return "invalid_code", true
	case errors.Is(err, factor.ErrInvalidCredential):
		return "invalid_credential", true
	case errors.Is(err, factor.ErrClonedAuthenticator):
		return "cloned_authenticator", true
	case errors.Is(err, factor.ErrMalformedCode):
		return "malformed", true
	case errors.Is(err, factor.ErrReplayed):
		return "code_replayed", true
	case errors.Is(err, factor.ErrNoFactor):
		return "no_factor", true
	}
	return "", false
}

func (h handlers) failure(ctx context.Context, req commands.FactorRequest) (commands.FactorReply, error) {
	err := h.reg.CountFailure(ctx, req.Sub)
	switch {
	case err == nil:
		metrics.FactorChecks.WithLabelValues(method.Push, "wrong_number").Inc()
	case errors.Is(err, factor.ErrLocked):
		metrics.FactorChecks.WithLabelValues(method.Push, "locked").Inc()
	}
	if err != nil {
		return commands.FactorReply{}, toFault(err)
	}
	return commands.FactorReply{}, nil
}

func (h handlers) deviceGet(ctx context.Context, req commands.DeviceRequest) (commands.DeviceInfo, error) {
	c, err := h.reg.Device(ctx, req.PHID)
	if err != nil {
		return commands.DeviceInfo{}, toFault(err)
	}
	return deviceInfo(c), nil
}

func (h handlers) pushDevices(ctx context.Context, req commands.DeviceRequest) (commands.PushDevicesReply, error) {
	cs, err := h.reg.PushDevices(ctx, req.Sub)
	if err != nil {
		return commands.PushDevicesReply{}, toFault(err)
	}
	out := commands.PushDevicesReply{Devices: []commands.DeviceInfo{}}
	for _, c := range cs {
		out.Devices = append(out.Devices, deviceInfo(c))
	}
	return out, nil
}

func (h handlers) deviceUsed(ctx context.Context, req commands.DeviceRequest) (discardReply, error) {
	if err := h.reg.MarkUsed(ctx, req.PHID, req.Sub); err != nil {
		return discardReply{}, toFault(err)
	}
	return discardReply{}, nil
}

func deviceInfo(c device.Credential) commands.DeviceInfo {
	d := commands.DeviceInfo{PHID: c.PHID, Sub: c.Sub}
	if c.PushKey != nil {
		d.Key = &commands.DeviceKey{Kty: "EC", Crv: "P-256", X: c.PushKey.X, Y: c.PushKey.Y}
	}
	return d
}

// toFault is the one place where domain errors become the codes callers see. Anything else
// stays as it is and so reaches the caller as "internal" (rpc.Endpoint logs it).
func toFault(err error) error {
	var (
		ie      *device.InvalidError
		locked  *factor.LockedError
		tooMany *device.TooManyError
	)
	switch {
	case errors.As(err, &tooMany):
		return &fault.Error{Code: fault.TooManyRequests, Message: "too many text messages (" + tooMany.Limit + " limit); nothing was sent", Until: tooMany.RetryAt.UTC()}
	case errors.Is(err, device.ErrMethodInactive):
		return fault.New(fault.MethodInactive, "this deployment cannot use this method now (codes: no mail server or SMS provider; passkeys: see MFA_WEBAUTHN_RP_ID)")
	case errors.Is(err, device.ErrAlreadyEnrolled):
		return fault.New(fault.AlreadyEnrolled, "this address is enrolled as a factor of the user already")
	case errors.Is(err, device.ErrRegionNotAllowed):
		return fault.New(fault.RegionNotAllowed, "text messages are not sent to this number's region")
	case errors.As(err, &locked):
		// The caller reads the lock's end from Until (rpc carries it in rpc.HeaderUntil).
		return &fault.Error{Code: fault.Locked, Message: "too many wrong codes: the user's code checks are locked", Until: locked.Until.UTC()}
	case errors.As(err, &ie):
		return fault.New(fault.BadRequest, ie.Reason)
	case errors.Is(err, device.ErrNotFound):
		return fault.New(fault.NotFound, "no such credential")
	case errors.Is(err, factor.ErrInvalidCode):
		return fault.New(fault.InvalidCode, "the verification code is not valid")
	case errors.Is(err, factor.ErrInvalidCredential):
		return fault.New(fault.InvalidCredential, "the passkey's response does not verify (origin, relying party, challenge or signature)")
	case errors.Is(err, factor.ErrClonedAuthenticator):
		return fault.New(fault.ClonedAuthenticator, "the passkey's signature counter went backwards: a copy of it may be in use")
	case errors.Is(err, factor.ErrMalformedCode):
		// Not invalid_code: a code that cannot be one is not counted, and the caller must
		// be able to tell (commands.RegistryFactorsCheck).
		return fault.New(fault.BadRequest, "the code cannot be a code of this method")
	case errors.Is(err, factor.ErrReplayed):
		return fault.New(fault.CodeReplayed, "the code was already used")
	case errors.Is(err, factor.ErrNoFactor):
		return fault.New(fault.NoFactor, "the user has no usable factor of this method")
	case errors.Is(err, device.ErrConflict):
		return fault.New(fault.Conflict, "the credential is in a conflicting state")
	case errors.Is(err, device.ErrStale):
		return fault.New(fault.Conflict, "the credential changed concurrently; try again")
	case errors.Is(err, device.ErrExpired):
		return fault.New(fault.Expired, "the pending credential has expired")
	case errors.Is(err, device.ErrInvalid):
		return fault.New(fault.BadRequest, "malformed request")
	case errors.Is(err, device.ErrStepUpRequired):
		return fault.New(fault.StepUpRequired, "no X-MFA-Token: "+fault.StepUpHint)
	}
	return err
}

// StatusStepUp redeems step-up proofs at the status service, which signs mfa_tokens and
// records which were spent (commands.StatusStepUpRedeem).
type StatusStepUp struct {
	NC *nats.Conn
	// Timeout bounds each call; 0 means 5 s.
	Timeout time.Duration
}

var _ device.StepUp = StatusStepUp{}

// Redeem implements device.StepUp. A refusal is the status service's step_up_required fault.
func (s StatusStepUp) Redeem(ctx context.Context, sub, token string) error {
	timeout := s.Timeout
	if timeout <= 0 {
		timeout = 5 * time.Second
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var reply commands.StepUpRedeemReply
	return rpc.Call(ctx, s.NC, commands.StatusStepUpRedeem, commands.StepUpRedeemRequest{Sub: sub, Token: token}, &reply)
}

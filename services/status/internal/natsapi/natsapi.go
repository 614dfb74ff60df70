// Package natsapi is the status service's NATS adapter: the "mfa-status" micro service that
// other services command, the client side of the device registry's commands (whose refusals it
// reads in fromRegistry only), and the live fan-out of changes (Live).
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
	"github.com/mfaflow/mfaflow/pkg/rpc"
	"github.com/mfaflow/mfaflow/services/status/internal/enrollment"
	"github.com/mfaflow/mfaflow/services/status/internal/faults"
	"github.com/mfaflow/mfaflow/services/status/internal/mfatoken"
	"github.com/mfaflow/mfaflow/services/status/internal/signin"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"
)

// Version is reported in $SRV.INFO.
const Version = "0.1.0"

// StepUp is what the step-up endpoint needs: the signer whose mfa_tokens it accepts, and how
// old their sign-in may be (MFA_STEP_UP_MAX_AGE; 0 means DefaultStepUpMaxAge).
type StepUp struct {
	Tokens *mfatoken.Signer
	MaxAge time.Duration
}

// DefaultStepUpMaxAge is MFA_STEP_UP_MAX_AGE's default.
const DefaultStepUpMaxAge = 5 * time.Minute

// redeem spends the mfa_token of r as the step-up proof of a change to r.Sub's factors.
func (st StepUp) redeem(ctx context.Context, svc *signin.Service, r commands.StepUpRedeemRequest) (commands.StepUpRedeemReply, error) {
	if r.Token == "" {
		return commands.StepUpRedeemReply{}, fault.New(fault.StepUpRequired, stepUpHelp("no X-MFA-Token"))
	}
	v, err := st.Tokens.Verify(r.Token)
	if err != nil {
		return commands.StepUpRedeemReply{}, fault.New(fault.StepUpRequired, stepUpHelp("the X-MFA-Token is not a valid, unexpired mfa_token"))
	}
	if v.Sub != r.Sub {
		return commands.StepUpRedeemReply{}, fault.New(fault.StepUpRequired, stepUpHelp("the X-MFA-Token is another user's"))
	}
	maxAge := st.MaxAge
	if maxAge <= 0 {
		maxAge = DefaultStepUpMaxAge
	}
	// The token's auth_time is whole seconds; the stored one is exact. Compare the stored one.
	if err := svc.RedeemStepUp(ctx, v.StatusID, r.Sub, svc.Time().Add(-maxAge)); err != nil {
		return commands.StepUpRedeemReply{}, toFault(err)
	}
	return commands.StepUpRedeemReply{StatusID: v.StatusID}, nil
}

// stepUpHelp says why a step-up proof was refused and how to get one.
func stepUpHelp(why string) string {
	return why + ": " + fault.StepUpHint
}

// Serve registers the status micro service on nc: the enrollment commands on svc, the push and
// step-up commands on signIns. Handlers run with ctx; opts (limits, the group that tracks
// commands in flight) apply to every endpoint, each with its own bound.
func Serve(ctx context.Context, nc *nats.Conn, svc *enrollment.Service, signIns *signin.Service, stepUp StepUp, log *slog.Logger, opts ...rpc.Option) (micro.Service, error) {
	ms, err := micro.AddService(nc, micro.Config{
		Name:        commands.StatusService,
		Version:     Version,
		Description: "mfaflow enrollment state machine",
	})
	if err != nil {
		return nil, fmt.Errorf("add micro service: %w", err)
	}
	g := ms.AddGroup(commands.StatusGroup)
	add := func(name, subject string, h micro.Handler) {
		if err == nil {
			// Group endpoints' subjects are relative to the group's prefix.
			err = g.AddEndpoint(name, h, micro.WithEndpointSubject(strings.TrimPrefix(subject, commands.StatusGroup+".")))
		}
	}
	add("create", commands.StatusCreate, rpc.Endpoint(ctx, log, func(ctx context.Context, r commands.CreateEnrollmentRequest) (commands.EnrollmentReply, error) {
		e, err := svc.Create(ctx, enrollment.NewEnrollment{ID: r.StatusID, ExchangeID: r.ExchangeID, Sub: r.Sub, Method: r.Method, ExpiresAt: r.ExpiresAt,
			PendingCredential: r.PendingCredential,
			Sent:              factor.Sent{Destination: r.Destination, DeliveryID: r.DeliveryID, CodeExpiresAt: r.CodeExpiresAt}})
		return toReply(e), toFault(err)
	}, opts...))
	add("delivery", commands.StatusDelivery, rpc.Endpoint(ctx, log, func(ctx context.Context, r commands.DeliveryReport) (struct{}, error) {
		return struct{}{}, toFault(setDelivery(ctx, svc, signIns, r))
	}, opts...))
	add("keyed-ids", commands.StatusKeyedIDs, rpc.Endpoint(ctx, log, func(ctx context.Context, r commands.KeyedIDsRequest) (commands.KeyedIDsReply, error) {
		id, exchangeID, err := svc.KeyedIDs(r.Sub, r.Key)
		if err != nil {
			return commands.KeyedIDsReply{}, toFault(err)
		}
		reply := commands.KeyedIDsReply{StatusID: id, ExchangeID: exchangeID}
		e, ok, err := svc.Keyed(ctx, id, enrollment.Caller{Sub: r.Sub})
		if ok {
			existing := toReply(e)
			reply.Existing = &existing
		}
		return reply, toFault(err)
	}, opts...))
	add("scan", commands.StatusScan, rpc.Endpoint(ctx, log, func(ctx context.Context, r commands.ScanRequest) (commands.EnrollmentReply, error) {
		e, err := svc.Scan(ctx, r.ExchangeID, toDevice(r.Device))
		return toReply(e), toFault(err)
	}, opts...))
	add("enroll", commands.StatusEnroll, rpc.Endpoint(ctx, log, func(ctx context.Context, r commands.EnrollRequest) (commands.EnrollmentReply, error) {
		e, err := svc.Enroll(ctx, enrollment.EnrollInput{ExchangeID: r.ExchangeID, Code: r.Code, Device: toDevice(r.Device), Channel: enrollment.ChannelCompanion})
		return toReply(e), toFault(err)
	}, opts...))
	add("push-pending", commands.StatusPushPending, rpc.Endpoint(ctx, log, func(ctx context.Context, r commands.PushPendingRequest) (commands.PushPendingReply, error) {
		cs, err := signIns.PendingChallenges(ctx, r.PHID, r.Sub)
		return commands.PushPendingReply{Challenges: toCommandChallenges(cs)}, toFault(err)
	}, opts...))
	add("push-ack", commands.StatusPushAck, rpc.Endpoint(ctx, log, func(ctx context.Context, r commands.PushAckRequest) (commands.EnrollmentReply, error) {
		a, err := signIns.AcknowledgePush(ctx, r.ChallengeID, r.PHID, r.Sub)
		return toSignInReply(a), toFault(err)
	}, opts...))
	add("push-respond", commands.StatusPushRespond, rpc.Endpoint(ctx, log, func(ctx context.Context, r commands.PushRespondRequest) (commands.EnrollmentReply, error) {
		a, err := signIns.RespondPush(ctx, signin.PushResponse{
			ChallengeID: r.ChallengeID, PHID: r.PHID, Sub: r.Sub, Decision: r.Decision, Number: r.Number, Reason: r.Reason,
		})
		return toSignInReply(a), toFault(err)
	}, opts...))
	add("step-up-redeem", commands.StatusStepUpRedeem, rpc.Endpoint(ctx, log, func(ctx context.Context, r commands.StepUpRedeemRequest) (commands.StepUpRedeemReply, error) {
		return stepUp.redeem(ctx, signIns, r)
	}, opts...))
	if err == nil {
		// Make sure the server has the subscriptions before anyone is told we are up.
		err = nc.Flush()
	}
	if err != nil {
		_ = ms.Stop()
		return nil, fmt.Errorf("add endpoint: %w", err)
	}
	return ms, nil
}

// setDelivery records a delivery report on the sign-in or enrollment it names: the report does
// not say which, and a sign-in is the likelier.
func setDelivery(ctx context.Context, svc *enrollment.Service, signIns *signin.Service, r commands.DeliveryReport) error {
	if r.State != factor.DeliverySent && r.State != factor.DeliveryFailed {
		return fault.New(fault.BadRequest, "state must be sent or failed")
	}
	err := signIns.SetDelivery(ctx, r.StatusID, r.DeliveryID, r.State)
	if errors.Is(err, signin.ErrNotFound) {
		err = svc.SetDelivery(ctx, r.StatusID, r.DeliveryID, r.State)
	}
	return err
}

// toReply converts an enrollment to the status object of command replies and live
// announcements (the HTTP adapter builds its own, from the domain).
func toReply(e enrollment.Enrollment) commands.EnrollmentReply {
	r := commands.EnrollmentReply{
		Status: string(e.State), ID: e.ID, Sub: e.Sub, Method: e.Method,
		ExpiresAt: e.ExpiresAt, UpdatedAt: e.UpdatedAt, Seq: e.Seq,
		Destination: e.Sent.Destination, Delivery: e.Sent.Delivery,
	}
	if e.State == enrollment.Enrolled {
		r.DeviceID, r.PHID = e.DeviceID, e.PHID
	}
	return r
}

// toSignInReply converts a sign-in to the same status object: ph_id of the device that
// answered (AUTHENTICATED, DENIED).
func toSignInReply(a signin.Authentication) commands.EnrollmentReply {
	r := commands.EnrollmentReply{
		Status: string(a.State), ID: a.ID, Sub: a.Sub, Method: a.Method,
		ExpiresAt: a.ExpiresAt, UpdatedAt: a.UpdatedAt, Seq: a.Seq,
		Destination: a.Sent.Destination, Delivery: a.Sent.Delivery,
	}
	if a.State == signin.Authenticated || a.State == signin.Denied {
		r.PHID = a.PHID
	}
	return r
}

// toFault is faults.Of: the status domain's errors read the same over NATS as over HTTP.
func toFault(err error) error { return faults.Of(err) }

// Registry is the device registry reached over NATS.
type Registry struct {
	NC      *nats.Conn
	Timeout time.Duration
}

var _ enrollment.Registry = (*Registry)(nil)

// Verify implements enrollment.Registry.
func (r *Registry) Verify(ctx context.Context, statusID, sub, code string, dev enrollment.Device, pending []byte) (enrollment.Claim, error) {
	ctx, cancel := context.WithTimeout(ctx, r.timeout())
	defer cancel()
	var reply commands.CredentialClaim
	err := rpc.Call(ctx, r.NC, commands.RegistryVerifyCredential, commands.VerifyCredentialRequest{
		StatusID: statusID, Sub: sub, Code: code, Device: fromDevice(dev), PendingCredential: pending,
	}, &reply)
	if err != nil {
		return enrollment.Claim{}, fromRegistry(commands.RegistryVerifyCredential, err)
	}
	return enrollment.Claim{PHID: reply.PHID, DeviceID: reply.DeviceID}, nil
}

// fromRegistry turns the registry's refusals (fault codes, events/commands) into the domain's
// errors: the one place the status service reads them. What it does not translate (unavailable,
// a bad_request whose words are for the client) passes on as the *fault.Error it is, and toFault
// passes that through.
func fromRegistry(subject string, err error) error {
	var fe *fault.Error
	if !errors.As(err, &fe) {
		return err
	}
	switch fe.Code {
	case fault.InvalidCode:
		return factor.ErrInvalidCode
	case fault.InvalidCredential:
		return factor.ErrInvalidCredential
	case fault.ClonedAuthenticator:
		return factor.ErrClonedAuthenticator
	case fault.CodeReplayed:
		return factor.ErrReplayed
	case fault.Locked:
		return &factor.LockedError{Until: fe.Until}
	case fault.NoFactor:
		return factor.ErrNoFactor
	case fault.Expired:
		return enrollment.ErrExpired
	case fault.BadRequest:
		if subject == commands.RegistryFactorsCheck {
			// The code cannot be a code of the method; not counted.
			return factor.ErrMalformedCode
		}
	case fault.NotFound:
		if subject == commands.RegistryVerifyCredential {
			// The registry has no credential for this enrollment and never will: voided by a
			// reset, sealed under a retired key, or discarded after the enrollment ended elsewhere.
			return enrollment.ErrCredentialVoid
		}
	case fault.Conflict:
		if subject == commands.RegistryVerifyCredential {
			return fmt.Errorf("%w: the credential is claimed by another device", enrollment.ErrConflict)
		}
	}
	return err
}

// Activate implements enrollment.Registry.
func (r *Registry) Activate(ctx context.Context, statusID, sub string, claim enrollment.Claim) error {
	ctx, cancel := context.WithTimeout(ctx, r.timeout())
	defer cancel()
	return rpc.Call(ctx, r.NC, commands.RegistryActivateCredential, commands.ActivateCredentialRequest{
		StatusID: statusID, Sub: sub, PHID: claim.PHID, DeviceID: claim.DeviceID,
	}, nil)
}

// Discard implements enrollment.Registry.
func (r *Registry) Discard(ctx context.Context, statusID string) error {
	ctx, cancel := context.WithTimeout(ctx, r.timeout())
	defer cancel()
	return rpc.Call(ctx, r.NC, commands.RegistryDiscardCredential, commands.DiscardCredentialRequest{StatusID: statusID}, nil)
}

var (
	_ signin.Authenticator       = (*Registry)(nil)
	_ signin.Assertions          = (*Registry)(nil)
	_ enrollment.PasskeyRegistry = (*Registry)(nil)
)

// VerifyPasskey implements enrollment.PasskeyRegistry.
func (r *Registry) VerifyPasskey(ctx context.Context, statusID, sub string, credential, pending []byte) (enrollment.Claim, error) {
	ctx, cancel := context.WithTimeout(ctx, r.timeout())
	defer cancel()
	var reply commands.CredentialClaim
	err := rpc.Call(ctx, r.NC, commands.RegistryVerifyCredential, commands.VerifyCredentialRequest{
		StatusID: statusID, Sub: sub, Credential: credential, PendingCredential: pending,
	}, &reply)
	if err != nil {
		return enrollment.Claim{}, fromRegistry(commands.RegistryVerifyCredential, err)
	}
	return enrollment.Claim{PHID: reply.PHID, DeviceID: reply.DeviceID}, nil
}

// BeginAssertion implements signin.Assertions.
func (r *Registry) BeginAssertion(ctx context.Context, sub, statusID string) ([]byte, []byte, error) {
	ctx, cancel := context.WithTimeout(ctx, r.timeout())
	defer cancel()
	var reply commands.ChallengeReply
	if err := rpc.Call(ctx, r.NC, commands.RegistryFactorsChallenge, commands.ChallengeRequest{
		Sub: sub, Method: method.WebAuthn, StatusID: statusID,
	}, &reply); err != nil {
		return nil, nil, fromRegistry(commands.RegistryFactorsChallenge, err)
	}
	return reply.PublicKey, reply.Challenge, nil
}

// CheckAssertion implements signin.Assertions.
func (r *Registry) CheckAssertion(ctx context.Context, sub, statusID string, assertion, challenge []byte) (string, bool, error) {
	reply, err := r.factor(ctx, commands.RegistryFactorsCheck, commands.FactorRequest{
		Sub: sub, Method: method.WebAuthn, Code: string(assertion), StatusID: statusID, Challenge: challenge,
	})
	return reply.PHID, reply.UserVerified, err
}

// Ready implements signin.Authenticator.
func (r *Registry) Ready(ctx context.Context, sub, method string) error {
	_, err := r.factor(ctx, commands.RegistryFactorsReady, commands.FactorRequest{Sub: sub, Method: method})
	return err
}

// CheckCode implements signin.Authenticator.
func (r *Registry) CheckCode(ctx context.Context, sub, method, code, statusID string, challenge []byte) (string, error) {
	reply, err := r.factor(ctx, commands.RegistryFactorsCheck, commands.FactorRequest{Sub: sub, Method: method, Code: code, StatusID: statusID, Challenge: challenge})
	return reply.PHID, err
}

// Challenge implements signin.Authenticator.
func (r *Registry) Challenge(ctx context.Context, sub, method, phid, statusID, locale string) (factor.Sent, []byte, error) {
	ctx, cancel := context.WithTimeout(ctx, r.timeout())
	defer cancel()
	var reply commands.ChallengeReply
	if err := rpc.Call(ctx, r.NC, commands.RegistryFactorsChallenge, commands.ChallengeRequest{
		Sub: sub, Method: method, PHID: phid, StatusID: statusID, Locale: locale,
	}, &reply); err != nil {
		return factor.Sent{}, nil, fromRegistry(commands.RegistryFactorsChallenge, err)
	}
	return factor.Sent{PHID: reply.PHID, Destination: reply.Destination, DeliveryID: reply.DeliveryID, CodeExpiresAt: reply.CodeExpiresAt},
		reply.Challenge, nil
}

// Resend implements enrollment.Registry.
func (r *Registry) Resend(ctx context.Context, statusID, sub string, pending []byte) (factor.Sent, []byte, error) {
	ctx, cancel := context.WithTimeout(ctx, r.timeout())
	defer cancel()
	var reply commands.CreateCredentialReply
	if err := rpc.Call(ctx, r.NC, commands.RegistryResendCredential, commands.ResendCredentialRequest{
		StatusID: statusID, Sub: sub, PendingCredential: pending,
	}, &reply); err != nil {
		return factor.Sent{}, nil, fromRegistry(commands.RegistryResendCredential, err)
	}
	return factor.Sent{Destination: reply.Destination, DeliveryID: reply.DeliveryID, CodeExpiresAt: reply.CodeExpiresAt},
		reply.PendingCredential, nil
}

// factor calls a factors endpoint; refusals become the domain's errors.
func (r *Registry) factor(ctx context.Context, subject string, req commands.FactorRequest) (commands.FactorReply, error) {
	ctx, cancel := context.WithTimeout(ctx, r.timeout())
	defer cancel()
	var reply commands.FactorReply
	if err := rpc.Call(ctx, r.NC, subject, req, &reply); err != nil {
		return commands.FactorReply{}, fromRegistry(subject, err)
	}
	return reply, nil
}

func (r *Registry) timeout() time.Duration {
	if r.Timeout > 0 {
		return r.Timeout
	}
	return 5 * time.Second
}

func toDevice(d commands.Device) enrollment.Device {
	out := enrollment.Device{DeviceID: d.DeviceID, Name: d.Name, Platform: d.Platform}
	if d.Key != nil {
		out.Key = &enrollment.DeviceKey{Kty: d.Key.Kty, Crv: d.Key.Crv, X: d.Key.X, Y: d.Key.Y}
	}
	return out
}

func fromDevice(d enrollment.Device) commands.Device {
	out := commands.Device{DeviceID: d.DeviceID, Name: d.Name, Platform: d.Platform}
	if d.Key != nil {
		out.Key = &commands.DeviceKey{Kty: d.Key.Kty, Crv: d.Key.Crv, X: d.Key.X, Y: d.Key.Y}
	}
	return out
}

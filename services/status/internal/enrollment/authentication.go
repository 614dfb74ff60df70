package enrollment

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/google/uuid"
	"github.com/mfaflow/mfaflow/events"
	"github.com/mfaflow/mfaflow/pkg/factor"
	"github.com/mfaflow/mfaflow/pkg/outbox"
)

// Authenticator is the device registry as sign-in needs it: it alone holds the secrets, checks
// codes and keeps each user's lockout.
type Authenticator interface {
	// Ready reports whether sub can be asked for a code of method now: a *factor.LockedError while
	// locked, factor.ErrNoFactor without a usable factor.
	Ready(ctx context.Context, sub, method string) error
	// CheckCode checks a sign-in code and returns the device that matched (TOTP). Refusals are
	// factor.ErrInvalidCode (counted towards the lockout), factor.ErrReplayed,
	// factor.ErrMalformedCode, a *factor.LockedError or factor.ErrNoFactor.
	CheckCode(ctx context.Context, sub, method, code, statusID string) (phid string, err error)
}

// NewAuthentication is what the caller of StartAuthentication knows.
type NewAuthentication struct {
	ID, ExchangeID string
	// Sub is the user to authenticate; Initiator the subject of the token that asked (the user
	// itself, or a service acting for the user).
	Sub, Initiator string
	// Method is MethodTOTP or MethodBackupCode.
	Method string
	// ClientID is the relying app (the mfa_token audience); empty means the initiator.
	ClientID string
	// Service says the initiator is a service token (scope mfa:verify) acting for Sub.
	Service bool
	// Context is what the relying app says about the sign-in; the caller bounds its size.
	Context map[string]string
	TTL     time.Duration
	// Keyed says ID and ExchangeID are KeyedIDs of an Idempotency-Key: an authentication
	// already stored under ID is the answer, whatever its state.
	Keyed bool
}

// caller is the initiator as a Caller: who the authentication will be visible to.
func (in NewAuthentication) caller() Caller {
	return Caller{Sub: in.Initiator, ClientID: in.ClientID, Service: in.Service}
}

// StartAuthentication opens an authentication of sub (INITIATED) with its
// mfa.verification.initiated event, once the registry says the user has a usable factor of the
// method and is not locked.
func (s *Service) StartAuthentication(ctx context.Context, in NewAuthentication) (Enrollment, error) {
	if in.ID == "" || in.ExchangeID == "" || in.Sub == "" || in.Initiator == "" {
		return Enrollment{}, fmt.Errorf("%w: id, exchange id, sub and initiator are required", ErrBadRequest)
	}
	if in.Keyed {
		// A retry: the first attempt's authentication is the answer, and neither the factor
		// check nor a second push happens again.
		if e, ok, err := s.Keyed(ctx, in.ID, in.caller(), KindAuthentication); err != nil || ok {
			return e, err
		}
	}
	if in.Method == MethodPush {
		return s.StartPush(ctx, in)
	}
	if in.Method != MethodTOTP && in.Method != MethodBackupCode {
		return Enrollment{}, fmt.Errorf("%w: unsupported method %q", ErrBadRequest, in.Method)
	}
	if in.TTL <= 0 {
		return Enrollment{}, fmt.Errorf("%w: the authentication needs a lifetime", ErrBadRequest)
	}
	if s.Authenticator == nil {
		return Enrollment{}, errors.New("status: no authenticator configured")
	}
	if err := s.Authenticator.Ready(ctx, in.Sub, in.Method); err != nil {
		return Enrollment{}, err
	}
	if in.ClientID == "" {
		in.ClientID = in.Initiator
	}
	now := s.now()
	e := Enrollment{
		ID: in.ID, ExchangeID: in.ExchangeID, Sub: in.Sub, Method: in.Method, Kind: KindAuthentication,
		State: Initiated, CreatedAt: now, UpdatedAt: now, ExpiresAt: now.Add(in.TTL), Seq: 1,
		Initiator: in.Initiator, ClientID: in.ClientID, Context: in.Context,
	}
	msg, err := s.event(e, "", &change{})
	if err != nil {
		return Enrollment{}, err
	}
	created, err := s.Store.Create(ctx, e, msg)
	if err != nil {
		return s.keyedRace(ctx, in, err)
	}
	s.changed(created)
	s.entered(created, "")
	return created, nil
}

// keyedRace answers a keyed authentication whose create lost to a concurrent attempt with the
// same Idempotency-Key with that attempt's authentication; any other error stays.
func (s *Service) keyedRace(ctx context.Context, in NewAuthentication, err error) (Enrollment, error) {
	if in.Keyed && errors.Is(err, ErrConflict) {
		if e, ok, kerr := s.Keyed(ctx, in.ID, in.caller(), KindAuthentication); kerr == nil && ok {
			return e, nil
		}
	}
	return Enrollment{}, err
}

// VerifyAuthentication finishes the authentication with exchange id exchangeID with a code:
// INITIATED → AUTHENTICATED when the registry accepts it. caller is the subject of the token
// that sends it: the authentication's user or its initiator, anyone else gets ErrNotFound. A
// refused code leaves the authentication open (it may be retried until it expires or the user is
// locked) and is recorded with mfa.verification.failed; the error says why.
func (s *Service) VerifyAuthentication(ctx context.Context, exchangeID, method string, caller Caller, code string) (Enrollment, error) {
	if exchangeID == "" {
		return Enrollment{}, fmt.Errorf("%w: exchange_id is required", ErrBadRequest)
	}
	if s.Authenticator == nil {
		return Enrollment{}, errors.New("status: no authenticator configured")
	}
	e, err := s.Store.GetByExchangeID(ctx, exchangeID)
	if err != nil {
		return Enrollment{}, err
	}
	if e.Kind != KindAuthentication || !e.VisibleTo(caller) {
		return Enrollment{}, ErrNotFound
	}
	if e.Method != method {
		return Enrollment{}, fmt.Errorf("%w: this authentication is for method %s", ErrConflict, e.Method)
	}
	if e.Method == MethodPush {
		return Enrollment{}, fmt.Errorf("%w: a push sign-in is answered on the device, not with a code", ErrConflict)
	}
	e, err = s.apply(ctx, e, func(e Enrollment) (Enrollment, *change, error) {
		switch e.State {
		case Initiated:
			return e, nil, nil
		case Expired:
			return e, nil, ErrExpired
		default:
			return e, nil, fmt.Errorf("%w: authentication is %s", ErrConflict, e.State)
		}
	})
	if err != nil {
		return e, err
	}
	phid, err := s.Authenticator.CheckCode(ctx, e.Sub, e.Method, code, e.ID)
	switch {
	case errors.Is(err, factor.ErrInvalidCode):
		return s.refuse(ctx, e, "invalid_code", err)
	case errors.Is(err, factor.ErrReplayed):
		return s.refuse(ctx, e, "code_replayed", err)
	case err != nil:
		return e, err
	}
	return s.apply(ctx, e, func(e Enrollment) (Enrollment, *change, error) {
		switch {
		case e.State == Expired:
			return e, nil, ErrExpired
		case e.State.Terminal():
			// A cancel won the race; the code is spent, the authentication is not.
			return e, nil, fmt.Errorf("%w: authentication became %s", ErrConflict, e.State)
		}
		e.State, e.PHID, e.AuthTime = Authenticated, phid, s.now()
		return e, &change{}, nil
	})
}

// RedeemStepUp spends the mfa_token of authentication statusID as the step-up proof of a factor
// change of sub: the authentication must be sub's, AUTHENTICATED at or after notBefore, and its
// token not spent before. The mark is a compare-and-set on the authentication, so of two
// concurrent redemptions of one token exactly one succeeds. Every refusal is ErrStepUpRequired.
func (s *Service) RedeemStepUp(ctx context.Context, statusID, sub string, notBefore time.Time) error {
	e, err := s.Store.Get(ctx, statusID)
	if errors.Is(err, ErrNotFound) {
		return fmt.Errorf("%w: the mfa_token names no sign-in", ErrStepUpRequired)
	}
	if err != nil {
		return err
	}
	if e.Kind != KindAuthentication || e.Sub != sub || e.State != Authenticated {
		return fmt.Errorf("%w: the mfa_token is not one of this user's sign-ins", ErrStepUpRequired)
	}
	if e.AuthTime.Before(notBefore) {
		return fmt.Errorf("%w: the mfa_token's sign-in is too old; sign in again", ErrStepUpRequired)
	}
	_, err = s.apply(ctx, e, func(e Enrollment) (Enrollment, *change, error) {
		if !e.StepUpUsedAt.IsZero() {
			return e, nil, fmt.Errorf("%w: the mfa_token was used already; sign in again", ErrStepUpRequired)
		}
		e.StepUpUsedAt = s.now()
		return e, &change{silent: true}, nil
	})
	return err
}

// refuse records a refused code on an open authentication and returns cause.
func (s *Service) refuse(ctx context.Context, e Enrollment, reason string, cause error) (Enrollment, error) {
	e, err := s.apply(ctx, e, func(e Enrollment) (Enrollment, *change, error) {
		if e.State.Terminal() {
			return e, nil, fmt.Errorf("%w: authentication is %s", ErrConflict, e.State)
		}
		e.FailedAttempts++
		return e, &change{refused: true, reason: reason}, nil
	})
	if err != nil {
		return e, err
	}
	return e, cause
}

var verificationEvents = map[State]events.Type{
	Initiated:     events.VerificationInitiated,
	Authenticated: events.VerificationSucceeded,
	Expired:       events.VerificationExpired,
	Cancelled:     events.VerificationCancelled,
	Denied:        events.VerificationDenied,
}

// verificationEvent builds the mfa.verification.* event of an authentication's write.
func verificationEvent(e Enrollment, prev State, ch *change) (outbox.Message, error) {
	if e.State == PushAcknowledged && !ch.refused {
		return pushEvent(events.PushAcknowledged, e, e.PHID, 0)
	}
	typ, ok := verificationEvents[e.State]
	data := events.Verification{
		StatusID: e.ID, Sub: e.Sub, Method: e.Method, Status: string(e.State),
		PreviousStatus: string(prev), ExpiresAt: e.ExpiresAt, ClientID: e.ClientID, Context: e.Context,
	}
	seed := e.ID + "/" + string(typ)
	switch {
	case ch.refused:
		typ, ok = events.VerificationFailed, true
		data.PreviousStatus, data.Reason, data.FailedAttempts = "", ch.reason, e.FailedAttempts
		seed = e.ID + "/" + string(typ) + "/" + strconv.Itoa(e.FailedAttempts)
	case e.State == Initiated:
		data.PreviousStatus = ""
	case e.State == Authenticated:
		data.PHID = e.PHID
	case e.State == Denied:
		data.PHID, data.Reason = e.PHID, ch.reason
	}
	if !ok {
		return outbox.Message{}, fmt.Errorf("no verification event for state %s", e.State)
	}
	env, err := events.New(uuid.NewSHA1(eventNamespace, []byte(seed)).String(), events.SourceStatus, typ, e.ID, e.UpdatedAt, data)
	if err != nil {
		return outbox.Message{}, err
	}
	return outbox.FromEnvelope(env)
}

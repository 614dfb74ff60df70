package signin

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"math/big"
	"slices"
	"time"

	"github.com/google/uuid"
	"github.com/mfaflow/mfaflow/events"
	"github.com/mfaflow/mfaflow/events/method"
	"github.com/mfaflow/mfaflow/pkg/factor"
	"github.com/mfaflow/mfaflow/pkg/outbox"
)

// Push sign-in: number matching over the companion's bridge session (see the package doc for
// its states).

// Push decisions, as the device sends them.
const (
	DecisionApprove = "approve"
	DecisionDeny    = "deny"
)

// PushWindow is the window of the per-user push limit.
const PushWindow = 10 * time.Minute

// DefaultMaxPushes is the per-user push limit in PushWindow when none is configured.
const DefaultMaxPushes = 5

// Challenge is a push challenge as devices get it: the three candidates, never which is right.
type Challenge struct {
	ChallengeID string
	StatusID    string
	Sub         string
	Numbers     []string
	Context     map[string]string
	ExpiresAt   time.Time
}

// PushDirectory is the registry as push needs it.
type PushDirectory interface {
	// PushDevices returns the ph_ids of sub's push-capable devices.
	PushDevices(ctx context.Context, sub string) ([]string, error)
	// DeviceOf reports whether phid is a registered push device of sub.
	DeviceOf(ctx context.Context, phid, sub string) (bool, error)
	// CountFailure counts a wrong push number like a wrong code (a *factor.LockedError if it locks).
	CountFailure(ctx context.Context, sub string) error
	// MarkUsed records that device phid approved a sign-in (its last_used_at).
	MarkUsed(ctx context.Context, phid, sub string) error
}

// PushSender delivers a challenge to devices; it works in the background (devices that are not
// connected get it when they log in, or through the wake-up hook).
type PushSender interface {
	Send(c Challenge, phids []string)
}

// PushLedger keeps, per user, the recent pushes (for the rate limit) and the one pending push.
type PushLedger interface {
	// Reserve records a new push id for sub at now if fewer than max were recorded since
	// now-window (ErrTooManyPushes otherwise, with the time the oldest leaves the window) and
	// returns the previous pending push id, if any.
	Reserve(ctx context.Context, sub, id string, now time.Time, max int, window time.Duration) (previous string, err error)
	// Pending returns sub's pending push id ("" if none).
	Pending(ctx context.Context, sub string) (string, error)
}

// TooManyPushesError says when the next push is allowed.
type TooManyPushesError struct{ RetryAt time.Time }

func (e *TooManyPushesError) Error() string { return "too many push sign-ins" }

// Is makes it match ErrTooManyPushes.
func (e *TooManyPushesError) Is(target error) bool { return target == ErrTooManyPushes }

func (s *Service) maxPushes() int {
	if s.MaxPushes > 0 {
		return s.MaxPushes
	}
	return DefaultMaxPushes
}

// StartPush opens a push sign-in of sub: it draws the number the frontend shows and two
// other candidates, replaces the user's pending push (at most one at a time), writes the
// INITIATED sign-in with mfa.verification.initiated and mfa.push.sent, and hands the
// challenge to the sender for every push-capable device of the user.
func (s *Service) StartPush(ctx context.Context, in NewAuthentication) (Authentication, error) {
	if in.ID == "" || in.ExchangeID == "" || in.Sub == "" || in.Initiator == "" || in.TTL <= 0 {
		return Authentication{}, fmt.Errorf("%w: id, exchange id, sub, initiator and a lifetime are required", ErrBadRequest)
	}
	if s.Authenticator == nil || s.Push == nil || s.PushLedger == nil || s.PushSender == nil {
		return Authentication{}, errors.New("status: push is not configured")
	}
	if err := s.Authenticator.Ready(ctx, in.Sub, method.Push); err != nil {
		return Authentication{}, err
	}
	phids, err := s.Push.PushDevices(ctx, in.Sub)
	if err != nil {
		return Authentication{}, err
	}
	if len(phids) == 0 {
		return Authentication{}, factor.ErrNoFactor
	}
	number, candidates, err := drawNumbers()
	if err != nil {
		return Authentication{}, err
	}
	now := s.now()
	previous, err := s.PushLedger.Reserve(ctx, in.Sub, in.ID, now, s.maxPushes(), PushWindow)
	if err != nil {
		return Authentication{}, err
	}
	if in.ClientID == "" {
		in.ClientID = in.Initiator
	}
	e := Authentication{
		ID: in.ID, ExchangeID: in.ExchangeID, Sub: in.Sub, Method: method.Push,
		State: Initiated, CreatedAt: now, UpdatedAt: now, ExpiresAt: now.Add(in.TTL), Seq: 1,
		Initiator: in.Initiator, ClientID: in.ClientID, Context: in.Context,
		Number: number, Candidates: candidates,
	}
	initiated, err := event(e, "", &change{})
	if err != nil {
		return Authentication{}, err
	}
	sent, err := pushEvent(events.PushSent, e, "", len(phids))
	if err != nil {
		return Authentication{}, err
	}
	created, err := s.Store.Create(ctx, e, initiated, sent)
	if err != nil {
		return s.keyedRace(ctx, in, err)
	}
	s.changed(created)
	s.entered(created, "")
	if previous != "" && previous != created.ID {
		s.cancelReplaced(ctx, previous)
	}
	s.PushSender.Send(challengeOf(created), phids)
	return created, nil
}

// cancelReplaced ends the user's previous pending push: a new push replaces it, so an old
// prompt still on a phone cannot be approved by mistake (MFA fatigue).
func (s *Service) cancelReplaced(ctx context.Context, id string) {
	old, err := s.Store.Get(ctx, id)
	if err != nil {
		return
	}
	_, _ = s.apply(ctx, old, func(e Authentication) (Authentication, *change, error) {
		if e.State.Terminal() {
			return e, nil, nil
		}
		e.State = Cancelled
		return e, &change{reason: "replaced"}, nil
	})
}

// PendingChallenges returns the open push challenge of sub for its device phid (at most one:
// a new push replaces the old), for a device that just logged in.
func (s *Service) PendingChallenges(ctx context.Context, phid, sub string) ([]Challenge, error) {
	if s.PushLedger == nil || s.Push == nil {
		return nil, nil
	}
	ok, err := s.Push.DeviceOf(ctx, phid, sub)
	if err != nil || !ok {
		return nil, err
	}
	id, err := s.PushLedger.Pending(ctx, sub)
	if err != nil || id == "" {
		return nil, err
	}
	e, err := s.Store.Get(ctx, id)
	if errors.Is(err, ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	if e.Sub != sub || e.Method != method.Push || e.State.Terminal() || e.DueToExpire(s.now()) {
		return nil, nil
	}
	return []Challenge{challengeOf(e)}, nil
}

// AcknowledgePush records that challenge challengeID reached device phid of sub:
// INITIATED → PUSH_ACKNOWLEDGED, with mfa.push.acknowledged. Later acknowledgements change
// nothing.
func (s *Service) AcknowledgePush(ctx context.Context, challengeID, phid, sub string) (Authentication, error) {
	e, err := s.pushByChallenge(ctx, challengeID, sub)
	if err != nil {
		return Authentication{}, err
	}
	return s.apply(ctx, e, func(e Authentication) (Authentication, *change, error) {
		if e.State != Initiated {
			return e, nil, nil
		}
		e.State, e.PHID = PushAcknowledged, phid
		return e, &change{}, nil
	})
}

// PushResponse is a device's answer, its signature already checked by the bridge.
type PushResponse struct {
	ChallengeID, PHID, Sub, Decision, Number, Reason string
}

// RespondPush applies a device's answer: approve with the right number → ALLOWED →
// AUTHENTICATED; deny → DENIED (reason "not_me" when the user says so); approve with a wrong
// number → DENIED ("wrong_number"), counted like a wrong code. A challenge takes one answer: a
// second is ErrConflict, one after expiry ErrExpired; only the same device's approval, sent
// again while the first is ALLOWED and not yet AUTHENTICATED, completes it.
func (s *Service) RespondPush(ctx context.Context, r PushResponse) (Authentication, error) {
	if r.Decision != DecisionApprove && r.Decision != DecisionDeny {
		return Authentication{}, fmt.Errorf("%w: decision must be approve or deny", ErrBadRequest)
	}
	e, err := s.pushByChallenge(ctx, r.ChallengeID, r.Sub)
	if err != nil {
		return Authentication{}, err
	}
	if ok, err := s.Push.DeviceOf(ctx, r.PHID, r.Sub); err != nil {
		return Authentication{}, err
	} else if !ok {
		return Authentication{}, ErrNotFound // a removed device answers nothing
	}
	// An answer proves the challenge reached the device, even if the bridge's acknowledgement
	// is still on its way: record it first, so every push passes PUSH_ACKNOWLEDGED (and its
	// event) before its outcome, and the late acknowledgement changes nothing.
	if e, err = s.apply(ctx, e, func(e Authentication) (Authentication, *change, error) {
		if e.State != Initiated {
			return e, nil, nil
		}
		e.State, e.PHID = PushAcknowledged, r.PHID
		return e, &change{}, nil
	}); err != nil {
		return e, err
	}
	reason := ""
	switch {
	case r.Decision == DecisionDeny && r.Reason == "not_me":
		reason = "not_me"
	case r.Decision == DecisionDeny:
		reason = "denied"
	case r.Number != e.Number:
		reason = "wrong_number"
	}
	e, err = s.apply(ctx, e, func(e Authentication) (Authentication, *change, error) {
		switch e.State {
		case Initiated, PushAcknowledged:
		case Expired:
			return e, nil, ErrExpired
		case Allowed:
			if reason == "" && e.PHID == r.PHID {
				// This device's approval was recorded by an attempt that did not get to
				// AUTHENTICATED (its replica died, or that write failed): the retry finishes it.
				return e, nil, nil
			}
			return e, nil, fmt.Errorf("%w: this challenge was already answered or ended (%s)", ErrConflict, e.State)
		default:
			return e, nil, fmt.Errorf("%w: this challenge was already answered or ended (%s)", ErrConflict, e.State)
		}
		e.PHID = r.PHID
		if reason != "" {
			e.State = Denied
			return e, &change{reason: reason}, nil
		}
		e.State = Allowed
		return e, &change{silent: true}, nil
	})
	if err != nil {
		return e, err
	}
	if reason == "wrong_number" {
		// Counted after the answer is recorded, so a lock never leaves the challenge open.
		if err := s.Push.CountFailure(ctx, r.Sub); err != nil && !errors.Is(err, factor.ErrLocked) {
			return e, err
		}
	}
	if e.State != Allowed {
		return e, nil
	}
	e, err = s.apply(ctx, e, func(e Authentication) (Authentication, *change, error) {
		if e.State != Allowed {
			return e, nil, nil // AUTHENTICATED by a concurrent call already
		}
		e.State, e.AuthTime = Authenticated, s.now()
		return e, &change{}, nil
	})
	if err == nil && e.State == Authenticated {
		// Best effort, like a device list detail: the sign-in stands either way.
		_ = s.Push.MarkUsed(ctx, r.PHID, r.Sub)
	}
	return e, err
}

func (s *Service) pushByChallenge(ctx context.Context, challengeID, sub string) (Authentication, error) {
	if challengeID == "" || sub == "" {
		return Authentication{}, ErrNotFound
	}
	e, err := s.Store.GetByExchangeID(ctx, challengeID)
	if err != nil {
		return Authentication{}, err
	}
	if e.Method != method.Push || e.Sub != sub {
		return Authentication{}, ErrNotFound
	}
	return e, nil
}

func challengeOf(e Authentication) Challenge {
	return Challenge{
		ChallengeID: e.ExchangeID, StatusID: e.ID, Sub: e.Sub, Numbers: slices.Clone(e.Candidates),
		Context: e.Context, ExpiresAt: e.ExpiresAt,
	}
}

// drawNumbers picks the two-digit number the frontend shows and three distinct candidates for
// the device, the right one at a random place among them.
func drawNumbers() (string, []string, error) {
	seen := map[int]bool{}
	var picks []string
	for len(picks) < 3 {
		n, err := rand.Int(rand.Reader, big.NewInt(100))
		if err != nil {
			return "", nil, fmt.Errorf("draw push number: %w", err)
		}
		v := int(n.Int64())
		if seen[v] {
			continue
		}
		seen[v] = true
		picks = append(picks, fmt.Sprintf("%02d", v))
	}
	right := picks[0]
	// Sort so the right number's place says nothing (it was drawn first).
	slices.Sort(picks)
	return right, picks, nil
}

// pushEvent builds mfa.push.sent or mfa.push.acknowledged; never the number or the candidates.
func pushEvent(t events.Type, e Authentication, phid string, devices int) (outbox.Message, error) {
	env, err := events.New(uuid.NewSHA1(eventNamespace, []byte(e.ID+"/"+string(t))).String(),
		events.SourceStatus, t, e.ID, e.UpdatedAt,
		events.Push{StatusID: e.ID, Sub: e.Sub, ExpiresAt: e.ExpiresAt, Devices: devices, PHID: phid})
	if err != nil {
		return outbox.Message{}, err
	}
	return outbox.FromEnvelope(env)
}

package signin_test

import (
	"context"
	"errors"
	"github.com/mfaflow/mfaflow/pkg/factor"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/mfaflow/mfaflow/events/method"
	"github.com/mfaflow/mfaflow/pkg/natstest"
	"github.com/mfaflow/mfaflow/pkg/outbox"
	"github.com/mfaflow/mfaflow/pkg/testkit"
	"github.com/mfaflow/mfaflow/services/status/internal/signin"
	"github.com/mfaflow/mfaflow/services/status/internal/store/kv"
)

// pushDirectory is the registry as push sees it: one push device, ph-1, of every user.
type pushDirectory struct{}

func (pushDirectory) Ready(context.Context, string, string) error { return nil }
func (pushDirectory) Challenge(context.Context, string, string, string, string, string) (factor.Sent, []byte, error) {
	return factor.Sent{}, nil, factor.ErrNoFactor
}

func (pushDirectory) CheckCode(context.Context, string, string, string, string, []byte) (string, error) {
	return "", errors.New("no codes here")
}
func (pushDirectory) PushDevices(context.Context, string) ([]string, error) {
	return []string{"ph-1"}, nil
}
func (pushDirectory) DeviceOf(_ context.Context, phid, _ string) (bool, error) {
	return phid == "ph-1", nil
}
func (pushDirectory) CountFailure(context.Context, string) error     { return nil }
func (pushDirectory) MarkUsed(context.Context, string, string) error { return nil }

type noSender struct{}

func (noSender) Send(signin.Challenge, []string) {}

// failingAuthenticated fails the first write that would make an authentication AUTHENTICATED,
// as a NATS node that dies (or a replica killed) between the approval and its completion does.
type failingAuthenticated struct {
	*kv.SignInStore
	failed atomic.Bool
}

func (s *failingAuthenticated) Update(ctx context.Context, e signin.Authentication, msgs ...outbox.Message) (signin.Authentication, error) {
	if e.State == signin.Authenticated && s.failed.CompareAndSwap(false, true) {
		return signin.Authentication{}, errors.New("nats: no response from stream")
	}
	return s.SignInStore.Update(ctx, e, msgs...)
}

// TestApprovalRetriedAfterItsCompletionFailed: an approval recorded as ALLOWED whose
// completion to AUTHENTICATED failed is finished by the device's retry of the same answer
// instead of being refused as already answered; another device, or a deny, still gets conflict.
func TestApprovalRetriedAfterItsCompletionFailed(t *testing.T) {
	ctx := context.Background()
	store, err := kv.Open(ctx, natstest.Start(t).JetStream(t), "")
	if err != nil {
		t.Fatal(err)
	}
	clock := testkit.NewClock(time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC))
	dir := pushDirectory{}
	svc := &signin.Service{Store: &failingAuthenticated{SignInStore: store.SignIns()}, Now: clock.Now,
		Authenticator: dir, Push: dir, PushLedger: store, PushSender: noSender{}}
	e, err := svc.Start(ctx, signin.NewAuthentication{
		ID: uuid.NewString(), ExchangeID: uuid.NewString(), Sub: "alice", Initiator: "alice",
		Method: method.Push, TTL: 5 * time.Minute,
	})
	if err != nil {
		t.Fatal(err)
	}
	approve := signin.PushResponse{ChallengeID: e.ExchangeID, PHID: "ph-1", Sub: "alice",
		Decision: signin.DecisionApprove, Number: e.Number}
	if _, err := svc.RespondPush(ctx, approve); err == nil {
		t.Fatal("the first answer succeeded; the store was to fail its completion")
	}
	if got, err := store.SignIns().Get(ctx, e.ID); err != nil || got.State != signin.Allowed {
		t.Fatalf("after the failed completion: %s %v, want ALLOWED", got.State, err)
	}
	deny := approve
	deny.Decision, deny.Number = signin.DecisionDeny, ""
	if _, err := svc.RespondPush(ctx, deny); !errors.Is(err, signin.ErrConflict) {
		t.Fatalf("a deny after the approval: %v, want ErrConflict", err)
	}
	got, err := svc.RespondPush(ctx, approve)
	if err != nil || got.State != signin.Authenticated {
		t.Fatalf("the retried approval: %s %v, want AUTHENTICATED", got.State, err)
	}
	if _, err := svc.RespondPush(ctx, approve); !errors.Is(err, signin.ErrConflict) {
		t.Fatalf("an approval after AUTHENTICATED: %v, want ErrConflict", err)
	}
}

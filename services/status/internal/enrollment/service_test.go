package enrollment_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/mfaflow/mfaflow/pkg/factor"
	"github.com/mfaflow/mfaflow/pkg/natstest"
	"github.com/mfaflow/mfaflow/pkg/testkit"
	"github.com/mfaflow/mfaflow/pkg/totp"
	"github.com/mfaflow/mfaflow/services/status/internal/enrollment"
	"github.com/mfaflow/mfaflow/services/status/internal/store/kv"
)

// codeRegistry checks codes with the real TOTP rules against one secret per enrollment, as the
// device registry does; the registry service itself is tested in its own module and end to end.
type codeRegistry struct {
	secret string
	now    func() time.Time
	mu     sync.Mutex
	calls  int
	// afterVerify, when set, runs after a code was accepted and before Verify returns: the
	// window in which a cancel or an expiry races the enrollment.
	afterVerify func(ctx context.Context)
	activated   []enrollment.Claim
	discarded   []string
	// pending is the sealed pending credential of each Verify call.
	pending [][]byte
	// void makes Verify answer ErrCredentialVoid (the user's factors were reset).
	void bool
}

func (r *codeRegistry) Verify(ctx context.Context, statusID, _, code string, dev enrollment.Device, pending []byte) (enrollment.Claim, error) {
	r.mu.Lock()
	r.calls++
	r.pending = append(r.pending, pending)
	hook, void := r.afterVerify, r.void
	r.mu.Unlock()
	if void {
		return enrollment.Claim{}, enrollment.ErrCredentialVoid
	}
	_, ok, err := totp.Check(r.secret, code, r.now(), totp.Default, 1, 0)
	if err != nil {
		return enrollment.Claim{}, err
	}
	if !ok {
		return enrollment.Claim{}, factor.ErrInvalidCode
	}
	id := dev.DeviceID
	if id == "" {
		id = "generated"
	}
	if hook != nil {
		hook(ctx)
	}
	return enrollment.Claim{PHID: "ph-" + statusID, DeviceID: id}, nil
}

func (r *codeRegistry) Activate(_ context.Context, statusID, _ string, claim enrollment.Claim) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.activated = append(r.activated, claim)
	return nil
}

func (r *codeRegistry) Resend(context.Context, string, string, []byte) (factor.Sent, []byte, error) {
	return factor.Sent{}, nil, errors.New("no codes are sent here")
}

func (r *codeRegistry) Discard(_ context.Context, statusID string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.discarded = append(r.discarded, statusID)
	return nil
}

func (r *codeRegistry) discards() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.discarded...)
}

func (r *codeRegistry) activations() []enrollment.Claim {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]enrollment.Claim(nil), r.activated...)
}

type fixture struct {
	svc   *enrollment.Service
	clock *testkit.Clock
	reg   *codeRegistry
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	store, err := kv.Open(context.Background(), natstest.Start(t).JetStream(t), "")
	if err != nil {
		t.Fatal(err)
	}
	secret, err := totp.NewSecret()
	if err != nil {
		t.Fatal(err)
	}
	c := testkit.NewClock(time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC))
	reg := &codeRegistry{secret: secret, now: c.Now}
	return &fixture{svc: &enrollment.Service{Store: store, Registry: reg, Now: c.Now}, clock: c, reg: reg}
}

func (f *fixture) create(t *testing.T, sub string) enrollment.Enrollment {
	t.Helper()
	e, err := f.svc.Create(context.Background(), enrollment.NewEnrollment{
		ID: uuid.NewString(), ExchangeID: uuid.NewString(), Sub: sub, Method: "totp",
		ExpiresAt: f.clock.Now().Add(10 * time.Minute),
	})
	if err != nil {
		t.Fatal(err)
	}
	return e
}

func (f *fixture) code(t *testing.T) string {
	t.Helper()
	c, err := totp.Code(f.reg.secret, f.clock.Now(), totp.Default)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func wrong(code string) string {
	if code == "000000" {
		return "111111"
	}
	return "000000"
}

func TestCreate(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t)
	e := f.create(t, "alice")
	if e.State != enrollment.Initiated || e.Method != "TOTP" {
		t.Fatalf("created %+v", e)
	}
	t.Run("PollAnswersInitiated", func(t *testing.T) {
		got, err := f.svc.Get(ctx, e.ID, enrollment.Caller{Sub: "alice"})
		if err != nil || got.State != enrollment.Initiated {
			t.Fatalf("Get = %+v, %v", got, err)
		}
	})
	t.Run("RepeatIsIdempotent", func(t *testing.T) {
		again, err := f.svc.Create(ctx, enrollment.NewEnrollment{ID: e.ID, ExchangeID: e.ExchangeID, Sub: "alice", Method: "TOTP", ExpiresAt: e.ExpiresAt})
		if err != nil || again.ID != e.ID {
			t.Fatalf("repeat create = %+v, %v", again, err)
		}
	})
	t.Run("ErrBadRequest", func(t *testing.T) {
		for name, in := range map[string]enrollment.NewEnrollment{
			"NoSub":       {ID: uuid.NewString(), ExchangeID: uuid.NewString(), Method: "TOTP", ExpiresAt: f.clock.Now().Add(time.Minute)},
			"OtherMethod": {ID: uuid.NewString(), ExchangeID: uuid.NewString(), Sub: "a", Method: "FAX", ExpiresAt: f.clock.Now().Add(time.Minute)},
			"Past":        {ID: uuid.NewString(), ExchangeID: uuid.NewString(), Sub: "a", Method: "TOTP", ExpiresAt: f.clock.Now().Add(-time.Minute)},
		} {
			if _, err := f.svc.Create(ctx, in); !errors.Is(err, enrollment.ErrBadRequest) {
				t.Errorf("%s: %v", name, err)
			}
		}
	})
}

func TestOtherUserSeesNothing(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t)
	e := f.create(t, "alice")
	if _, err := f.svc.Get(ctx, e.ID, enrollment.Caller{Sub: "mallory"}); !errors.Is(err, enrollment.ErrNotFound) {
		t.Fatalf("Get by other user: %v", err)
	}
	if _, err := f.svc.Cancel(ctx, e.ID, enrollment.Caller{Sub: "mallory"}); !errors.Is(err, enrollment.ErrNotFound) {
		t.Fatalf("Cancel by other user: %v", err)
	}
	if _, err := f.svc.Enroll(ctx, enrollment.EnrollInput{ExchangeID: e.ExchangeID, Code: f.code(t), Sub: "mallory"}); !errors.Is(err, enrollment.ErrNotFound) {
		t.Fatalf("Enroll by other user: %v", err)
	}
	if f.reg.calls != 0 {
		t.Fatal("another user's request reached the registry")
	}
}

func TestScanThenEnroll(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t)
	e := f.create(t, "alice")
	phone := enrollment.Device{DeviceID: "phone-1", Name: "Alice's phone", Platform: "android"}

	scanned, err := f.svc.Scan(ctx, e.ExchangeID, phone)
	if err != nil || scanned.State != enrollment.Scanned {
		t.Fatalf("Scan = %+v, %v", scanned, err)
	}
	t.Run("RepeatScanSameDevice", func(t *testing.T) {
		again, err := f.svc.Scan(ctx, e.ExchangeID, phone)
		if err != nil || again.State != enrollment.Scanned || again.Version != scanned.Version {
			t.Fatalf("repeat scan = %+v, %v", again, err)
		}
	})
	t.Run("ScanByOtherDeviceIsConflict", func(t *testing.T) {
		if _, err := f.svc.Scan(ctx, e.ExchangeID, enrollment.Device{DeviceID: "phone-2"}); !errors.Is(err, enrollment.ErrConflict) {
			t.Fatalf("scan by other device: %v", err)
		}
	})
	enrolled, err := f.svc.Enroll(ctx, enrollment.EnrollInput{ExchangeID: e.ExchangeID, Code: f.code(t), Channel: enrollment.ChannelCompanion})
	if err != nil {
		t.Fatal(err)
	}
	if enrolled.State != enrollment.Enrolled || enrolled.PHID != "ph-"+e.ID || enrolled.DeviceID != "phone-1" {
		t.Fatalf("enrolled = %+v", enrolled)
	}
	if got := f.reg.activations(); len(got) != 1 || got[0].PHID != enrolled.PHID || got[0].DeviceID != "phone-1" {
		t.Fatalf("activations = %+v, want the enrolled device once", got)
	}
	t.Run("EnrolledTakesNoMoreCodes", func(t *testing.T) {
		for _, c := range []string{f.code(t), "000000"} {
			again, err := f.svc.Enroll(ctx, enrollment.EnrollInput{ExchangeID: e.ExchangeID, Code: c, Device: enrollment.Device{DeviceID: "phone-9"}})
			if !errors.Is(err, enrollment.ErrConflict) || again.PHID != enrolled.PHID {
				t.Fatalf("enroll of an ENROLLED enrollment with %q = %+v, %v; want conflict", c, again, err)
			}
		}
	})
	t.Run("TerminalNeverChanges", func(t *testing.T) {
		if _, err := f.svc.Scan(ctx, e.ExchangeID, phone); !errors.Is(err, enrollment.ErrConflict) {
			t.Fatalf("scan after enroll: %v", err)
		}
		if _, err := f.svc.Cancel(ctx, e.ID, enrollment.Caller{Sub: "alice"}); !errors.Is(err, enrollment.ErrConflict) {
			t.Fatalf("cancel after enroll: %v", err)
		}
		f.clock.Advance(time.Hour)
		got, err := f.svc.Get(ctx, e.ID, enrollment.Caller{Sub: "alice"})
		if err != nil || got.State != enrollment.Enrolled {
			t.Fatalf("enrolled enrollment after expiry time = %+v, %v", got, err)
		}
	})
}

// TestRepeatedEnrollFrame: a companion that lost the answer to its enroll frame sends it again
// and gets the enrollment again (the same ph_id), without a second registry check (the code
// was consumed); any other device, key or code, another channel, or a repeat after the window
// stays a conflict.
func TestRepeatedEnrollFrame(t *testing.T) {
	ctx := context.Background()
	key := &enrollment.DeviceKey{Kty: "EC", Crv: "P-256", X: "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU", Y: "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"}
	otherKey := &enrollment.DeviceKey{Kty: "EC", Crv: "P-256", X: key.Y, Y: key.X}
	enrolled := func(t *testing.T, f *fixture, dev enrollment.Device) (enrollment.Enrollment, string) {
		t.Helper()
		e := f.create(t, "alice")
		if _, err := f.svc.Scan(ctx, e.ExchangeID, enrollment.Device{DeviceID: "phone-1", Name: "Alice's phone"}); err != nil {
			t.Fatal(err)
		}
		code := f.code(t)
		got, err := f.svc.Enroll(ctx, enrollment.EnrollInput{ExchangeID: e.ExchangeID, Code: code, Device: dev, Channel: enrollment.ChannelCompanion})
		if err != nil || got.State != enrollment.Enrolled || got.PHID == "" {
			t.Fatalf("first enroll = %+v, %v", got, err)
		}
		return got, code
	}
	withProof := func(t *testing.T) *fixture {
		f := newFixture(t)
		f.svc.ProofSecret = []byte("a test proof secret of 32 bytes!")
		return f
	}
	for _, tc := range []struct {
		name  string
		first enrollment.Device
		again func(code string) enrollment.EnrollInput
		wait  time.Duration
		ok    bool
	}{
		{"OK", enrollment.Device{DeviceID: "phone-1", Key: key}, func(c string) enrollment.EnrollInput {
			return enrollment.EnrollInput{Code: c, Device: enrollment.Device{DeviceID: "phone-1", Key: key}}
		}, 0, true},
		{"OKNoKeyBothTimes", enrollment.Device{DeviceID: "phone-1"}, func(c string) enrollment.EnrollInput {
			return enrollment.EnrollInput{Code: c, Device: enrollment.Device{DeviceID: "phone-1"}}
		}, 0, true},
		{"OKDeviceFromScan", enrollment.Device{Key: key}, func(c string) enrollment.EnrollInput {
			return enrollment.EnrollInput{Code: c, Device: enrollment.Device{Key: key}}
		}, 0, true},
		{"OKLateInWindow", enrollment.Device{DeviceID: "phone-1", Key: key}, func(c string) enrollment.EnrollInput {
			return enrollment.EnrollInput{Code: c, Device: enrollment.Device{DeviceID: "phone-1", Key: key}}
		}, enrollment.DefaultRepeatWindow, true},
		{"ErrConflictOtherDevice", enrollment.Device{DeviceID: "phone-1", Key: key}, func(c string) enrollment.EnrollInput {
			return enrollment.EnrollInput{Code: c, Device: enrollment.Device{DeviceID: "phone-2", Key: key}}
		}, 0, false},
		{"ErrConflictOtherKey", enrollment.Device{DeviceID: "phone-1", Key: key}, func(c string) enrollment.EnrollInput {
			return enrollment.EnrollInput{Code: c, Device: enrollment.Device{DeviceID: "phone-1", Key: otherKey}}
		}, 0, false},
		{"ErrConflictKeyLeftOut", enrollment.Device{DeviceID: "phone-1", Key: key}, func(c string) enrollment.EnrollInput {
			return enrollment.EnrollInput{Code: c, Device: enrollment.Device{DeviceID: "phone-1"}}
		}, 0, false},
		{"ErrConflictKeyAdded", enrollment.Device{DeviceID: "phone-1"}, func(c string) enrollment.EnrollInput {
			return enrollment.EnrollInput{Code: c, Device: enrollment.Device{DeviceID: "phone-1", Key: key}}
		}, 0, false},
		{"ErrConflictOtherCode", enrollment.Device{DeviceID: "phone-1", Key: key}, func(c string) enrollment.EnrollInput {
			return enrollment.EnrollInput{Code: wrong(c), Device: enrollment.Device{DeviceID: "phone-1", Key: key}}
		}, 0, false},
		{"ErrConflictAfterWindow", enrollment.Device{DeviceID: "phone-1", Key: key}, func(c string) enrollment.EnrollInput {
			return enrollment.EnrollInput{Code: c, Device: enrollment.Device{DeviceID: "phone-1", Key: key}}
		}, enrollment.DefaultRepeatWindow + time.Second, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := withProof(t)
			first, code := enrolled(t, f, tc.first)
			calls := f.reg.calls
			f.clock.Advance(tc.wait)
			in := tc.again(code)
			in.ExchangeID, in.Channel = first.ExchangeID, enrollment.ChannelCompanion
			again, err := f.svc.Enroll(ctx, in)
			if !tc.ok {
				if !errors.Is(err, enrollment.ErrConflict) {
					t.Fatalf("repeat = %+v, %v; want ErrConflict", again, err)
				}
				return
			}
			if err != nil || again.State != enrollment.Enrolled || again.PHID != first.PHID || again.DeviceID != first.DeviceID || again.Version != first.Version {
				t.Fatalf("repeat = %+v, %v; want the enrollment unchanged %+v", again, err, first)
			}
			if f.reg.calls != calls || len(f.reg.activations()) != 1 {
				t.Fatalf("the repeat reached the registry: %d verifies, activations %+v", f.reg.calls-calls, f.reg.activations())
			}
		})
	}
	t.Run("ErrConflictFromFrontend", func(t *testing.T) {
		f := withProof(t)
		first, code := enrolled(t, f, enrollment.Device{DeviceID: "phone-1"})
		_, err := f.svc.Enroll(ctx, enrollment.EnrollInput{ExchangeID: first.ExchangeID, Code: code, Sub: "alice", Channel: enrollment.ChannelFrontend})
		if !errors.Is(err, enrollment.ErrConflict) {
			t.Fatalf("typed code repeated on an ENROLLED enrollment: %v; want ErrConflict", err)
		}
	})
	t.Run("ErrConflictWithoutProofSecret", func(t *testing.T) {
		f := newFixture(t)
		first, code := enrolled(t, f, enrollment.Device{DeviceID: "phone-1"})
		_, err := f.svc.Enroll(ctx, enrollment.EnrollInput{ExchangeID: first.ExchangeID, Code: code, Device: enrollment.Device{DeviceID: "phone-1"}, Channel: enrollment.ChannelCompanion})
		if !errors.Is(err, enrollment.ErrConflict) {
			t.Fatalf("repeat without a proof secret: %v; want ErrConflict", err)
		}
	})
	t.Run("ProofIsNotTheCode", func(t *testing.T) {
		f := withProof(t)
		first, code := enrolled(t, f, enrollment.Device{DeviceID: "phone-1"})
		stored, err := f.svc.Store.Get(ctx, first.ID)
		if err != nil {
			t.Fatal(err)
		}
		if len(stored.EnrollProof) != 32 || strings.Contains(string(stored.EnrollProof), code) {
			t.Fatalf("stored proof %x", stored.EnrollProof)
		}
	})
}

func TestTypedCodeFromInitiated(t *testing.T) {
	f := newFixture(t)
	e := f.create(t, "alice")
	code := f.code(t)
	typed := code[:3] + " " + code[3:] // as apps show it
	got, err := f.svc.Enroll(context.Background(), enrollment.EnrollInput{ExchangeID: e.ExchangeID, Code: typed, Sub: "alice", Channel: enrollment.ChannelFrontend})
	if err != nil || got.State != enrollment.Enrolled || got.DeviceID != "generated" {
		t.Fatalf("Enroll = %+v, %v", got, err)
	}
}

func TestWrongCodes(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t)
	e := f.create(t, "alice")
	t.Run("MalformedCodeIsBadRequestAndNotCounted", func(t *testing.T) {
		for _, c := range []string{"", "12345", "123456789", "12a456"} {
			if _, err := f.svc.Enroll(ctx, enrollment.EnrollInput{ExchangeID: e.ExchangeID, Code: c}); !errors.Is(err, enrollment.ErrBadRequest) {
				t.Errorf("code %q: %v", c, err)
			}
		}
	})
	bad := wrong(f.code(t))
	for i := 1; i < enrollment.DefaultMaxAttempts; i++ {
		got, err := f.svc.Enroll(ctx, enrollment.EnrollInput{ExchangeID: e.ExchangeID, Code: bad})
		if !errors.Is(err, factor.ErrInvalidCode) || got.State != enrollment.Initiated || got.FailedAttempts != i {
			t.Fatalf("attempt %d: %+v, %v", i, got, err)
		}
	}
	got, err := f.svc.Enroll(ctx, enrollment.EnrollInput{ExchangeID: e.ExchangeID, Code: bad})
	if !errors.Is(err, enrollment.ErrFailed) || got.State != enrollment.Failed {
		t.Fatalf("last attempt: %+v, %v", got, err)
	}
	if _, err := f.svc.Enroll(ctx, enrollment.EnrollInput{ExchangeID: e.ExchangeID, Code: f.code(t)}); !errors.Is(err, enrollment.ErrConflict) {
		t.Fatalf("right code after FAILED: %v", err)
	}
}

func TestExpiry(t *testing.T) {
	ctx := context.Background()
	t.Run("VisibleOnNextPoll", func(t *testing.T) {
		f := newFixture(t)
		e := f.create(t, "alice")
		f.clock.Advance(10 * time.Minute)
		got, err := f.svc.Get(ctx, e.ID, enrollment.Caller{Sub: "alice"})
		if err != nil || got.State != enrollment.Expired {
			t.Fatalf("Get after expiry = %+v, %v", got, err)
		}
		if _, err := f.svc.Scan(ctx, e.ExchangeID, enrollment.Device{}); !errors.Is(err, enrollment.ErrExpired) {
			t.Fatalf("scan after expiry: %v", err)
		}
		if _, err := f.svc.Enroll(ctx, enrollment.EnrollInput{ExchangeID: e.ExchangeID, Code: f.code(t)}); !errors.Is(err, enrollment.ErrExpired) {
			t.Fatalf("enroll after expiry: %v", err)
		}
	})
	t.Run("SweepExpiresWithoutPoll", func(t *testing.T) {
		f := newFixture(t)
		due := f.create(t, "alice")
		f.clock.Advance(5 * time.Minute)
		later := f.create(t, "alice")
		f.clock.Advance(5 * time.Minute)
		n, err := f.svc.ExpireDue(ctx)
		if err != nil || n != 1 {
			t.Fatalf("ExpireDue = %d, %v", n, err)
		}
		if got, _ := f.svc.Get(ctx, due.ID, enrollment.Caller{Sub: "alice"}); got.State != enrollment.Expired {
			t.Fatalf("due enrollment is %s", got.State)
		}
		if got, _ := f.svc.Get(ctx, later.ID, enrollment.Caller{Sub: "alice"}); got.State != enrollment.Initiated {
			t.Fatalf("later enrollment is %s", got.State)
		}
		if n, err := f.svc.ExpireDue(ctx); err != nil || n != 0 {
			t.Fatalf("second sweep = %d, %v", n, err)
		}
	})
}

func TestCancel(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t)
	e := f.create(t, "alice")
	got, err := f.svc.Cancel(ctx, e.ID, enrollment.Caller{Sub: "alice"})
	if err != nil || got.State != enrollment.Cancelled {
		t.Fatalf("Cancel = %+v, %v", got, err)
	}
	if again, err := f.svc.Cancel(ctx, e.ID, enrollment.Caller{Sub: "alice"}); err != nil || again.State != enrollment.Cancelled {
		t.Fatalf("repeat cancel = %+v, %v", again, err)
	}
	if _, err := f.svc.Enroll(ctx, enrollment.EnrollInput{ExchangeID: e.ExchangeID, Code: f.code(t)}); !errors.Is(err, enrollment.ErrConflict) {
		t.Fatalf("enroll after cancel: %v", err)
	}
}

// TestConcurrentTransitionsSettleOnce races a cancel against an enrollment: exactly one wins and
// the loser is told so, never both.
func TestConcurrentTransitionsSettleOnce(t *testing.T) {
	ctx := context.Background()
	for range 5 {
		f := newFixture(t)
		e := f.create(t, "alice")
		code := f.code(t)
		var wg sync.WaitGroup
		var cancelErr, enrollErr error
		wg.Add(2)
		go func() { defer wg.Done(); _, cancelErr = f.svc.Cancel(ctx, e.ID, enrollment.Caller{Sub: "alice"}) }()
		go func() {
			defer wg.Done()
			_, enrollErr = f.svc.Enroll(ctx, enrollment.EnrollInput{ExchangeID: e.ExchangeID, Code: code})
		}()
		wg.Wait()
		final, err := f.svc.Get(ctx, e.ID, enrollment.Caller{Sub: "alice"})
		if err != nil {
			t.Fatal(err)
		}
		switch final.State {
		case enrollment.Cancelled:
			if cancelErr != nil || !errors.Is(enrollErr, enrollment.ErrConflict) {
				t.Fatalf("cancelled, but cancel=%v enroll=%v", cancelErr, enrollErr)
			}
		case enrollment.Enrolled:
			if enrollErr != nil || !errors.Is(cancelErr, enrollment.ErrConflict) {
				t.Fatalf("enrolled, but cancel=%v enroll=%v", cancelErr, enrollErr)
			}
		default:
			t.Fatalf("final state %s", final.State)
		}
	}
}

// TestCancelOrExpiryInsideVerifyLeavesNoDevice forces the race the two-step enrollment exists
// for: the registry accepts the code, and before the ENROLLED write a cancel (or the expiry
// time) wins. The enrollment must end CANCELLED/EXPIRED, the caller must be told, and no device
// may be activated.
func TestCancelOrExpiryInsideVerifyLeavesNoDevice(t *testing.T) {
	ctx := context.Background()
	t.Run("Cancel", func(t *testing.T) {
		f := newFixture(t)
		e := f.create(t, "alice")
		f.reg.afterVerify = func(ctx context.Context) {
			if _, err := f.svc.Cancel(ctx, e.ID, enrollment.Caller{Sub: "alice"}); err != nil {
				t.Errorf("cancel inside verify: %v", err)
			}
		}
		_, err := f.svc.Enroll(ctx, enrollment.EnrollInput{ExchangeID: e.ExchangeID, Code: f.code(t)})
		if !errors.Is(err, enrollment.ErrConflict) {
			t.Fatalf("enroll that lost to a cancel: %v, want conflict", err)
		}
		if got, _ := f.svc.Get(ctx, e.ID, enrollment.Caller{Sub: "alice"}); got.State != enrollment.Cancelled || got.PHID != "" {
			t.Fatalf("final = %+v, want CANCELLED without a device", got)
		}
		if got := f.reg.activations(); len(got) != 0 {
			t.Fatalf("activated %+v behind a cancelled enrollment", got)
		}
		if got := f.reg.discards(); len(got) != 1 || got[0] != e.ID {
			t.Fatalf("discarded %v, want the claim of %s", got, e.ID)
		}
	})
	t.Run("Expiry", func(t *testing.T) {
		f := newFixture(t)
		e := f.create(t, "alice")
		code := f.code(t)
		f.reg.afterVerify = func(context.Context) { f.clock.Advance(10 * time.Minute) }
		_, err := f.svc.Enroll(ctx, enrollment.EnrollInput{ExchangeID: e.ExchangeID, Code: code})
		if !errors.Is(err, enrollment.ErrExpired) {
			t.Fatalf("enroll that lost to expiry: %v, want expired", err)
		}
		if got, _ := f.svc.Get(ctx, e.ID, enrollment.Caller{Sub: "alice"}); got.State != enrollment.Expired {
			t.Fatalf("final = %+v, want EXPIRED", got)
		}
		if got := f.reg.activations(); len(got) != 0 {
			t.Fatalf("activated %+v behind an expired enrollment", got)
		}
		if got := f.reg.discards(); len(got) != 1 || got[0] != e.ID {
			t.Fatalf("discarded %v, want the claim of %s", got, e.ID)
		}
	})
}

// The registry's sealed pending credential travels with the enrollment: handed back with each
// code, replaced by a retried create while INITIATED, and gone from the store once the
// enrollment ends.
func TestPendingCredential(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t)
	in := enrollment.NewEnrollment{ID: uuid.NewString(), ExchangeID: uuid.NewString(), Sub: "alice", Method: "TOTP",
		ExpiresAt: f.clock.Now().Add(10 * time.Minute), PendingCredential: []byte("sealed-1")}
	if _, err := f.svc.Create(ctx, in); err != nil {
		t.Fatal(err)
	}
	// The same create again changes nothing; one with another credential replaces it.
	if _, err := f.svc.Create(ctx, in); err != nil {
		t.Fatal(err)
	}
	in.PendingCredential = []byte("sealed-2")
	if _, err := f.svc.Create(ctx, in); err != nil {
		t.Fatalf("retried create with a new credential: %v", err)
	}
	if _, err := f.svc.Enroll(ctx, enrollment.EnrollInput{ExchangeID: in.ExchangeID, Code: wrong(f.code(t))}); !errors.Is(err, factor.ErrInvalidCode) {
		t.Fatalf("wrong code: %v", err)
	}
	if _, err := f.svc.Enroll(ctx, enrollment.EnrollInput{ExchangeID: in.ExchangeID, Code: f.code(t)}); err != nil {
		t.Fatal(err)
	}
	f.reg.mu.Lock()
	got := f.reg.pending
	f.reg.mu.Unlock()
	if len(got) != 2 || string(got[0]) != "sealed-2" || string(got[1]) != "sealed-2" {
		t.Fatalf("verify calls got pending credentials %q, want the replacement twice", got)
	}
	stored, err := f.svc.Store.Get(ctx, in.ID)
	if err != nil || stored.State != enrollment.Enrolled || stored.PendingCredential != nil {
		t.Fatalf("stored after ENROLLED: %v, %+v; want no pending credential kept", err, stored)
	}
	// Once the enrollment moved on, a create with yet another credential is a conflict.
	in.PendingCredential = []byte("sealed-3")
	if _, err := f.svc.Create(ctx, in); !errors.Is(err, enrollment.ErrConflict) {
		t.Fatalf("create with a new credential after ENROLLED: %v, want conflict", err)
	}
}

// An enrollment whose credential the registry voided (a reset) ends FAILED with reason
// credential_void at its next code, instead of taking codes until it expires.
func TestVoidCredentialFailsTheEnrollment(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t)
	e := f.create(t, "alice")
	f.reg.void = true
	_, err := f.svc.Enroll(ctx, enrollment.EnrollInput{ExchangeID: e.ExchangeID, Code: f.code(t), Channel: enrollment.ChannelFrontend})
	if !errors.Is(err, enrollment.ErrConflict) {
		t.Fatalf("code for a voided credential: %v, want conflict", err)
	}
	got, err := f.svc.Get(ctx, e.ID, enrollment.Caller{Sub: "alice"})
	if err != nil || got.State != enrollment.Failed || got.PendingCredential != nil {
		t.Fatalf("after a void credential: %+v, %v; want FAILED without a pending credential", got, err)
	}
	if _, err := f.svc.Enroll(ctx, enrollment.EnrollInput{ExchangeID: e.ExchangeID, Code: f.code(t)}); !errors.Is(err, enrollment.ErrConflict) {
		t.Fatalf("a code after FAILED: %v, want conflict", err)
	}
}

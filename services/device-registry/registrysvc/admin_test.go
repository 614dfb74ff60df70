package registrysvc_test

import (
	"encoding/json"
	"io"
	"net/http"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/mfaflow/mfaflow/events"
	"github.com/mfaflow/mfaflow/events/commands"
	"github.com/mfaflow/mfaflow/events/method"
	"github.com/mfaflow/mfaflow/pkg/fault"
	"github.com/mfaflow/mfaflow/pkg/natstest"
	"github.com/mfaflow/mfaflow/pkg/rpc"
)

// adminDo sends a request with an administrator's token (scope mfa:admin, sub "ops").
func (e *env) adminDo(t *testing.T, method, path string) (*http.Response, []byte) {
	t.Helper()
	tok, err := e.tokens.MintScoped("ops", time.Hour, "mfa:admin", "")
	if err != nil {
		t.Fatal(err)
	}
	req, _ := http.NewRequestWithContext(ctxT(t), method, e.srv.URL+path, nil)
	req.Header.Set("Authorization", "Bearer "+tok)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp, body
}

type factorsJSON struct {
	Sub           string       `json:"sub"`
	Devices       []deviceJSON `json:"devices"`
	RecoveryCodes struct {
		Remaining int        `json:"remaining"`
		CreatedAt *time.Time `json:"created_at"`
	} `json:"recovery_codes"`
	Lockout struct {
		Locked         bool       `json:"locked"`
		LockedUntil    *time.Time `json:"locked_until"`
		FailedAttempts int        `json:"failed_attempts"`
	} `json:"lockout"`
}

func (e *env) factors(t *testing.T, sub string) factorsJSON {
	t.Helper()
	resp, body := e.adminDo(t, http.MethodGet, "/verification-srv/admin/users/"+sub+"/factors")
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET factors: %d %s", resp.StatusCode, body)
	}
	var f factorsJSON
	if err := json.Unmarshal(body, &f); err != nil {
		t.Fatal(err)
	}
	return f
}

// TestAdminFactors: an administrator lists a user's factors, removes one device, resets all of
// them and unlocks; each action is an event naming the administrator, and the user starts over.
func TestAdminFactors(t *testing.T) {
	e := start(t)
	first, secret := e.enroll(t, "alice", commands.Device{Name: "Phone"})
	second, _ := e.enroll(t, "alice", commands.Device{Name: "Tablet"})
	e.generateRecoveryCodes(t, "alice")
	e.clock.Advance(30 * time.Second)
	right := code(t, secret, e.clock.Now())
	for range 5 {
		e.check(t, "alice", method.TOTP, wrongCode(right))
	}

	f := e.factors(t, "alice")
	if f.Sub != "alice" || len(f.Devices) != 2 || f.RecoveryCodes.Remaining != 10 || f.RecoveryCodes.CreatedAt == nil ||
		!f.Lockout.Locked || f.Lockout.LockedUntil == nil {
		t.Fatalf("factors = %+v", f)
	}
	if f := e.factors(t, "nobody"); len(f.Devices) != 0 || f.Devices == nil || f.RecoveryCodes.Remaining != 0 || f.Lockout.Locked {
		t.Fatalf("factors of a user without any = %+v", f)
	}

	// A user token may use none of the admin routes.
	for _, r := range []struct{ method, path string }{
		{http.MethodGet, "/verification-srv/admin/users/alice/factors"},
		{http.MethodDelete, "/verification-srv/admin/users/alice/factors"},
		{http.MethodDelete, "/verification-srv/admin/users/alice/factors/" + first.PHID},
	} {
		resp, body := e.do(t, "alice", r.method, r.path, "")
		assertProblem(t, resp, body, http.StatusForbidden, "forbidden")
		resp, body = e.do(t, "", r.method, r.path, "")
		assertProblem(t, resp, body, http.StatusUnauthorized, "unauthorized")
	}

	// Remove one device: someone else's ph_id is not found.
	resp, body := e.adminDo(t, http.MethodDelete, "/verification-srv/admin/users/bob/factors/"+first.PHID)
	assertProblem(t, resp, body, http.StatusNotFound, "not_found")
	if resp, body := e.adminDo(t, http.MethodDelete, "/verification-srv/admin/users/alice/factors/"+first.PHID); resp.StatusCode != http.StatusNoContent {
		t.Fatalf("remove: %d %s", resp.StatusCode, body)
	}
	removed := e.eventsAbout(t, events.DeviceRemoved, first.PHID, 1)
	var dev events.Device
	if err := json.Unmarshal(removed[0].Envelope.Data, &dev); err != nil || dev.Actor != "ops" || dev.Sub != "alice" {
		t.Fatalf("removed event %s: %v", removed[0].Raw, err)
	}
	if f := e.factors(t, "alice"); len(f.Devices) != 1 || f.Devices[0].PHID != second.PHID {
		t.Fatalf("after remove: %+v", f)
	}

	// Reset all, twice: the second finds nothing.
	for range 2 {
		if resp, body := e.adminDo(t, http.MethodDelete, "/verification-srv/admin/users/alice/factors"); resp.StatusCode != http.StatusNoContent {
			t.Fatalf("reset: %d %s", resp.StatusCode, body)
		}
	}
	e.eventsAbout(t, events.DeviceRemoved, second.PHID, 1)
	var resets []events.Reset
	natstest.Eventually(t, wait, func() error {
		resets = resets[:0]
		for _, ev := range e.events(t, events.FactorsReset) {
			var r events.Reset
			if err := json.Unmarshal(ev.Envelope.Data, &r); err != nil || ev.Envelope.Subject != "alice" {
				t.Fatalf("reset event %s: %v", ev.Raw, err)
			}
			resets = append(resets, r)
		}
		if len(resets) != 2 {
			return errorf("%d reset events, want 2", len(resets))
		}
		return nil
	})
	if want := (events.Reset{Sub: "alice", DevicesRemoved: 1, RecoveryCodesRemoved: true, Actor: "ops", Reason: "admin_reset"}); resets[0] != want {
		t.Fatalf("first reset %+v, want %+v", resets[0], want)
	}
	if want := (events.Reset{Sub: "alice", Actor: "ops", Reason: "admin_reset"}); resets[1] != want {
		t.Fatalf("second reset %+v, want %+v", resets[1], want)
	}
	f = e.factors(t, "alice")
	if len(f.Devices) != 0 || f.RecoveryCodes.Remaining != 0 || f.RecoveryCodes.CreatedAt != nil || f.Lockout.Locked || f.Lockout.FailedAttempts != 0 {
		t.Fatalf("after reset: %+v", f)
	}
	if r := e.ready(t, "alice", method.TOTP); r.Result != resultNone {
		t.Fatalf("TOTP after reset: %+v", r)
	}
	if r := e.ready(t, "alice", method.BackupCode); r.Result != resultNone {
		t.Fatalf("recovery codes after reset: %+v", r)
	}
	if n := e.remaining(t, "alice"); n != 0 {
		t.Fatalf("remaining after reset = %d", n)
	}
	// The user starts over (after the reset): a new device and a new set of recovery codes.
	e.clock.Advance(time.Second)
	e.enroll(t, "alice", commands.Device{Name: "New phone"})
	if codes := e.generateRecoveryCodes(t, "alice"); len(codes) != 10 || e.remaining(t, "alice") != 10 {
		t.Fatalf("recovery codes after reset: %v", codes)
	}

	// Unlock emits mfa.verification.unlocked only when there was something to forget.
	e.check(t, "alice", method.TOTP, "000000")
	for range 2 {
		if resp, body := e.adminDo(t, http.MethodDelete, "/verification-srv/admin/users/alice/lockout"); resp.StatusCode != http.StatusNoContent {
			t.Fatalf("unlock: %d %s", resp.StatusCode, body)
		}
	}
	natstest.Eventually(t, wait, func() error {
		evs := e.events(t, events.VerificationUnlocked)
		if len(evs) != 1 {
			return errorf("%d unlocked events, want 1", len(evs))
		}
		var u events.Unlock
		if err := json.Unmarshal(evs[0].Envelope.Data, &u); err != nil || u != (events.Unlock{Sub: "alice", Actor: "ops"}) || evs[0].Envelope.Subject != "alice" {
			t.Fatalf("unlocked event %s: %v", evs[0].Raw, err)
		}
		return nil
	})
}

// TestResetVoidsEnrollmentsInProgress: a reset ends every enrollment of the user begun before
// it, whether a code had claimed its credential yet (stored, discarded by the reset) or not (held
// sealed by the status service, refused by the registry from now on); one begun after it works.
func TestResetVoidsEnrollmentsInProgress(t *testing.T) {
	e := start(t)
	unclaimed := uuid.NewString()
	unclaimedSecret := e.create(t, unclaimed, "alice")
	claimed := uuid.NewString()
	claim := e.claim(t, claimed, "alice", e.create(t, claimed, "alice"))
	other := uuid.NewString()
	otherSecret := e.create(t, other, "bob")

	e.clock.Advance(time.Second)
	if resp, body := e.adminDo(t, http.MethodDelete, "/verification-srv/admin/users/alice/factors"); resp.StatusCode != http.StatusNoContent {
		t.Fatalf("reset: %d %s", resp.StatusCode, body)
	}

	if _, err := e.activate(t, commands.VerifyCredentialRequest{StatusID: unclaimed, Sub: "alice", Code: code(t, unclaimedSecret, e.clock.Now())}); fault.CodeOf(err) != fault.NotFound {
		t.Fatalf("enrollment begun before the reset: %v, want not_found", err)
	}
	if _, err := e.store(t).GetByStatusID(ctxT(t), unclaimed); err == nil {
		t.Fatal("the refused code left a claim behind")
	}
	err := rpc.Call(ctxT(t), e.nc, commands.RegistryActivateCredential, commands.ActivateCredentialRequest{
		StatusID: claimed, Sub: "alice", PHID: claim.PHID, DeviceID: claim.DeviceID}, nil)
	assertCode(t, err, fault.NotFound)
	// Another user's enrollment is untouched, and alice can start again.
	if _, err := e.activate(t, commands.VerifyCredentialRequest{StatusID: other, Sub: "bob", Code: code(t, otherSecret, e.clock.Now())}); err != nil {
		t.Fatalf("bob's enrollment: %v", err)
	}
	e.clock.Advance(time.Second)
	e.enroll(t, "alice", commands.Device{Name: "New phone"})
	if got := e.list(t, "alice"); len(got) != 1 || got[0].FriendlyName != "New phone" {
		t.Fatalf("alice's devices after starting over: %+v", got)
	}
}

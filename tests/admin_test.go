package tests_test

import (
	"encoding/json"
	"net/http"
	"testing"
	"time"

	"github.com/mfaflow/mfaflow/events"
	"github.com/mfaflow/mfaflow/tests/harness"
)

// adminFactors is the answer of GET /verification-srv/admin/users/{sub}/factors.
type adminFactors struct {
	Sub     string `json:"sub"`
	Devices []struct {
		PHID         string `json:"ph_id"`
		FriendlyName string `json:"friendly_name"`
		Verified     bool   `json:"verified"`
	} `json:"devices"`
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

// TestAdmin: an administrator (scope mfa:admin) lists a user's factors, removes one device,
// resets all of them and unlocks, on the real dev stack. Every action is an event that names
// the administrator; after the reset the user has no factor and enrolls again; a user token
// may use none of the admin routes.
func TestAdmin(t *testing.T) {
	// Step-up off: alice's factors are set up in a row here; admin routes never need it.
	s := startSignIn(t, map[string]string{"MFA_LOCKOUT_THRESHOLD": "3", "MFA_STEP_UP": "off"})
	alice := s.token(t, "alice", "", "")
	admin := s.token(t, "ops", "mfa:admin", "")
	first := s.enrollDevice(t, alice)
	second := s.enrollDevice(t, alice)
	var set struct {
		Codes []string `json:"codes"`
	}
	s.MustJSON(t, http.MethodPost, "/verification-srv/backupcodes", alice, nil, http.StatusCreated, &set)
	s.nextStep()
	right := s.code(t, first)
	in := s.startAuth(t, alice, "totp", nil)
	for range 2 {
		s.MustProblem(t, s.verify(t, alice, "totp", in.ExchangeID.ExchangeID, wrongCode(right)), http.StatusBadRequest, "invalid_code")
	}
	s.MustProblem(t, s.verify(t, alice, "totp", in.ExchangeID.ExchangeID, wrongCode(right)), http.StatusTooManyRequests, "locked")

	const base = "/verification-srv/admin/users/alice"
	var f adminFactors
	s.MustJSON(t, http.MethodGet, base+"/factors", admin, nil, http.StatusOK, &f)
	if f.Sub != "alice" || len(f.Devices) != 2 || f.RecoveryCodes.Remaining != 10 || f.RecoveryCodes.CreatedAt == nil ||
		!f.Lockout.Locked || f.Lockout.LockedUntil == nil {
		t.Fatalf("factors = %+v", f)
	}
	// The same device objects as the user's own list.
	var own []map[string]any
	s.MustJSON(t, http.MethodGet, "/device-srv/devices", alice, nil, http.StatusOK, &own)
	if len(own) != 2 || own[0]["ph_id"] != f.Devices[0].PHID || own[1]["ph_id"] != f.Devices[1].PHID {
		t.Fatalf("own list %v, admin list %+v", own, f.Devices)
	}

	// A plain user token may use no admin route; no token is 401.
	routes := []struct{ method, path string }{
		{http.MethodGet, base + "/factors"},
		{http.MethodDelete, base + "/factors"},
		{http.MethodDelete, base + "/factors/" + f.Devices[0].PHID},
		{http.MethodGet, base + "/lockout"},
		{http.MethodDelete, base + "/lockout"},
	}
	for _, r := range routes {
		s.MustProblem(t, s.Do(t, r.method, r.path, alice, nil), http.StatusForbidden, "forbidden")
		s.MustProblem(t, s.Do(t, r.method, r.path, "", nil), http.StatusUnauthorized, "unauthorized")
	}

	// Remove one device.
	removedPHID, keptPHID := f.Devices[0].PHID, f.Devices[1].PHID
	if r := s.Do(t, http.MethodDelete, base+"/factors/"+removedPHID, admin, nil); r.Status != http.StatusNoContent {
		t.Fatalf("remove: %d %s", r.Status, r.Body)
	}
	s.MustProblem(t, s.Do(t, http.MethodDelete, base+"/factors/"+removedPHID, admin, nil), http.StatusNotFound, "not_found")
	s.MustProblem(t, s.Do(t, http.MethodDelete, "/verification-srv/admin/users/bob/factors/"+keptPHID, admin, nil), http.StatusNotFound, "not_found")
	waitEvents(t, s.rec, events.DeviceRemoved, removedPHID, 1)
	assertActor(t, s.rec.For(removedPHID), events.DeviceRemoved, "ops")
	s.MustJSON(t, http.MethodGet, base+"/factors", admin, nil, http.StatusOK, &f)
	if len(f.Devices) != 1 || f.Devices[0].PHID != keptPHID {
		t.Fatalf("after remove: %+v", f)
	}

	// Reset all, twice (idempotent).
	for range 2 {
		if r := s.Do(t, http.MethodDelete, base+"/factors", admin, nil); r.Status != http.StatusNoContent {
			t.Fatalf("reset: %d %s", r.Status, r.Body)
		}
	}
	waitEvents(t, s.rec, events.DeviceRemoved, keptPHID, 1)
	assertActor(t, s.rec.For(keptPHID), events.DeviceRemoved, "ops")
	waitEvents(t, s.rec, events.FactorsReset, "alice", 2)
	var resets []events.Reset
	for _, ev := range s.rec.For("alice") {
		if ev.Type == events.FactorsReset {
			var r events.Reset
			if err := json.Unmarshal(ev.Data, &r); err != nil {
				t.Fatal(err)
			}
			resets = append(resets, r)
		}
	}
	if want := (events.Reset{Sub: "alice", DevicesRemoved: 1, RecoveryCodesRemoved: true, Actor: "ops", Reason: "admin_reset"}); resets[0] != want {
		t.Fatalf("first reset %+v, want %+v", resets[0], want)
	}
	if want := (events.Reset{Sub: "alice", Actor: "ops", Reason: "admin_reset"}); resets[1] != want {
		t.Fatalf("second reset %+v, want %+v", resets[1], want)
	}
	f = adminFactors{}
	s.MustJSON(t, http.MethodGet, base+"/factors", admin, nil, http.StatusOK, &f)
	if len(f.Devices) != 0 || f.RecoveryCodes.Remaining != 0 || f.RecoveryCodes.CreatedAt != nil || f.Lockout.Locked || f.Lockout.FailedAttempts != 0 {
		t.Fatalf("after reset: %+v", f)
	}
	// The user can no longer sign in, with either factor, and enrolls again.
	s.MustProblem(t, s.Do(t, http.MethodPost, "/verification-srv/authentication/totp/initiation", alice, nil), http.StatusConflict, "no_factor")
	s.MustProblem(t, s.Do(t, http.MethodPost, "/verification-srv/authentication/backupcode/initiation", alice, nil), http.StatusConflict, "no_factor")
	s.nextStep()
	fresh := s.enrollDevice(t, alice)
	s.nextStep()
	again := s.startAuth(t, alice, "totp", nil)
	var res authResult
	s.MustJSON(t, http.MethodPost, "/verification-srv/authentication/totp/verification", alice,
		map[string]string{"exchange_id": again.ExchangeID.ExchangeID, "pass_code": s.code(t, fresh)}, http.StatusOK, &res)

	// Unlock emits mfa.verification.unlocked, once: the second unlock has nothing to forget.
	s.MustProblem(t, s.verify(t, alice, "totp", again.ExchangeID.ExchangeID, "000000"), http.StatusConflict, "conflict")
	next := s.startAuth(t, alice, "totp", nil)
	s.MustProblem(t, s.verify(t, alice, "totp", next.ExchangeID.ExchangeID, wrongCode(s.code(t, fresh))), http.StatusBadRequest, "invalid_code")
	for range 2 {
		if r := s.Do(t, http.MethodDelete, base+"/lockout", admin, nil); r.Status != http.StatusNoContent {
			t.Fatalf("unlock: %d %s", r.Status, r.Body)
		}
	}
	waitEvents(t, s.rec, events.VerificationUnlocked, "alice", 1)
	assertActor(t, s.rec.For("alice"), events.VerificationUnlocked, "ops")

	checkEvents(t, s.rec, append(set.Codes, first, second, fresh, right, res.MFAToken)...)
}

// assertActor checks that every event of type typ among evs names actor.
func assertActor(t *testing.T, evs []harness.Event, typ events.Type, actor string) {
	t.Helper()
	n := 0
	for _, ev := range evs {
		if ev.Type != typ {
			continue
		}
		n++
		var d struct {
			Actor string `json:"actor"`
		}
		if err := json.Unmarshal(ev.Data, &d); err != nil || d.Actor != actor {
			t.Errorf("%s event %s: actor %q, want %q (%v)", typ, ev.Raw, d.Actor, actor, err)
		}
	}
	if n == 0 {
		t.Errorf("no %s event", typ)
	}
}

// TestResetVoidsEnrollmentInProgress: an enrollment the user began before an administrator's
// reset can no longer be completed: its next code answers 409 conflict and ends it FAILED
// (reason credential_void), so the frontend starts a new one, which works.
func TestResetVoidsEnrollmentInProgress(t *testing.T) {
	s := startSignIn(t, nil)
	alice := s.token(t, "alice", "", "")
	admin := s.token(t, "ops", "mfa:admin", "")
	in := initiate(t, s.Stack, alice, "?qr=none")
	s.clock.Advance(time.Second)
	if r := s.Do(t, http.MethodDelete, "/verification-srv/admin/users/alice/factors", admin, nil); r.Status != http.StatusNoContent {
		t.Fatalf("reset: %d %s", r.Status, r.Body)
	}
	s.MustProblem(t, s.Do(t, http.MethodPost, "/verification-srv/v2/setup/enroll/totp", alice,
		map[string]string{"exchange_id": in.ExchangeID.ExchangeID, "verification_code": s.code(t, in.TOTPSecret)}), http.StatusConflict, "conflict")
	if st := poll(t, s.Stack, alice, in.StatusID); st.Status != "FAILED" {
		t.Fatalf("the voided enrollment is %s, want FAILED", st.Status)
	}
	evs := s.rec.WaitTypes(t, in.StatusID, events.EnrollmentInitiated, events.EnrollmentFailed)
	var data events.Enrollment
	if err := json.Unmarshal(evs[len(evs)-1].Data, &data); err != nil || data.Reason != "credential_void" {
		t.Fatalf("failed event %s: %v", evs[len(evs)-1].Raw, err)
	}
	var devices []map[string]any
	s.MustJSON(t, http.MethodGet, "/device-srv/devices", alice, nil, http.StatusOK, &devices)
	if len(devices) != 0 {
		t.Fatalf("devices after a voided enrollment: %v", devices)
	}
	// A new enrollment after the reset works.
	s.clock.Advance(time.Second)
	s.enrollDevice(t, alice)
	s.MustJSON(t, http.MethodGet, "/device-srv/devices", alice, nil, http.StatusOK, &devices)
	if len(devices) != 1 {
		t.Fatalf("devices after enrolling again: %v", devices)
	}
}

package tests_test

import (
	"encoding/json"
	"net/http"
	"testing"
	"time"

	"github.com/mfaflow/mfaflow/events"
)

type mfaState struct {
	Enabled                bool       `json:"enabled"`
	Methods                []string   `json:"methods"`
	DefaultMethod          string     `json:"default_method"`
	Factors                int        `json:"factors"`
	RecoveryCodesRemaining int        `json:"recovery_codes_remaining"`
	Contact                string     `json:"contact"`
	LockedUntil            *time.Time `json:"locked_until"`
}

// profileToken mints a dev token that carries a verified email and a locale, as an identity
// provider's would.
func (s *signIn) profileToken(t *testing.T, sub, email, locale string) string {
	t.Helper()
	var out struct {
		Token string `json:"token"`
	}
	s.MustJSON(t, http.MethodPost, "/dev/token", "", map[string]string{"sub": sub, "email": email, "locale": locale}, http.StatusOK, &out)
	return out.Token
}

// TestMFAState: UCloud's "connected?" and Rackspace's multiFactorEnabled/factorType as
// GET/PUT /verification-srv/mfa, for the user and an administrator; the contact comes from the
// token's verified email claim while the user has no EMAIL factor.
func TestMFAState(t *testing.T) {
	s := startSignIn(t, nil)
	alice := s.profileToken(t, "alice", "alice@example.org", "de")
	var st mfaState
	s.MustJSON(t, http.MethodGet, "/verification-srv/mfa", alice, nil, http.StatusOK, &st)
	if st.Enabled || len(st.Methods) != 0 || st.Contact != "a***@example.org" {
		t.Fatalf("state before any factor %+v", st)
	}
	secret := s.enrollDevice(t, alice)
	var codes struct{ Codes []string }
	r := s.Do(t, http.MethodPost, "/verification-srv/backupcodes", alice, nil, "X-MFA-Token", s.stepUp(t, alice, secret))
	if r.Status != http.StatusCreated || json.Unmarshal(r.Body, &codes) != nil {
		t.Fatalf("recovery codes: %d %s", r.Status, r.Body)
	}
	s.MustJSON(t, http.MethodGet, "/verification-srv/mfa", alice, nil, http.StatusOK, &st)
	if !st.Enabled || len(st.Methods) != 2 || st.Methods[0] != "TOTP" || st.Methods[1] != "BACKUPCODE" ||
		st.DefaultMethod != "TOTP" || st.Factors != 1 || st.RecoveryCodesRemaining != len(codes.Codes) {
		t.Fatalf("state with a device and recovery codes %+v", st)
	}
	s.MustProblem(t, s.Do(t, http.MethodPut, "/verification-srv/mfa", alice, map[string]string{"default_method": "SMS"}), http.StatusConflict, "no_factor")
	s.MustProblem(t, s.Do(t, http.MethodPut, "/verification-srv/mfa", alice, map[string]string{"default_method": "FAX"}), http.StatusBadRequest, "bad_request")
	s.MustJSON(t, http.MethodPut, "/verification-srv/mfa", alice, map[string]string{"default_method": "backupcode"}, http.StatusOK, &st)
	if st.DefaultMethod != "BACKUPCODE" {
		t.Fatalf("default method after PUT %+v", st)
	}
	admin := s.token(t, "ops", "mfa:admin", "")
	var seen mfaState
	s.MustJSON(t, http.MethodGet, "/verification-srv/admin/users/alice/mfa", admin, nil, http.StatusOK, &seen)
	if !seen.Enabled || seen.DefaultMethod != "BACKUPCODE" {
		t.Fatalf("admin view %+v", seen)
	}
	s.MustProblem(t, s.Do(t, http.MethodGet, "/verification-srv/admin/users/alice/mfa", alice, nil), http.StatusForbidden, "forbidden")
}

// TestDisableWithAFreshSecondFactor: with X-MFA-Token, POST /verification-srv/mfa/disable removes
// every factor and recovery code at once and says so in mfa.factors.reset (user_disabled); the
// token is spent. Without one and without a contact address, 409 no_contact.
func TestDisableWithAFreshSecondFactor(t *testing.T) {
	s := startSignIn(t, nil)
	bob := s.token(t, "bob", "", "")
	secret := s.enrollDevice(t, bob)
	if r := s.Do(t, http.MethodPost, "/verification-srv/backupcodes", bob, nil, "X-MFA-Token", s.stepUp(t, bob, secret)); r.Status != http.StatusCreated {
		t.Fatalf("recovery codes: %d %s", r.Status, r.Body)
	}
	s.MustProblem(t, s.Do(t, http.MethodPost, "/verification-srv/mfa/disable", bob, nil), http.StatusConflict, "no_contact")
	proof := s.stepUp(t, bob, secret)
	var st mfaState
	r := s.Do(t, http.MethodPost, "/verification-srv/mfa/disable", bob, nil, "X-MFA-Token", proof)
	if r.Status != http.StatusOK || json.Unmarshal(r.Body, &st) != nil {
		t.Fatalf("disable with X-MFA-Token: %d %s", r.Status, r.Body)
	}
	if st.Enabled || st.Factors != 0 || st.RecoveryCodesRemaining != 0 {
		t.Fatalf("state after disabling %+v", st)
	}
	evs := s.rec.WaitTypes(t, "bob", events.RecoveryGenerated, events.FactorsReset)
	var reset events.Reset
	if err := json.Unmarshal(evs[len(evs)-1].Data, &reset); err != nil || reset.Reason != "user_disabled" || reset.Actor != "bob" || reset.DevicesRemoved != 1 || !reset.RecoveryCodesRemoved {
		t.Fatalf("mfa.factors.reset %+v %v", reset, err)
	}
	// The proof is spent: a sign-in with it cannot change factors again.
	s.clock.Advance(time.Second) // an enrollment begun in the reset's very millisecond is void
	s.enrollDevice(t, bob)       // bob's first factor again needs no step-up
	s.MustProblem(t, s.Do(t, http.MethodPost, "/verification-srv/mfa/disable", bob, nil, "X-MFA-Token", proof), http.StatusForbidden, "step_up_required")
}

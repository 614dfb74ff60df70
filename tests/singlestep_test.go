package tests_test

import (
	"encoding/json"
	"net/http"
	"testing"

	"github.com/mfaflow/mfaflow/events"
)

// TestSingleStepVerification: Keystone's "all methods in one request" and privacyIDEA's
// validate/check: a login service sends sub and the user's code to …/verification without an
// exchange and gets AUTHENTICATED and an mfa_token in one round trip, with the usual events; a
// wrong code ends that sign-in FAILED and counts toward the lockout; only service tokens may, and
// only with codes the user already has.
func TestSingleStepVerification(t *testing.T) {
	s := startSignIn(t, map[string]string{"MFA_LOCKOUT_THRESHOLD": "3"})
	carol := s.token(t, "carol", "", "")
	secret := s.enrollDevice(t, carol)
	idp := s.token(t, "login-service", "mfa:verify", "shop")
	s.nextStep()

	verifyOnce := func(token, method, sub, code string) (int, authResult, []byte) {
		r := s.Do(t, http.MethodPost, "/verification-srv/authentication/"+method+"/verification", token,
			map[string]string{"sub": sub, "pass_code": code})
		var res authResult
		_ = json.Unmarshal(r.Body, &res)
		return r.Status, res, r.Body
	}
	status, res, body := verifyOnce(idp, "totp", "carol", s.code(t, secret))
	if status != http.StatusOK || res.Status != "AUTHENTICATED" || res.MFAToken == "" || res.PHID == "" {
		t.Fatalf("single step: %d %s", status, body)
	}
	claims := s.verifyMFAToken(t, res.MFAToken, "shop")
	if claims["sub"] != "carol" {
		t.Errorf("mfa_token sub %v", claims["sub"])
	}
	s.rec.WaitTypes(t, res.StatusID, events.VerificationInitiated, events.VerificationSucceeded)

	// The same code again is a replay; a wrong one fails its sign-in and counts.
	s.MustProblem(t, s.Do(t, http.MethodPost, "/verification-srv/authentication/totp/verification", idp,
		map[string]string{"sub": "carol", "pass_code": s.code(t, secret)}), http.StatusBadRequest, "code_replayed")
	s.nextStep()
	wrong := wrongCode(s.code(t, secret))
	r := s.Do(t, http.MethodPost, "/verification-srv/authentication/totp/verification", idp, map[string]string{"sub": "carol", "pass_code": wrong})
	s.MustProblem(t, r, http.StatusBadRequest, "invalid_code")
	var failed []events.Verification
	for _, ev := range s.rec.All() {
		if ev.Type == events.VerificationFailed {
			var v events.Verification
			if err := json.Unmarshal(ev.Data, &v); err == nil && v.Sub == "carol" {
				failed = append(failed, v)
			}
		}
	}
	if len(failed) == 0 || failed[len(failed)-1].Status != "FAILED" {
		t.Fatalf("the refused single step's event: %+v", failed)
	}
	s.MustProblem(t, s.Do(t, http.MethodPost, "/verification-srv/authentication/totp/verification", idp, map[string]string{"sub": "carol", "pass_code": wrong}), http.StatusBadRequest, "invalid_code")
	s.MustProblem(t, s.Do(t, http.MethodPost, "/verification-srv/authentication/totp/verification", idp, map[string]string{"sub": "carol", "pass_code": wrong}), http.StatusTooManyRequests, "locked")

	// Only a service token, only codes the user already has.
	s.MustProblem(t, s.Do(t, http.MethodPost, "/verification-srv/authentication/totp/verification", carol,
		map[string]string{"sub": "carol", "pass_code": "123456"}), http.StatusForbidden, "forbidden")
	s.MustProblem(t, s.Do(t, http.MethodPost, "/verification-srv/authentication/email/verification", idp,
		map[string]string{"sub": "carol", "pass_code": "123456"}), http.StatusBadRequest, "bad_request")
}

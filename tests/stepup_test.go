package tests_test

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/mfaflow/mfaflow/tests/harness"
)

const initiateTOTP = "/verification-srv/v2/setup/initiate/totp?qr=none"

// stepUp signs sub in again with their own Bearer token ("usage_type":"STEP_UP") and a TOTP
// code of secret, moving to a fresh time step first (the last code is spent), and returns the
// mfa_token a frontend sends as X-MFA-Token.
func (s *signIn) stepUp(t *testing.T, token, secret string) string {
	t.Helper()
	s.nextStep()
	in := s.startAuth(t, token, "totp", map[string]string{"usage_type": "STEP_UP"})
	var out authResult
	r := s.verify(t, token, "totp", in.ExchangeID.ExchangeID, s.code(t, secret))
	if r.Status != http.StatusOK {
		t.Fatalf("step-up verification: %d %s", r.Status, r.Body)
	}
	if err := json.Unmarshal(r.Body, &out); err != nil || out.MFAToken == "" {
		t.Fatalf("step-up answer without mfa_token: %s (%v)", r.Body, err)
	}
	return out.MFAToken
}

// enrollWith enrolls a TOTP device with an X-MFA-Token and returns its secret.
func (s *signIn) enrollWith(t *testing.T, token, mfaToken string) string {
	t.Helper()
	r := s.Do(t, http.MethodPost, initiateTOTP, token, nil, "X-MFA-Token", mfaToken)
	if r.Status != http.StatusOK {
		t.Fatalf("initiation with X-MFA-Token: %d %s", r.Status, r.Body)
	}
	var in initiateResponse
	if err := json.Unmarshal(r.Body, &in); err != nil {
		t.Fatal(err)
	}
	s.MustJSON(t, http.MethodPost, "/verification-srv/v2/setup/enroll/totp", token,
		map[string]string{"exchange_id": in.ExchangeID.ExchangeID, "verification_code": s.code(t, in.TOTPSecret)}, http.StatusOK, nil)
	return in.TOTPSecret
}

func (s *signIn) deviceIDs(t *testing.T, token string) []string {
	t.Helper()
	var devs []struct {
		PHID string `json:"ph_id"`
	}
	s.MustJSON(t, http.MethodGet, "/device-srv/devices", token, nil, http.StatusOK, &devs)
	var ids []string
	for _, d := range devs {
		ids = append(ids, d.PHID)
	}
	return ids
}

// requireStepUp requires 403 step_up_required.
func requireStepUp(t *testing.T, st *harness.Stack, r harness.Response, what string) {
	t.Helper()
	if r.Status != http.StatusForbidden {
		t.Fatalf("%s: want 403 step_up_required, got %d %s", what, r.Status, r.Body)
	}
	st.MustProblem(t, r, http.StatusForbidden, "step_up_required")
}

// TestStepUpGuardsFactorChanges replays the security test's findings with a stolen session
// (alice's Bearer token alone): once alice has a device, it can neither make recovery codes,
// nor enroll a device of its own, nor remove alice's devices. With a fresh mfa_token from a
// STEP_UP sign-in each change works, and each token works once.
func TestStepUpGuardsFactorChanges(t *testing.T) {
	s := startSignIn(t, nil)
	alice := s.Token(t, "alice")

	// The first factor needs no step-up.
	secret := s.enrollDevice(t, alice)
	first := s.deviceIDs(t, alice)
	if len(first) != 1 {
		t.Fatalf("devices after the first enrollment: %v", first)
	}

	// A stolen session alone is refused everything that changes factors.
	requireStepUp(t, s.Stack, s.Do(t, http.MethodPost, "/verification-srv/backupcodes", alice, nil), "recovery codes without X-MFA-Token")
	requireStepUp(t, s.Stack, s.Do(t, http.MethodPost, initiateTOTP, alice, nil), "second enrollment without X-MFA-Token")
	requireStepUp(t, s.Stack, s.Do(t, http.MethodPost, "/verification-actions-srv/setup/totp/initiation?qr=none", alice, nil), "second enrollment (actions route)")
	requireStepUp(t, s.Stack, s.Do(t, http.MethodDelete, "/device-srv/devices/"+first[0], alice, nil), "removal without X-MFA-Token")
	requireStepUp(t, s.Stack, s.Do(t, http.MethodPost, initiateTOTP, alice, nil, "X-MFA-Token", "not-a-token"), "garbage X-MFA-Token")
	// Alice's own Bearer token is not an mfa_token either.
	requireStepUp(t, s.Stack, s.Do(t, http.MethodPost, initiateTOTP, alice, nil, "X-MFA-Token", alice), "Bearer token as X-MFA-Token")
	if got := s.deviceIDs(t, alice); len(got) != 1 || got[0] != first[0] {
		t.Fatalf("a refused removal changed the devices: %v", got)
	}
	var rc struct {
		Remaining int `json:"remaining"`
	}
	s.MustJSON(t, http.MethodGet, "/verification-srv/backupcodes", alice, nil, http.StatusOK, &rc)
	if rc.Remaining != 0 {
		t.Fatalf("a refused generation made recovery codes: %+v", rc)
	}

	// A STEP_UP sign-in with alice's own token gives the proof; it works once.
	proof := s.stepUp(t, alice, secret)
	second := s.enrollWith(t, alice, proof)
	requireStepUp(t, s.Stack, s.Do(t, http.MethodPost, "/verification-srv/backupcodes", alice, nil, "X-MFA-Token", proof), "a spent X-MFA-Token")
	if got := s.deviceIDs(t, alice); len(got) != 2 {
		t.Fatalf("devices after the second enrollment: %v", got)
	}

	// Another user's mfa_token proves nothing about alice.
	bob := s.Token(t, "bob")
	bobSecret := s.enrollDevice(t, bob)
	bobProof := s.stepUp(t, bob, bobSecret)
	requireStepUp(t, s.Stack, s.Do(t, http.MethodPost, "/verification-srv/backupcodes", alice, nil, "X-MFA-Token", bobProof), "bob's mfa_token for alice")

	// Recovery codes and removal, each with a proof of its own.
	r := s.Do(t, http.MethodPost, "/verification-srv/backupcodes", alice, nil, "X-MFA-Token", s.stepUp(t, alice, second))
	if r.Status != http.StatusCreated {
		t.Fatalf("recovery codes with a fresh X-MFA-Token: %d %s", r.Status, r.Body)
	}
	r = s.Do(t, http.MethodDelete, "/device-srv/devices/"+first[0], alice, nil, "X-MFA-Token", s.stepUp(t, alice, second))
	if r.Status != http.StatusNoContent {
		t.Fatalf("removal with a fresh X-MFA-Token: %d %s", r.Status, r.Body)
	}
	if got := s.deviceIDs(t, alice); len(got) != 1 || got[0] == first[0] {
		t.Fatalf("devices after the removal: %v", got)
	}
}

// TestStepUpProofAges: an mfa_token whose sign-in is older than MFA_STEP_UP_MAX_AGE is refused
// even while the token itself has not expired; one used in a sign-in that is not finished
// proves nothing.
func TestStepUpProofAges(t *testing.T) {
	s := startSignIn(t, map[string]string{"MFA_STEP_UP_MAX_AGE": "1m"})
	alice := s.Token(t, "alice")
	secret := s.enrollDevice(t, alice)
	proof := s.stepUp(t, alice, secret)
	s.clock.Advance(90 * time.Second) // the token lives 5 minutes; the proof 1
	r := s.Do(t, http.MethodPost, "/verification-srv/backupcodes", alice, nil, "X-MFA-Token", proof)
	requireStepUp(t, s.Stack, r, "a proof older than MFA_STEP_UP_MAX_AGE")
	if p := s.MustProblem(t, r, http.StatusForbidden, "step_up_required"); !strings.Contains(p.Detail, "too old") {
		t.Fatalf("the refusal does not say the sign-in is too old: %q", p.Detail)
	}
	r = s.Do(t, http.MethodPost, "/verification-srv/backupcodes", alice, nil, "X-MFA-Token", s.stepUp(t, alice, secret))
	if r.Status != http.StatusCreated {
		t.Fatalf("a fresh proof: %d %s", r.Status, r.Body)
	}
}

// TestStepUpWithRecoveryCodesOnly: recovery codes are a factor too: a user whose only factor
// is a set of recovery codes needs a proof (a sign-in with one of them) for a new set or a
// device; the first set needs none.
func TestStepUpWithRecoveryCodesOnly(t *testing.T) {
	s := startSignIn(t, nil)
	carol := s.Token(t, "carol")
	var set struct {
		Codes []string `json:"codes"`
	}
	s.MustJSON(t, http.MethodPost, "/verification-srv/backupcodes", carol, nil, http.StatusCreated, &set)
	requireStepUp(t, s.Stack, s.Do(t, http.MethodPost, "/verification-srv/backupcodes", carol, nil), "a second set without X-MFA-Token")
	requireStepUp(t, s.Stack, s.Do(t, http.MethodPost, initiateTOTP, carol, nil), "a device without X-MFA-Token")

	in := s.startAuth(t, carol, "backupcode", map[string]string{"usage_type": "STEP_UP"})
	var out authResult
	r := s.verify(t, carol, "backupcode", in.ExchangeID.ExchangeID, set.Codes[0])
	if r.Status != http.StatusOK || json.Unmarshal(r.Body, &out) != nil || out.MFAToken == "" {
		t.Fatalf("step-up with a recovery code: %d %s", r.Status, r.Body)
	}
	s.enrollWith(t, carol, out.MFAToken)
}

// TestStepUpOff: MFA_STEP_UP=off leaves factor changes to the identity provider.
func TestStepUpOff(t *testing.T) {
	s := startSignIn(t, map[string]string{"MFA_STEP_UP": "off"})
	alice := s.Token(t, "alice")
	s.enrollDevice(t, alice)
	s.nextStep()
	s.enrollDevice(t, alice)
	s.MustJSON(t, http.MethodPost, "/verification-srv/backupcodes", alice, nil, http.StatusCreated, nil)
	ids := s.deviceIDs(t, alice)
	if len(ids) != 2 {
		t.Fatalf("devices: %v", ids)
	}
	if r := s.Do(t, http.MethodDelete, "/device-srv/devices/"+ids[0], alice, nil); r.Status != http.StatusNoContent {
		t.Fatalf("removal with step-up off: %d %s", r.Status, r.Body)
	}
}

// TestSignInBelongsToItsStarter: a sign-in a service started for alice answers only that
// service (same sub, same client_id, scope mfa:verify): another client of the same service
// account, the same account without the scope, and alice herself get 404 on its status, its
// verification and its cancel, and never its mfa_token.
func TestSignInBelongsToItsStarter(t *testing.T) {
	s := startSignIn(t, nil)
	alice := s.Token(t, "alice")
	secret := s.enrollDevice(t, alice)
	s.nextStep()

	shop := s.token(t, "login-service", "mfa:verify", "shop")
	in := s.startAuth(t, shop, "totp", map[string]any{"sub": "alice"})
	status := "/verification-srv/verificationstatus/" + in.StatusID
	others := map[string]string{
		"another client of the service": s.token(t, "login-service", "mfa:verify", "evil"),
		"the service without its scope": s.token(t, "login-service", "", "shop"),
		"the user herself":              alice,
	}
	for _, tok := range others {
		s.MustProblem(t, s.Do(t, http.MethodGet, status, tok, nil), http.StatusNotFound, "not_found")
		s.MustProblem(t, s.verify(t, tok, "totp", in.ExchangeID.ExchangeID, s.code(t, secret)), http.StatusNotFound, "not_found")
		s.MustProblem(t, s.Do(t, http.MethodDelete, status, tok, nil), http.StatusNotFound, "not_found")
	}
	r := s.verify(t, shop, "totp", in.ExchangeID.ExchangeID, s.code(t, secret))
	var out authResult
	if r.Status != http.StatusOK || json.Unmarshal(r.Body, &out) != nil || out.MFAToken == "" {
		t.Fatalf("the starter's verification: %d %s", r.Status, r.Body)
	}
	for who, tok := range others {
		if r := s.Do(t, http.MethodGet, status, tok, nil); r.Status != http.StatusNotFound || strings.Contains(string(r.Body), "mfa_token") {
			t.Fatalf("%s reads the finished sign-in: %d %s", who, r.Status, r.Body)
		}
	}
	var st struct {
		Status   string `json:"status"`
		MFAToken string `json:"mfa_token"`
	}
	s.MustJSON(t, http.MethodGet, status, shop, nil, http.StatusOK, &st)
	if st.Status != "AUTHENTICATED" || st.MFAToken == "" {
		t.Fatalf("the starter's poll: %+v", st)
	}
}

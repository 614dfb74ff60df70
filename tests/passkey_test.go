package tests_test

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"testing"
	"time"

	vw "github.com/descope/virtualwebauthn"
	"github.com/mfaflow/mfaflow/pkg/mongotest"
	"github.com/mfaflow/mfaflow/pkg/natstest"
	"github.com/mfaflow/mfaflow/pkg/testkit"
	"github.com/mfaflow/mfaflow/tests/harness"
)

// The frontend's origin in these tests: passkeys are bound to the RP ID localhost, and the
// browser (here descope/virtualwebauthn, a software authenticator) reports this origin.
const passkeyOrigin = "http://localhost:5173"

var passkeyRP = vw.RelyingParty{ID: "localhost", Name: "mfaflow", Origin: passkeyOrigin}

// passkeyEnv is a stack whose passkey settings work: the harness's public URL is the
// 127.0.0.1 stack URL, which cannot be an RP ID, so RP ID and origins are set.
func passkeyEnv(backend string, t *testing.T) map[string]string {
	env := map[string]string{"MFA_POLL_RATE": "0", "MFA_WEBAUTHN_RP_ID": "localhost", "MFA_WEBAUTHN_ORIGINS": passkeyOrigin, "MFA_LOCKOUT_THRESHOLD": "3"}
	if backend == "mongo" {
		env["MFA_STORE"], env["MFA_MONGODB_URI"] = "mongo", mongotest.DatabaseURI(t)
	}
	return env
}

type passkeyStart struct {
	ExchangeID struct {
		ExchangeID string `json:"exchange_id"`
	} `json:"exchange_id"`
	StatusID  string          `json:"status_id"`
	Type      string          `json:"type"`
	PublicKey json.RawMessage `json:"public_key"`
}

// initiatePasskey starts a passkey enrollment and returns it with its creation options.
func (s *signIn) initiatePasskey(t *testing.T, tok string, header ...string) (passkeyStart, vw.AttestationOptions) {
	t.Helper()
	var in passkeyStart
	r := s.Do(t, http.MethodPost, "/verification-srv/v2/setup/initiate/webauthn", tok, map[string]string{}, header...)
	if r.Status != http.StatusOK || json.Unmarshal(r.Body, &in) != nil || in.Type != "WEBAUTHN" || len(in.PublicKey) == 0 {
		t.Fatalf("initiate webauthn: %d %s", r.Status, r.Body)
	}
	opts, err := vw.ParseAttestationOptions(string(in.PublicKey))
	if err != nil {
		t.Fatalf("creation options %s: %v", in.PublicKey, err)
	}
	return in, *opts
}

func (s *signIn) enrollPasskey(t *testing.T, tok, exchangeID, credential string) harness.Response {
	t.Helper()
	return s.Do(t, http.MethodPost, "/verification-srv/v2/setup/enroll/webauthn", tok,
		map[string]any{"exchange_id": exchangeID, "credential": json.RawMessage(credential)})
}

// startPasskeySignIn starts a passkey sign-in and returns it with its request options.
func (s *signIn) startPasskeySignIn(t *testing.T, tok string) (passkeyStart, vw.AssertionOptions) {
	t.Helper()
	var in passkeyStart
	s.MustJSON(t, http.MethodPost, "/verification-srv/authentication/webauthn/initiation", tok, map[string]string{}, http.StatusOK, &in)
	opts, err := vw.ParseAssertionOptions(string(in.PublicKey))
	if err != nil {
		t.Fatalf("request options %s: %v", in.PublicKey, err)
	}
	return in, *opts
}

func (s *signIn) verifyPasskey(t *testing.T, tok, exchangeID, credential string) harness.Response {
	t.Helper()
	return s.Do(t, http.MethodPost, "/verification-srv/authentication/webauthn/verification", tok,
		map[string]any{"exchange_id": exchangeID, "credential": json.RawMessage(credential)})
}

// passkeyDevices are the user's WEBAUTHN devices.
func (s *signIn) passkeyDevices(t *testing.T, tok string) []map[string]any {
	t.Helper()
	var all []map[string]any
	s.MustJSON(t, http.MethodGet, "/device-srv/devices", tok, nil, http.StatusOK, &all)
	var out []map[string]any
	for _, d := range all {
		if d["type"] == "WEBAUTHN" {
			out = append(out, d)
		}
	}
	return out
}

// tamper flips the last byte of the base64url field name of the response JSON's "response".
func tamper(t *testing.T, credential, field string) string {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal([]byte(credential), &m); err != nil {
		t.Fatal(err)
	}
	resp := m["response"].(map[string]any)
	b, err := base64.RawURLEncoding.DecodeString(resp[field].(string))
	if err != nil {
		t.Fatal(err)
	}
	b[len(b)-1] ^= 0x01
	resp[field] = base64.RawURLEncoding.EncodeToString(b)
	out, _ := json.Marshal(m)
	return string(out)
}

// enrolledPasskey enrolls a passkey for user and returns the user's token, the authenticator and
// its credential.
func enrolledPasskey(t *testing.T, s *signIn, user string, opts vw.AuthenticatorOptions) (string, vw.Authenticator, vw.Credential) {
	t.Helper()
	tok := s.token(t, user, "", "")
	in, options := s.initiatePasskey(t, tok)
	auth := vw.NewAuthenticatorWithOptions(opts)
	cred := vw.NewCredentialWithImportedKey(vw.KeyTypeEC2, testkit.PasskeyKey())
	var st struct {
		Status string `json:"status"`
		PHID   string `json:"ph_id"`
		Type   string `json:"type"`
	}
	r := s.enrollPasskey(t, tok, in.ExchangeID.ExchangeID, vw.CreateAttestationResponse(passkeyRP, auth, cred, options))
	if r.Status != http.StatusOK || json.Unmarshal(r.Body, &st) != nil || st.Status != "ENROLLED" || st.PHID == "" || st.Type != "WEBAUTHN" {
		t.Fatalf("enroll passkey: %d %s", r.Status, r.Body)
	}
	auth.AddCredential(cred)
	return tok, auth, cred
}

// TestPasskeyEnrollmentAndSignIn: a passkey is enrolled and signs in on both backends; amr says
// hwk, plus user when the authenticator verified the user.
func TestPasskeyEnrollmentAndSignIn(t *testing.T) {
	for _, backend := range []string{"nats", "mongo"} {
		t.Run(backend, func(t *testing.T) {
			s := startSignIn(t, passkeyEnv(backend, t))
			tok, auth, cred := enrolledPasskey(t, s, "alice", vw.AuthenticatorOptions{BackupEligible: true, BackupState: true})
			devs := s.passkeyDevices(t, tok)
			if len(devs) != 1 || devs[0]["friendly_name"] != "Passkey" || devs[0]["backed_up"] != true || devs[0]["aaguid"] == "" {
				t.Fatalf("device list: %v", devs)
			}

			in, options := s.startPasskeySignIn(t, tok)
			if len(options.AllowCredentials) != 1 || options.AllowCredentials[0] != base64.RawURLEncoding.EncodeToString(cred.ID) {
				t.Fatalf("allowCredentials %v", options.AllowCredentials)
			}
			assertion := vw.CreateAssertionResponse(passkeyRP, auth, cred, options)
			var res authResult
			r := s.verifyPasskey(t, tok, in.ExchangeID.ExchangeID, assertion)
			if r.Status != http.StatusOK || json.Unmarshal(r.Body, &res) != nil || res.Status != "AUTHENTICATED" || res.MFAToken == "" {
				t.Fatalf("passkey verification: %d %s", r.Status, r.Body)
			}
			if amr := fmt.Sprint(s.verifyMFAToken(t, res.MFAToken, "alice")["amr"]); amr != "[hwk user]" {
				t.Errorf("amr %s, want [hwk user]", amr)
			}
			// The same assertion again: the challenge is spent.
			s.MustProblem(t, s.verifyPasskey(t, tok, in.ExchangeID.ExchangeID, assertion), http.StatusBadRequest, "invalid_credential")

			// Without user verification: hwk only.
			bob, bobAuth, bobCred := enrolledPasskey(t, s, "bob", vw.AuthenticatorOptions{UserNotVerified: true})
			in, options = s.startPasskeySignIn(t, bob)
			r = s.verifyPasskey(t, bob, in.ExchangeID.ExchangeID, vw.CreateAssertionResponse(passkeyRP, bobAuth, bobCred, options))
			if r.Status != http.StatusOK || json.Unmarshal(r.Body, &res) != nil {
				t.Fatalf("passkey verification without UV: %d %s", r.Status, r.Body)
			}
			if amr := fmt.Sprint(s.verifyMFAToken(t, res.MFAToken, "bob")["amr"]); amr != "[hwk]" {
				t.Errorf("amr %s, want [hwk]", amr)
			}

			// A keyed initiation sent again (its first answer lost) answers the same request
			// options, and an assertion made from the retry's answer signs in.
			key := "passkey-retry-" + backend
			var first, again passkeyStart
			for _, out := range []*passkeyStart{&first, &again} {
				r := s.Do(t, http.MethodPost, "/verification-srv/authentication/webauthn/initiation", tok, map[string]string{}, "Idempotency-Key", key)
				if r.Status != http.StatusOK || json.Unmarshal(r.Body, out) != nil {
					t.Fatalf("keyed initiation: %d %s", r.Status, r.Body)
				}
			}
			if again.StatusID != first.StatusID || len(again.PublicKey) == 0 || !bytes.Equal(again.PublicKey, first.PublicKey) {
				t.Fatalf("keyed retry: %s %s, want %s %s", again.StatusID, again.PublicKey, first.StatusID, first.PublicKey)
			}
			retried, err := vw.ParseAssertionOptions(string(again.PublicKey))
			if err != nil {
				t.Fatal(err)
			}
			if r := s.verifyPasskey(t, tok, again.ExchangeID.ExchangeID, vw.CreateAssertionResponse(passkeyRP, auth, cred, *retried)); r.Status != http.StatusOK {
				t.Fatalf("sign-in with the retry's options: %d %s", r.Status, r.Body)
			}
		})
	}
}

// TestPasskeyRegistrationRefusals: every registration response that does not verify is 400
// invalid_credential, and nothing is stored.
func TestPasskeyRegistrationRefusals(t *testing.T) {
	s := startSignIn(t, passkeyEnv("nats", t))
	fresh := func(rp vw.RelyingParty, change func(string) string) harness.Response {
		tok := s.token(t, "reg-"+fmt.Sprint(time.Now().UnixNano()), "", "")
		in, options := s.initiatePasskey(t, tok)
		resp := vw.CreateAttestationResponse(rp, vw.NewAuthenticator(), vw.NewCredentialWithImportedKey(vw.KeyTypeEC2, testkit.PasskeyKey()), options)
		if change != nil {
			resp = change(resp)
		}
		r := s.enrollPasskey(t, tok, in.ExchangeID.ExchangeID, resp)
		if n := len(s.passkeyDevices(t, tok)); n != 0 {
			t.Errorf("a refused registration stored %d passkeys", n)
		}
		return r
	}
	for name, r := range map[string]func() harness.Response{
		"WrongOrigin": func() harness.Response {
			return fresh(vw.RelyingParty{ID: "localhost", Origin: "https://evil.example"}, nil)
		},
		"WrongRPID": func() harness.Response {
			return fresh(vw.RelyingParty{ID: "example.org", Origin: passkeyOrigin}, nil)
		},
		"TamperedAttestation": func() harness.Response {
			return fresh(passkeyRP, func(c string) string { return tamper(t, c, "attestationObject") })
		},
		"TamperedClientData": func() harness.Response {
			return fresh(passkeyRP, func(c string) string { return tamper(t, c, "clientDataJSON") })
		},
	} {
		t.Run(name, func(t *testing.T) { s.MustProblem(t, r(), http.StatusBadRequest, "invalid_credential") })
	}
	t.Run("ForeignChallenge", func(t *testing.T) {
		tok := s.token(t, "carol", "", "")
		_, optionsA := s.initiatePasskey(t, tok)
		b, _ := s.initiatePasskey(t, tok)
		resp := vw.CreateAttestationResponse(passkeyRP, vw.NewAuthenticator(), vw.NewCredentialWithImportedKey(vw.KeyTypeEC2, testkit.PasskeyKey()), optionsA)
		s.MustProblem(t, s.enrollPasskey(t, tok, b.ExchangeID.ExchangeID, resp), http.StatusBadRequest, "invalid_credential")
		if n := len(s.passkeyDevices(t, tok)); n != 0 {
			t.Errorf("stored %d passkeys", n)
		}
	})
	t.Run("Replayed", func(t *testing.T) {
		tok := s.token(t, "dave", "", "")
		in, options := s.initiatePasskey(t, tok)
		resp := vw.CreateAttestationResponse(passkeyRP, vw.NewAuthenticator(), vw.NewCredentialWithImportedKey(vw.KeyTypeEC2, testkit.PasskeyKey()), options)
		if r := s.enrollPasskey(t, tok, in.ExchangeID.ExchangeID, resp); r.Status != http.StatusOK {
			t.Fatalf("enroll: %d %s", r.Status, r.Body)
		}
		s.MustProblem(t, s.enrollPasskey(t, tok, in.ExchangeID.ExchangeID, resp), http.StatusBadRequest, "invalid_credential")
		if n := len(s.passkeyDevices(t, tok)); n != 1 {
			t.Errorf("%d passkeys after a replay, want 1", n)
		}
	})
}

// TestPasskeySignInRefusals: assertions that do not verify count toward the lockout; a counter
// that goes backwards is refused with mfa.verification.failed reason cloned_authenticator.
func TestPasskeySignInRefusals(t *testing.T) {
	s := startSignIn(t, passkeyEnv("nats", t))
	t.Run("ClonedAuthenticator", func(t *testing.T) {
		tok, auth, cred := enrolledPasskey(t, s, "erin", vw.AuthenticatorOptions{})
		cred.Counter = 5
		in, options := s.startPasskeySignIn(t, tok)
		if r := s.verifyPasskey(t, tok, in.ExchangeID.ExchangeID, vw.CreateAssertionResponse(passkeyRP, auth, cred, options)); r.Status != http.StatusOK {
			t.Fatalf("counter 5: %d %s", r.Status, r.Body)
		}
		cred.Counter = 2
		in, options = s.startPasskeySignIn(t, tok)
		s.MustProblem(t, s.verifyPasskey(t, tok, in.ExchangeID.ExchangeID, vw.CreateAssertionResponse(passkeyRP, auth, cred, options)), http.StatusBadRequest, "invalid_credential")
		natstest.Eventually(t, 10*time.Second, func() error {
			for _, ev := range s.rec.For(in.StatusID) {
				if ev.Type == "mfa.verification.failed" && bytes.Contains(ev.Data, []byte(`"reason":"cloned_authenticator"`)) {
					return nil
				}
			}
			return fmt.Errorf("no mfa.verification.failed with reason cloned_authenticator for %s", in.StatusID)
		})
	})
	t.Run("ForeignChallengeAndBadSignatureLock", func(t *testing.T) {
		tok, auth, cred := enrolledPasskey(t, s, "frank", vw.AuthenticatorOptions{})
		a, optionsA := s.startPasskeySignIn(t, tok)
		b, _ := s.startPasskeySignIn(t, tok)
		// A response made for sign-in a, sent to sign-in b.
		s.MustProblem(t, s.verifyPasskey(t, tok, b.ExchangeID.ExchangeID, vw.CreateAssertionResponse(passkeyRP, auth, cred, optionsA)), http.StatusBadRequest, "invalid_credential")
		// A bad signature.
		bad := tamper(t, vw.CreateAssertionResponse(passkeyRP, auth, cred, optionsA), "signature")
		s.MustProblem(t, s.verifyPasskey(t, tok, a.ExchangeID.ExchangeID, bad), http.StatusBadRequest, "invalid_credential")
		// The third failure reaches MFA_LOCKOUT_THRESHOLD=3: locked, and a right assertion waits.
		wrongOrigin := vw.CreateAssertionResponse(vw.RelyingParty{ID: "localhost", Origin: "https://evil.example"}, auth, cred, optionsA)
		s.MustProblem(t, s.verifyPasskey(t, tok, a.ExchangeID.ExchangeID, wrongOrigin), http.StatusTooManyRequests, "locked")
		s.MustProblem(t, s.verifyPasskey(t, tok, a.ExchangeID.ExchangeID, vw.CreateAssertionResponse(passkeyRP, auth, cred, optionsA)), http.StatusTooManyRequests, "locked")
	})
}

// TestPasskeysInactiveOnAnIPAddress: with the harness's public URL (http://127.0.0.1:…) and no
// RP ID set, passkeys cannot work: config/list says so and the routes answer 409.
func TestPasskeysInactiveOnAnIPAddress(t *testing.T) {
	s := startSignIn(t, nil)
	tok := s.token(t, "alice", "", "")
	var listed []struct {
		VerificationType string `json:"verificationType"`
		Active           bool   `json:"active"`
	}
	s.MustJSON(t, http.MethodGet, "/verification-srv/config/list", tok, nil, http.StatusOK, &listed)
	found := false
	for _, l := range listed {
		if l.VerificationType == "WEBAUTHN" {
			found = true
			if l.Active {
				t.Error("WEBAUTHN active with an IP address as RP ID")
			}
		}
	}
	if !found {
		t.Error("config/list does not list WEBAUTHN")
	}
	for _, path := range []string{"/verification-srv/v2/setup/initiate/webauthn", "/verification-srv/v2/setup/enroll/webauthn",
		"/verification-srv/authentication/webauthn/initiation", "/verification-srv/authentication/webauthn/verification"} {
		s.MustProblem(t, s.Do(t, http.MethodPost, path, tok, map[string]string{"exchange_id": "x"}), http.StatusConflict, "method_inactive")
	}
}

// TestPasskeyAccountName: the account name an authenticator shows and stores with a new passkey
// is the user's verified email where the token carries one, not an opaque sub; without one it is
// the sub.
func TestPasskeyAccountName(t *testing.T) {
	s := startSignIn(t, passkeyEnv("nats", t))
	var withEmail struct {
		Token string `json:"token"`
	}
	s.MustJSON(t, http.MethodPost, "/dev/token", "", map[string]string{"sub": "u-7f3a9c", "email": "ada@example.org"}, http.StatusOK, &withEmail)
	if _, options := s.initiatePasskey(t, withEmail.Token); options.UserName != "ada@example.org" || options.UserDisplayName != "ada@example.org" {
		t.Errorf("with a verified email: user name %q, display name %q", options.UserName, options.UserDisplayName)
	}
	if _, options := s.initiatePasskey(t, s.token(t, "u-42b1d0", "", "")); options.UserName != "u-42b1d0" {
		t.Errorf("without an email: user name %q, want the sub", options.UserName)
	}
}

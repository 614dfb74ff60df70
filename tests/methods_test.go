package tests_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	vw "github.com/descope/virtualwebauthn"
	"github.com/mfaflow/mfaflow/events"
	"github.com/mfaflow/mfaflow/events/method"
	"github.com/mfaflow/mfaflow/events/protocol"
	"github.com/mfaflow/mfaflow/pkg/natstest"
	"github.com/mfaflow/mfaflow/tests/harness"
)

// signInWith signs a fresh user in with a method, as a frontend does with the user's own token,
// and returns the sign-in's status id and mfa_token. Every registered method needs one: a method
// added to events/method without it fails TestEveryRegisteredMethod, which is the point.
var signInWith = map[string]func(t *testing.T, w *pushWorld, user string) (statusID, mfaToken string){
	method.TOTP: func(t *testing.T, w *pushWorld, user string) (string, string) {
		tok := w.token(t, user, "", "")
		secret := w.enrollDevice(t, tok)
		w.nextStep()
		in := w.startAuth(t, tok, "totp", nil)
		return in.StatusID, mfaTokenOf(t, w.verify(t, tok, "totp", in.ExchangeID.ExchangeID, w.code(t, secret)))
	},
	method.BackupCode: func(t *testing.T, w *pushWorld, user string) (string, string) {
		tok := w.token(t, user, "", "")
		var set struct{ Codes []string }
		w.MustJSON(t, http.MethodPost, "/verification-srv/backupcodes", tok, nil, http.StatusCreated, &set)
		in := w.startAuth(t, tok, "backupcode", nil)
		return in.StatusID, mfaTokenOf(t, w.verify(t, tok, "backupcode", in.ExchangeID.ExchangeID, set.Codes[0]))
	},
	method.Email: func(t *testing.T, w *pushWorld, user string) (string, string) {
		return signInWithSentCode(t, w, user, "email", map[string]string{"email": user + "@example.org"}, user+"@example.org")
	},
	method.SMS: func(t *testing.T, w *pushWorld, user string) (string, string) {
		return signInWithSentCode(t, w, user, "sms", map[string]string{"phone": "+43 664 1234567"}, "+436641234567")
	},
	method.Push: func(t *testing.T, w *pushWorld, user string) (string, string) {
		tok := w.token(t, user, "", "")
		phone := login(t, w.bridge2, w.enrollPushDevice(t, tok))
		in, number := w.startPush(t, tok)
		ch := nextChallenge(t, phone)
		if ack, err := phone.Respond(testCtx(t), ch.ChallengeID, protocol.DecisionApprove, number, ""); err != nil || ack.Status != "AUTHENTICATED" {
			t.Fatalf("approve: %+v %v", ack, err)
		}
		// The frontend learns the outcome by polling (or a live stream): a poll may be served
		// by a view a moment behind the device's answer, so it polls until AUTHENTICATED.
		var st struct {
			Status   string `json:"status"`
			MFAToken string `json:"mfa_token"`
		}
		natstest.Eventually(t, 10*time.Second, func() error {
			w.MustJSON(t, http.MethodGet, "/verification-srv/verificationstatus/"+in.StatusID, tok, nil, http.StatusOK, &st)
			if st.Status != "AUTHENTICATED" {
				return fmt.Errorf("status %s", st.Status)
			}
			return nil
		})
		return in.StatusID, st.MFAToken
	},
	// A passkey from descope/virtualwebauthn, the software authenticator passkey_test.go uses.
	// It does not verify the user, so amr is the registered [hwk]; user verification adds
	// "user" (TestPasskeyEnrollmentAndSignIn).
	method.WebAuthn: func(t *testing.T, w *pushWorld, user string) (string, string) {
		tok, auth, cred := enrolledPasskey(t, w.signIn, user, vw.AuthenticatorOptions{UserNotVerified: true})
		in, options := w.startPasskeySignIn(t, tok)
		return in.StatusID, mfaTokenOf(t, w.verifyPasskey(t, tok, in.ExchangeID.ExchangeID, vw.CreateAssertionResponse(passkeyRP, auth, cred, options)))
	},
}

// walkEnv makes every registered method usable on the walk's stack: passkeys need an RP ID the
// harness's 127.0.0.1 public URL cannot give, and the origin the virtual authenticator signs.
var walkEnv = map[string]string{"MFA_WEBAUTHN_RP_ID": "localhost", "MFA_WEBAUTHN_ORIGINS": passkeyOrigin}

// signInWithSentCode enrolls an address of a method whose codes are sent (route email or sms)
// with the code from the dev inbox, then signs in with the next one.
func signInWithSentCode(t *testing.T, w *pushWorld, user, route string, body map[string]string, to string) (string, string) {
	tok := w.token(t, user, "", "")
	var in struct {
		ExchangeID struct {
			ExchangeID string `json:"exchange_id"`
		} `json:"exchange_id"`
	}
	before := len(w.inbox(t, to))
	w.MustJSON(t, http.MethodPost, "/verification-srv/v2/setup/initiate/"+route, tok, body, http.StatusOK, &in)
	w.MustJSON(t, http.MethodPost, "/verification-srv/v2/setup/enroll/"+route, tok,
		map[string]string{"exchange_id": in.ExchangeID.ExchangeID, "verification_code": w.nextCode(t, to, before)}, http.StatusOK, nil)
	auth := w.startAuth(t, tok, route, nil)
	return auth.StatusID, mfaTokenOf(t, w.verify(t, tok, route, auth.ExchangeID.ExchangeID, w.nextCode(t, to, before+1)))
}

// mfaTokenOf is the mfa_token of a verification answer, which must be 200.
func mfaTokenOf(t *testing.T, r harness.Response) string {
	t.Helper()
	var out authResult
	if r.Status != http.StatusOK || json.Unmarshal(r.Body, &out) != nil {
		t.Fatalf("verification: %d %s", r.Status, r.Body)
	}
	return out.MFAToken
}

// TestEveryRegisteredMethod walks every method of events/method through what its registration
// drives: config/list lists it, the OpenAPI document names it where a client reads method names,
// its sign-in route takes it, a sign-in with it earns an mfa_token whose amr is the registered
// one, and its verification events name it.
func TestEveryRegisteredMethod(t *testing.T) {
	w := startPushWorld(t, walkEnv)
	var listed []struct {
		VerificationType string `json:"verificationType"`
		Active           bool   `json:"active"`
	}
	w.MustJSON(t, http.MethodGet, "/verification-srv/config/list", w.token(t, "lister", "", ""), nil, http.StatusOK, &listed)
	doc := openAPIDoc(t)
	for _, m := range method.All() {
		t.Run(m.Name, func(t *testing.T) {
			if !slices.ContainsFunc(listed, func(l struct {
				VerificationType string `json:"verificationType"`
				Active           bool   `json:"active"`
			}) bool {
				return l.VerificationType == m.Name && l.Active
			}) {
				t.Errorf("config/list %+v does not list %s as active", listed, m.Name)
			}
			for _, where := range []string{"Method.verificationType", "Status.type"} {
				if !slices.Contains(doc.enums[where], m.Name) {
					t.Errorf("the OpenAPI document's %s does not name %s", where, m.Name)
				}
			}
			if !slices.Contains(doc.examples["AuthMethod"], m.Route) {
				t.Errorf("the OpenAPI document's {method} does not name %s", m.Route)
			}
			if m.Enrolls && !slices.Contains(doc.examples["VerificationType"], m.Route) {
				t.Errorf("the OpenAPI document's {type} does not name %s", m.Route)
			}
			signIn, ok := signInWith[m.Name]
			if !ok {
				t.Fatalf("no sign-in for method %s in this test: add one", m.Name)
			}
			statusID, tok := signIn(t, w, "walk-"+m.Route)
			if tok == "" {
				t.Fatalf("a sign-in with %s earned no mfa_token", m.Name)
			}
			claims := w.verifyMFAToken(t, tok, "walk-"+m.Route)
			if fmt.Sprint(claims["amr"]) != fmt.Sprint(m.AMR) {
				t.Errorf("amr %v, want %v", claims["amr"], m.AMR)
			}
			natstest.Eventually(t, 10*time.Second, func() error {
				for _, ev := range w.rec.For(statusID) {
					if ev.Type == events.VerificationSucceeded {
						return nil
					}
				}
				return fmt.Errorf("no %s for %s", events.VerificationSucceeded, statusID)
			})
			for _, ev := range w.rec.For(statusID) {
				if !strings.HasPrefix(string(ev.Type), "mfa.verification.") {
					continue
				}
				var data events.Verification
				if err := json.Unmarshal(ev.Data, &data); err != nil || data.Method != m.Name {
					t.Errorf("%s event names method %q (%v), want %s", ev.Type, data.Method, err, m.Name)
				}
			}
		})
	}
}

// apiDocNames is what the OpenAPI document says about method names: the enums of schema
// properties and the examples of path parameters.
type apiDocNames struct {
	enums    map[string][]string // "Schema.property" → enum
	examples map[string][]string // parameter name → examples
}

func openAPIDoc(t *testing.T) apiDocNames {
	t.Helper()
	raw, err := os.ReadFile("../events/apidoc/openapi.json")
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		Components struct {
			Schemas map[string]struct {
				Properties map[string]struct {
					Enum []string `json:"enum"`
				} `json:"properties"`
			} `json:"schemas"`
			Parameters map[string]struct {
				Schema struct {
					Examples []string `json:"examples"`
				} `json:"schema"`
			} `json:"parameters"`
		} `json:"components"`
	}
	if err := json.Unmarshal(raw, &doc); err != nil {
		t.Fatal(err)
	}
	out := apiDocNames{enums: map[string][]string{}, examples: map[string][]string{}}
	for name, s := range doc.Components.Schemas {
		for prop, p := range s.Properties {
			out.enums[name+"."+prop] = p.Enum
		}
	}
	for name, p := range doc.Components.Parameters {
		out.examples[name] = p.Schema.Examples
	}
	return out
}

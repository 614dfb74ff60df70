package tests_test

import (
	"crypto/rand"
	"crypto/rsa"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/mfaflow/mfaflow/pkg/authtest"
	"github.com/mfaflow/mfaflow/pkg/fault"
	"github.com/mfaflow/mfaflow/tests/harness"
)

const strictIssuer, strictAudience = "https://idp.example", "mfaflow-dev"

// TestStrictTokensHS256: on the dev stack with a shared HS256 secret, hand-signed tokens whose
// claims are spelled in other cases, named twice, or whose times are strings get no further
// than a token signed with another key.
func TestStrictTokensHS256(t *testing.T) {
	key := []byte("strict-token-secret-strict-token-secret")
	st := harness.Start(t, harness.Options{}, map[string]string{
		"MFA_JWT_SECRET": string(key), "MFA_JWT_ISSUER": strictIssuer, "MFA_JWT_AUDIENCE": strictAudience,
	})
	checkStrictTokens(t, st, func(payload string) string { return authtest.MintRawHS256(t, key, payload) })
}

// TestStrictTokensJWKS: the same with the identity provider's RS256 tokens (MFA_JWT_JWKS_URL).
func TestStrictTokensJWKS(t *testing.T) {
	idp := authtest.NewProvider(t)
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	idp.Add("idp-1", key)
	st := harness.Start(t, harness.Options{}, map[string]string{
		"MFA_JWT_JWKS_URL": idp.URL, "MFA_JWT_ISSUER": strictIssuer, "MFA_JWT_AUDIENCE": strictAudience,
	})
	checkStrictTokens(t, st, func(payload string) string { return authtest.MintRaw(t, "idp-1", key, payload) })
}

// checkStrictTokens sends tokens signed by sign, with hand-written payloads, to an admin route
// and to a user's enrollment.
func checkStrictTokens(t *testing.T, st *harness.Stack, sign func(payload string) string) {
	t.Helper()
	now := time.Now().Unix()
	std := fmt.Sprintf(`"iss":%q,"aud":%q,"iat":%d,"exp":%d`, strictIssuer, strictAudience, now, now+3600)
	const admin = "/verification-srv/admin/users/alice/factors"

	// The crafting itself is sound: the same payload with a lower-case scope is an administrator.
	st.MustJSON(t, http.MethodGet, admin, sign(`{"sub":"ops","scope":"mfa:admin",`+std+`}`), nil, http.StatusOK, nil)

	t.Run("SCOPE is not scope", func(t *testing.T) {
		tok := sign(`{"sub":"mallory","SCOPE":"mfa:admin",` + std + `}`)
		st.MustProblem(t, st.Do(t, http.MethodGet, admin, tok, nil), http.StatusForbidden, string(fault.Forbidden))
	})
	t.Run("Sub is not sub", func(t *testing.T) {
		// A different key, so the token is valid; it speaks for attacker, never for alice.
		tok := sign(`{"sub":"attacker","Sub":"alice",` + std + `}`)
		in := initiate(t, st, tok, "?qr=none")
		if s := poll(t, st, tok, in.StatusID); s.Sub != "attacker" {
			t.Fatalf("the enrollment belongs to %q, want attacker", s.Sub)
		}
	})
	refused := map[string]string{
		"sub twice":            `{"sub":"mallory","scope":"mfa:admin","sub":"ops",` + std + `}`,
		"scope twice":          `{"sub":"mallory","scope":"openid","scope":"mfa:admin",` + std + `}`,
		"exp a string":         fmt.Sprintf(`{"sub":"ops","scope":"mfa:admin","iss":%q,"aud":%q,"exp":"%d"}`, strictIssuer, strictAudience, now+3600),
		"iat a string":         fmt.Sprintf(`{"sub":"ops","scope":"mfa:admin","iss":%q,"aud":%q,"iat":"%d","exp":%d}`, strictIssuer, strictAudience, now, now+3600),
		"nbf a string":         fmt.Sprintf(`{"sub":"ops","scope":"mfa:admin","iss":%q,"aud":%q,"nbf":"%d","exp":%d}`, strictIssuer, strictAudience, now, now+3600),
		"EXP in place of exp":  fmt.Sprintf(`{"sub":"ops","scope":"mfa:admin","iss":%q,"aud":%q,"EXP":%d}`, strictIssuer, strictAudience, now+3600),
		"Aud in place of aud":  fmt.Sprintf(`{"sub":"ops","scope":"mfa:admin","iss":%q,"Aud":%q,"exp":%d}`, strictIssuer, strictAudience, now+3600),
		"an unknown key twice": `{"sub":"ops","scope":"mfa:admin","x":1,"x":1,` + std + `}`,
	}
	for what, payload := range refused {
		t.Run(what, func(t *testing.T) {
			tok := sign(payload)
			st.MustProblem(t, st.Do(t, http.MethodGet, admin, tok, nil), http.StatusUnauthorized, string(fault.Unauthorized))
			st.MustProblem(t, st.Do(t, http.MethodPost, "/verification-srv/v2/setup/initiate/totp?qr=none", tok, nil),
				http.StatusUnauthorized, string(fault.Unauthorized))
		})
	}
}

// TestServiceTokenNeedsSub: a service token (scope mfa:verify) that starts a sign-in without
// naming the user in the body is a 400 saying sub is required, not a sign-in for the service
// itself; a user token naming nobody still acts for itself.
func TestServiceTokenNeedsSub(t *testing.T) {
	st := harness.Start(t, harness.Options{}, nil)
	token := func(sub, scope string) string {
		var out struct {
			Token string `json:"token"`
		}
		st.MustJSON(t, http.MethodPost, "/dev/token", "", map[string]string{"sub": sub, "scope": scope, "client_id": "shop"}, http.StatusOK, &out)
		return out.Token
	}
	const path = "/verification-srv/authentication/totp/initiation"
	service := token("login-service", "openid mfa:verify")
	p := st.MustProblem(t, st.Do(t, http.MethodPost, path, service, map[string]any{}), http.StatusBadRequest, string(fault.BadRequest))
	if !strings.Contains(p.Detail, "sub is required") {
		t.Fatalf("detail %q, want it to say sub is required", p.Detail)
	}
	st.MustProblem(t, st.Do(t, http.MethodPost, path, service, nil), http.StatusBadRequest, string(fault.BadRequest))
	// Naming the user, the service gets past ActingFor (the user has no factor yet).
	st.MustProblem(t, st.Do(t, http.MethodPost, path, service, map[string]any{"sub": "bob"}), http.StatusConflict, string(fault.NoFactor))
	// A user's own token without a sub still acts for the user.
	st.MustProblem(t, st.Do(t, http.MethodPost, path, token("bob", ""), map[string]any{}), http.StatusConflict, string(fault.NoFactor))
}

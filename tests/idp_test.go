package tests_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"net/http"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/mfaflow/mfaflow/pkg/auth"
	"github.com/mfaflow/mfaflow/pkg/authtest"
	"github.com/mfaflow/mfaflow/pkg/fault"
	"github.com/mfaflow/mfaflow/tests/harness"
)

// TestDevStackWithIdentityProvider runs the dev stack with MFA_JWT_JWKS_URL (plus audience and
// issuer) pointing at a real JWKS endpoint: every service takes the provider's tokens and
// refuses others, and POST /dev/token answers 404 dev_tokens_disabled as documented.
func TestDevStackWithIdentityProvider(t *testing.T) {
	const issuer, audience = "https://idp.example", "mfaflow-dev"
	idp := authtest.NewProvider(t)
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	idp.Add("idp-1", key)
	st := harness.Start(t, harness.Options{}, map[string]string{
		"MFA_JWT_JWKS_URL": idp.URL, "MFA_JWT_AUDIENCE": audience, "MFA_JWT_ISSUER": issuer,
	})
	claims := func(sub string, extra jwt.MapClaims) jwt.MapClaims {
		c := jwt.MapClaims{"sub": sub, "iss": issuer, "aud": audience, "exp": time.Now().Add(time.Hour).Unix()}
		for k, v := range extra {
			c[k] = v
		}
		return c
	}
	alice := authtest.Mint(t, "idp-1", key, claims("alice", nil))

	// The provider's token works on every service: initiation, status, device-registry.
	in := initiate(t, st, alice, "?qr=none")
	if s := poll(t, st, alice, in.StatusID); s.Status != "INITIATED" || s.Sub != "alice" {
		t.Fatalf("status = %+v", s)
	}
	var devices []map[string]any
	st.MustJSON(t, http.MethodGet, "/device-srv/devices", alice, nil, http.StatusOK, &devices)
	admin := authtest.Mint(t, "idp-1", key, claims("ops", jwt.MapClaims{"scope": "mfa:admin"}))
	st.MustJSON(t, http.MethodGet, "/verification-srv/admin/users/alice/factors", admin, nil, http.StatusOK, nil)

	// Anything else is refused, by each service.
	other, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	hs, err := auth.HS256{Key: []byte("dev-token-key-dev-token-key-0123456789")}.Mint("alice", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	refused := map[string]string{
		"another audience":   authtest.Mint(t, "idp-1", key, claims("alice", jwt.MapClaims{"aud": "other-app"})),
		"another issuer":     authtest.Mint(t, "idp-1", key, claims("alice", jwt.MapClaims{"iss": "https://evil.example"})),
		"an unknown key":     authtest.Mint(t, "idp-9", other, claims("alice", nil)),
		"an HS256 dev token": hs,
	}
	requests := []struct{ method, path string }{
		{http.MethodPost, "/verification-srv/v2/setup/initiate/totp?qr=none"},   // initiation
		{http.MethodGet, "/verification-srv/verificationstatus/" + in.StatusID}, // status
		{http.MethodGet, "/device-srv/devices"},                                 // device-registry
	}
	for what, tok := range refused {
		t.Run(what, func(t *testing.T) {
			for _, r := range requests {
				st.MustProblem(t, st.Do(t, r.method, r.path, tok, nil), http.StatusUnauthorized, string(fault.Unauthorized))
			}
		})
	}

	// No dev tokens: the route answers as documented, and the stack mints none for tests either.
	c := loadAPIContract(t)
	x := sendAPI(t, st, apiRequest{Method: http.MethodPost, Template: "/dev/token", Body: map[string]string{"sub": "alice"}})
	c.check(t, x)
	problemAPI(t, x, http.StatusNotFound, fault.DevTokensDisabled)
	if _, err := st.Stack.Token("alice"); err == nil {
		t.Fatal("the stack minted a token with an identity provider configured")
	}
}

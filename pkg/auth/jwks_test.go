package auth_test

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"slices"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/mfaflow/mfaflow/pkg/auth"
	"github.com/mfaflow/mfaflow/pkg/authtest"
)

func claims(sub string, extra map[string]any) jwt.MapClaims {
	c := jwt.MapClaims{"sub": sub, "iss": "https://idp.example", "aud": "mfaflow", "exp": time.Now().Add(time.Hour).Unix()}
	for k, v := range extra {
		c[k] = v
	}
	return c
}

func TestJWKSVerifiesProviderTokensAndFollowsRotation(t *testing.T) {
	p := authtest.NewProvider(t)
	rsaKey, _ := rsa.GenerateKey(rand.Reader, 2048)
	ecKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	_, edKey, _ := ed25519.GenerateKey(rand.Reader)
	p.Add("rsa-1", rsaKey)
	p.Add("ec-1", ecKey)
	p.Add("ed-1", edKey)
	v := &auth.JWKS{URL: p.URL, Issuer: "https://idp.example", Audience: "mfaflow", MinRefresh: time.Nanosecond}

	for kid, k := range map[string]crypto.Signer{"rsa-1": rsaKey, "ec-1": ecKey, "ed-1": edKey} {
		id, err := v.VerifyIdentity(authtest.Mint(t, kid, k, claims("alice", map[string]any{"scope": "openid mfa:verify", "client_id": "shop"})))
		if err != nil || id.Sub != "alice" || !id.HasScope(auth.ScopeVerify) || id.ClientID != "shop" {
			t.Fatalf("%s token: %+v %v", kid, id, err)
		}
	}
	// The scope as an array, as some providers send it.
	id, err := v.VerifyIdentity(authtest.Mint(t, "ec-1", ecKey, claims("ops", map[string]any{"scope": []string{"mfa:admin"}})))
	if err != nil || !slices.Equal(id.Scopes, []string{"mfa:admin"}) {
		t.Fatalf("array scope: %+v %v", id, err)
	}
	// Wrong audience, wrong issuer, expired, unknown key, tampered: refused.
	refused := map[string]string{
		"audience": authtest.Mint(t, "ec-1", ecKey, claims("alice", map[string]any{"aud": "other"})),
		"issuer":   authtest.Mint(t, "ec-1", ecKey, claims("alice", map[string]any{"iss": "https://evil.example"})),
		"expired":  authtest.Mint(t, "ec-1", ecKey, claims("alice", map[string]any{"exp": time.Now().Add(-time.Hour).Unix()})),
		"no exp":   authtest.Mint(t, "ec-1", ecKey, jwt.MapClaims{"sub": "alice", "iss": "https://idp.example", "aud": "mfaflow"}),
	}
	other, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	refused["unknown key"] = authtest.Mint(t, "ec-9", other, claims("alice", nil))
	refused["key of another kid"] = authtest.Mint(t, "ec-1", other, claims("alice", nil))
	hs := jwt.NewWithClaims(jwt.SigningMethodHS256, claims("alice", nil))
	hs.Header["kid"] = "ec-1"
	refused["HS256 with a public kid"], _ = hs.SignedString([]byte("0123456789abcdef0123456789abcdef"))
	for what, tok := range refused {
		if _, err := v.Verify(tok); err == nil {
			t.Errorf("%s: accepted", what)
		}
	}

	// Rotation mid-test: the provider adds a new key and drops the old one; a token of the new
	// kid makes the verifier fetch again, and the old kid stops working after the refresh.
	newKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	p.Add("ec-2", newKey)
	p.Remove("ec-1")
	before := p.Fetches()
	if _, err := v.Verify(authtest.Mint(t, "ec-2", newKey, claims("alice", nil))); err != nil {
		t.Fatalf("token of the rotated-in key: %v", err)
	}
	if p.Fetches() != before+1 {
		t.Fatalf("fetches %d → %d, want one refresh for the unknown kid", before, p.Fetches())
	}
	if _, err := v.Verify(authtest.Mint(t, "ec-1", ecKey, claims("alice", nil))); err == nil {
		t.Fatal("the retired key still verifies after the refresh")
	}
}

func TestJWKSRefreshIsRateLimited(t *testing.T) {
	p := authtest.NewProvider(t)
	k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	p.Add("ec-1", k)
	v := &auth.JWKS{URL: p.URL, MinRefresh: time.Hour}
	if _, err := v.Verify(authtest.Mint(t, "ec-1", k, jwt.MapClaims{"sub": "a", "exp": time.Now().Add(time.Hour).Unix()})); err != nil {
		t.Fatal(err)
	}
	for i := range 50 {
		bogus, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		_, _ = v.Verify(authtest.Mint(t, "made-up-"+string(rune('a'+i%26)), bogus, jwt.MapClaims{"sub": "a", "exp": time.Now().Add(time.Hour).Unix()}))
	}
	if n := p.Fetches(); n != 1 {
		t.Fatalf("%d fetches for 50 unknown kids within MinRefresh, want 1", n)
	}
}

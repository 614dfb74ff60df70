package auth_test

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"math/big"
	"net/http"
	"net/http/httptest"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/mfaflow/mfaflow/pkg/auth"
)

// provider is a real JWKS endpoint whose key set a test can rotate.
type provider struct {
	mu      sync.Mutex
	keys    map[string]crypto.Signer
	fetches atomic.Int32
	srv     *httptest.Server
}

func newProvider(t *testing.T) *provider {
	p := &provider{keys: map[string]crypto.Signer{}}
	p.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p.fetches.Add(1)
		p.mu.Lock()
		defer p.mu.Unlock()
		var set struct {
			Keys []map[string]string `json:"keys"`
		}
		for kid, k := range p.keys {
			set.Keys = append(set.Keys, jwkOf(kid, k.Public()))
		}
		_ = json.NewEncoder(w).Encode(set)
	}))
	t.Cleanup(p.srv.Close)
	return p
}

func enc(b []byte) string { return base64.RawURLEncoding.EncodeToString(b) }

func jwkOf(kid string, pub crypto.PublicKey) map[string]string {
	switch k := pub.(type) {
	case *rsa.PublicKey:
		return map[string]string{"kty": "RSA", "kid": kid, "use": "sig", "n": enc(k.N.Bytes()), "e": enc(big.NewInt(int64(k.E)).Bytes())}
	case *ecdsa.PublicKey:
		raw, _ := k.Bytes()
		return map[string]string{"kty": "EC", "kid": kid, "crv": "P-256", "x": enc(raw[1:33]), "y": enc(raw[33:])}
	case ed25519.PublicKey:
		return map[string]string{"kty": "OKP", "kid": kid, "crv": "Ed25519", "x": enc(k)}
	}
	panic("key type")
}

func (p *provider) add(kid string, k crypto.Signer) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.keys[kid] = k
}

func (p *provider) remove(kid string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	delete(p.keys, kid)
}

func mint(t *testing.T, kid string, k crypto.Signer, claims jwt.MapClaims) string {
	t.Helper()
	var m jwt.SigningMethod
	switch k.(type) {
	case *rsa.PrivateKey:
		m = jwt.SigningMethodRS256
	case *ecdsa.PrivateKey:
		m = jwt.SigningMethodES256
	case ed25519.PrivateKey:
		m = jwt.SigningMethodEdDSA
	}
	tok := jwt.NewWithClaims(m, claims)
	tok.Header["kid"] = kid
	s, err := tok.SignedString(k)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func claims(sub string, extra map[string]any) jwt.MapClaims {
	c := jwt.MapClaims{"sub": sub, "iss": "https://idp.example", "aud": "mfaflow", "exp": time.Now().Add(time.Hour).Unix()}
	for k, v := range extra {
		c[k] = v
	}
	return c
}

func TestJWKSVerifiesProviderTokensAndFollowsRotation(t *testing.T) {
	p := newProvider(t)
	rsaKey, _ := rsa.GenerateKey(rand.Reader, 2048)
	ecKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	_, edKey, _ := ed25519.GenerateKey(rand.Reader)
	p.add("rsa-1", rsaKey)
	p.add("ec-1", ecKey)
	p.add("ed-1", edKey)
	v := &auth.JWKS{URL: p.srv.URL, Issuer: "https://idp.example", Audience: "mfaflow", MinRefresh: time.Nanosecond}

	for kid, k := range map[string]crypto.Signer{"rsa-1": rsaKey, "ec-1": ecKey, "ed-1": edKey} {
		id, err := v.VerifyIdentity(mint(t, kid, k, claims("alice", map[string]any{"scope": "openid mfa:verify", "client_id": "shop"})))
		if err != nil || id.Sub != "alice" || !id.HasScope(auth.ScopeVerify) || id.ClientID != "shop" {
			t.Fatalf("%s token: %+v %v", kid, id, err)
		}
	}
	// The scope as an array, as some providers send it.
	id, err := v.VerifyIdentity(mint(t, "ec-1", ecKey, claims("ops", map[string]any{"scope": []string{"mfa:admin"}})))
	if err != nil || !slices.Equal(id.Scopes, []string{"mfa:admin"}) {
		t.Fatalf("array scope: %+v %v", id, err)
	}
	// Wrong audience, wrong issuer, expired, unknown key, tampered: refused.
	refused := map[string]string{
		"audience": mint(t, "ec-1", ecKey, claims("alice", map[string]any{"aud": "other"})),
		"issuer":   mint(t, "ec-1", ecKey, claims("alice", map[string]any{"iss": "https://evil.example"})),
		"expired":  mint(t, "ec-1", ecKey, claims("alice", map[string]any{"exp": time.Now().Add(-time.Hour).Unix()})),
		"no exp":   mint(t, "ec-1", ecKey, jwt.MapClaims{"sub": "alice", "iss": "https://idp.example", "aud": "mfaflow"}),
	}
	other, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	refused["unknown key"] = mint(t, "ec-9", other, claims("alice", nil))
	refused["key of another kid"] = mint(t, "ec-1", other, claims("alice", nil))
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
	p.add("ec-2", newKey)
	p.remove("ec-1")
	before := p.fetches.Load()
	if _, err := v.Verify(mint(t, "ec-2", newKey, claims("alice", nil))); err != nil {
		t.Fatalf("token of the rotated-in key: %v", err)
	}
	if p.fetches.Load() != before+1 {
		t.Fatalf("fetches %d → %d, want one refresh for the unknown kid", before, p.fetches.Load())
	}
	if _, err := v.Verify(mint(t, "ec-1", ecKey, claims("alice", nil))); err == nil {
		t.Fatal("the retired key still verifies after the refresh")
	}
}

func TestJWKSRefreshIsRateLimited(t *testing.T) {
	p := newProvider(t)
	k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	p.add("ec-1", k)
	v := &auth.JWKS{URL: p.srv.URL, MinRefresh: time.Hour}
	if _, err := v.Verify(mint(t, "ec-1", k, jwt.MapClaims{"sub": "a", "exp": time.Now().Add(time.Hour).Unix()})); err != nil {
		t.Fatal(err)
	}
	for i := range 50 {
		bogus, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		_, _ = v.Verify(mint(t, "made-up-"+string(rune('a'+i%26)), bogus, jwt.MapClaims{"sub": "a", "exp": time.Now().Add(time.Hour).Unix()}))
	}
	if n := p.fetches.Load(); n != 1 {
		t.Fatalf("%d fetches for 50 unknown kids within MinRefresh, want 1", n)
	}
}

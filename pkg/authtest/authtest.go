// Package authtest stands in for an identity provider in tests: a real HTTP server publishing a
// JWKS document with the public keys a test adds (and may rotate), and tokens signed with them.
package authtest

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"math/big"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/golang-jwt/jwt/v5"
)

// Provider is a JWKS endpoint. URL is the document's address (MFA_JWT_JWKS_URL).
type Provider struct {
	URL string

	mu      sync.Mutex
	keys    map[string]crypto.Signer
	fetches atomic.Int32
}

// NewProvider starts a provider with no keys; it stops when tb ends.
func NewProvider(tb testing.TB) *Provider {
	p := &Provider{keys: map[string]crypto.Signer{}}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p.fetches.Add(1)
		p.mu.Lock()
		defer p.mu.Unlock()
		var set struct {
			Keys []map[string]string `json:"keys"`
		}
		for kid, k := range p.keys {
			set.Keys = append(set.Keys, JWK(kid, k.Public()))
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(set)
	}))
	tb.Cleanup(srv.Close)
	p.URL = srv.URL + "/.well-known/jwks.json"
	return p
}

// Add publishes k's public key under kid.
func (p *Provider) Add(kid string, k crypto.Signer) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.keys[kid] = k
}

// Remove stops publishing kid.
func (p *Provider) Remove(kid string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	delete(p.keys, kid)
}

// Fetches is how often the document was fetched.
func (p *Provider) Fetches() int { return int(p.fetches.Load()) }

// JWK is the public key pub as a JWK with kid (RSA, EC P-256 or Ed25519).
func JWK(kid string, pub crypto.PublicKey) map[string]string {
	enc := base64.RawURLEncoding.EncodeToString
	switch k := pub.(type) {
	case *rsa.PublicKey:
		return map[string]string{"kty": "RSA", "kid": kid, "use": "sig", "n": enc(k.N.Bytes()), "e": enc(big.NewInt(int64(k.E)).Bytes())}
	case *ecdsa.PublicKey:
		raw, _ := k.Bytes()
		return map[string]string{"kty": "EC", "kid": kid, "crv": "P-256", "x": enc(raw[1:33]), "y": enc(raw[33:])}
	case ed25519.PublicKey:
		return map[string]string{"kty": "OKP", "kid": kid, "crv": "Ed25519", "x": enc(k)}
	}
	panic("authtest: unsupported key type")
}

// Mint signs claims with k (RS256, ES256 or EdDSA by its type), kid in the header.
func Mint(tb testing.TB, kid string, k crypto.Signer, claims jwt.MapClaims) string {
	tb.Helper()
	tok := jwt.NewWithClaims(signingMethod(tb, k), claims)
	tok.Header["kid"] = kid
	s, err := tok.SignedString(k)
	if err != nil {
		tb.Fatal(err)
	}
	return s
}

// MintRaw signs payload, a claims object written by hand, with k (RS256, ES256 or EdDSA by its
// type), kid in the header. It makes the tokens a JWT library never would: a claim named twice,
// a claim name in capitals, `exp` as a string.
func MintRaw(tb testing.TB, kid string, k crypto.Signer, payload string) string {
	tb.Helper()
	m := signingMethod(tb, k)
	return signRaw(tb, m, k, map[string]string{"alg": m.Alg(), "typ": "JWT", "kid": kid}, payload)
}

// MintRawHS256 signs payload, a claims object written by hand, with the shared HS256 key, as
// MintRaw does for a provider's keys.
func MintRawHS256(tb testing.TB, key []byte, payload string) string {
	tb.Helper()
	return signRaw(tb, jwt.SigningMethodHS256, key, map[string]string{"alg": "HS256", "typ": "JWT"}, payload)
}

func signRaw(tb testing.TB, m jwt.SigningMethod, key any, header map[string]string, payload string) string {
	tb.Helper()
	h, err := json.Marshal(header)
	if err != nil {
		tb.Fatal(err)
	}
	enc := base64.RawURLEncoding.EncodeToString
	signing := enc(h) + "." + enc([]byte(payload))
	sig, err := m.Sign(signing, key)
	if err != nil {
		tb.Fatal(err)
	}
	return signing + "." + enc(sig)
}

func signingMethod(tb testing.TB, k crypto.Signer) jwt.SigningMethod {
	tb.Helper()
	switch k.(type) {
	case *rsa.PrivateKey:
		return jwt.SigningMethodRS256
	case *ecdsa.PrivateKey:
		return jwt.SigningMethodES256
	case ed25519.PrivateKey:
		return jwt.SigningMethodEdDSA
	}
	tb.Fatalf("authtest: unsupported key type %T", k)
	return nil
}

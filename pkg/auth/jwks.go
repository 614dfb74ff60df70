package auth

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// JWKS verifies tokens of an identity provider against its published keys (RS256, ES256, ES384,
// EdDSA). Keys are fetched on first use, cached, refreshed every RefreshEvery, and fetched again
// when a token names a kid the cache does not know (at most once per MinRefresh, so a flood of
// made-up kids cannot turn into a flood of requests to the provider). That is how a provider's
// key rotation is followed without a restart.
type JWKS struct {
	// URL is the provider's JWKS document (MFA_JWT_JWKS_URL).
	URL string
	// Issuer and Audience, when set, are required in `iss` and `aud` (MFA_JWT_ISSUER,
	// MFA_JWT_AUDIENCE).
	Issuer   string
	Audience string
	// Client fetches the JWKS; nil means one with a 5 s timeout.
	Client *http.Client
	// RefreshEvery is how often the keys are fetched again anyway; 0 means 1 hour.
	RefreshEvery time.Duration
	// MinRefresh is the least time between two fetches; 0 means 10 s.
	MinRefresh time.Duration
	// Now is the clock; nil means time.Now.
	Now func() time.Time

	mu        sync.Mutex
	keys      map[string]crypto.PublicKey
	fetchedAt time.Time
	triedAt   time.Time
}

var (
	_ IdentityVerifier = (*JWKS)(nil)
	_ ExpiringVerifier = (*JWKS)(nil)
)

func (j *JWKS) now() time.Time {
	if j.Now != nil {
		return j.Now()
	}
	return time.Now()
}

// Verify implements Verifier.
func (j *JWKS) Verify(token string) (string, error) {
	id, _, err := j.VerifyUntil(token)
	return id.Sub, err
}

// VerifyIdentity implements IdentityVerifier.
func (j *JWKS) VerifyIdentity(token string) (Identity, error) {
	id, _, err := j.VerifyUntil(token)
	return id, err
}

// scopes reads a `scope` or `scp` claim: a space-separated string or an array of strings.
func scopes(v any) []string {
	switch s := v.(type) {
	case string:
		return strings.Fields(s)
	case []any:
		var out []string
		for _, e := range s {
			if str, ok := e.(string); ok {
				out = append(out, strings.Fields(str)...)
			}
		}
		return out
	}
	return nil
}

// VerifyUntil implements ExpiringVerifier.
func (j *JWKS) VerifyUntil(token string) (Identity, time.Time, error) {
	opts := []jwt.ParserOption{
		jwt.WithValidMethods([]string{"RS256", "ES256", "ES384", "EdDSA"}),
		jwt.WithExpirationRequired(),
		jwt.WithTimeFunc(j.now),
		jwt.WithLeeway(leeway),
	}
	if j.Issuer != "" {
		opts = append(opts, jwt.WithIssuer(j.Issuer))
	}
	if j.Audience != "" {
		opts = append(opts, jwt.WithAudience(j.Audience))
	}
	var c claims
	_, err := jwt.ParseWithClaims(token, &c, j.keyFor, opts...)
	if err != nil {
		return Identity{}, time.Time{}, fmt.Errorf("verify token: %w", err)
	}
	if c.Subject == "" {
		return Identity{}, time.Time{}, errors.New("verify token: no sub claim")
	}
	id := c.identity()
	id.Scopes = append(id.Scopes, scopes(c.Scp)...)
	return id, c.ExpiresAt.Add(leeway), nil
}

// keyFor finds the token's key by kid, fetching the JWKS again (rate limited) when the kid is
// unknown or the cache is old.
func (j *JWKS) keyFor(t *jwt.Token) (any, error) {
	kid, _ := t.Header["kid"].(string)
	if kid == "" {
		return nil, errors.New("token has no kid")
	}
	j.mu.Lock()
	defer j.mu.Unlock()
	now := j.now()
	stale := j.keys == nil || now.Sub(j.fetchedAt) > cmpDur(j.RefreshEvery, time.Hour)
	if k, ok := j.keys[kid]; ok && !stale {
		return k, nil
	}
	if now.Sub(j.triedAt) >= cmpDur(j.MinRefresh, 10*time.Second) || j.keys == nil {
		j.triedAt = now
		if keys, err := j.fetch(); err == nil {
			j.keys, j.fetchedAt = keys, now
		} else if j.keys == nil {
			return nil, err
		}
	}
	if k, ok := j.keys[kid]; ok {
		return k, nil
	}
	return nil, fmt.Errorf("unknown kid %q", kid)
}

func cmpDur(d, def time.Duration) time.Duration {
	if d > 0 {
		return d
	}
	return def
}

type jwk struct {
	Kty string `json:"kty"`
	Kid string `json:"kid"`
	Use string `json:"use"`
	Crv string `json:"crv"`
	X   string `json:"x"`
	Y   string `json:"y"`
	N   string `json:"n"`
	E   string `json:"e"`
}

func (j *JWKS) fetch() (map[string]crypto.PublicKey, error) {
	client := j.Client
	if client == nil {
		client = &http.Client{Timeout: 5 * time.Second}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, j.URL, nil)
	if err != nil {
		return nil, fmt.Errorf("jwks: %w", err)
	}
	resp, err := client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("jwks: fetch: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("jwks: fetch: status %d", resp.StatusCode)
	}
	var set struct {
		Keys []jwk `json:"keys"`
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&set); err != nil {
		return nil, fmt.Errorf("jwks: decode: %w", err)
	}
	keys := map[string]crypto.PublicKey{}
	for _, k := range set.Keys {
		if k.Kid == "" || k.Use != "" && k.Use != "sig" {
			continue
		}
		if pub, err := k.public(); err == nil {
			keys[k.Kid] = pub
		}
	}
	return keys, nil
}

func b64(s string) ([]byte, error) {
	return base64.RawURLEncoding.DecodeString(strings.TrimRight(s, "="))
}

// public turns a JWK into a key golang-jwt verifies with; unsupported keys are skipped.
func (k jwk) public() (crypto.PublicKey, error) {
	switch k.Kty {
	case "RSA":
		n, err1 := b64(k.N)
		e, err2 := b64(k.E)
		if err1 != nil || err2 != nil || len(n) < 256 || len(e) == 0 || len(e) > 4 {
			return nil, errors.New("bad RSA key (at least 2048 bits)")
		}
		return &rsa.PublicKey{N: new(big.Int).SetBytes(n), E: int(new(big.Int).SetBytes(e).Int64())}, nil
	case "EC":
		var curve elliptic.Curve
		switch k.Crv {
		case "P-256":
			curve = elliptic.P256()
		case "P-384":
			curve = elliptic.P384()
		default:
			return nil, errors.New("unsupported curve")
		}
		x, err1 := b64(k.X)
		y, err2 := b64(k.Y)
		if err1 != nil || err2 != nil {
			return nil, errors.New("bad EC key")
		}
		size := (curve.Params().BitSize + 7) / 8
		if len(x) != size || len(y) != size {
			return nil, errors.New("bad EC key")
		}
		return ecdsa.ParseUncompressedPublicKey(curve, append(append([]byte{4}, x...), y...))
	case "OKP":
		x, err := b64(k.X)
		if k.Crv != "Ed25519" || err != nil || len(x) != ed25519.PublicKeySize {
			return nil, errors.New("bad OKP key")
		}
		return ed25519.PublicKey(x), nil
	}
	return nil, errors.New("unsupported key type")
}

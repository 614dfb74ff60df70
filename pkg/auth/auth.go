// Package auth authenticates frontend requests: a Bearer JWT whose `sub` claim is the user.
//
// mfaflow sits behind an identity provider; it only needs to know who is calling. HS256 with a
// shared key is what the dev stack uses; the verifier is an interface so an asymmetric (JWKS)
// verifier can replace it without touching handlers.
package auth

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/mfaflow/mfaflow/pkg/fault"
)

// Verifier turns a bearer token into the user's subject.
type Verifier interface {
	Verify(token string) (sub string, err error)
}

// HS256 verifies and mints HMAC-SHA256 tokens with one shared key.
type HS256 struct {
	Key []byte
	// Issuer, when set, is required in the `iss` claim and put there by Mint.
	Issuer string
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// MinKeyBytes is the shortest HS256 key accepted (RFC 7518 §3.2: at least the hash size).
const MinKeyBytes = 32

func (h HS256) now() time.Time {
	if h.Now != nil {
		return h.Now()
	}
	return time.Now()
}

// leeway is how far past `exp` a token is still accepted (clock skew).
const leeway = 30 * time.Second

// Verify checks signature, expiry and issuer and returns `sub`.
func (h HS256) Verify(token string) (string, error) {
	claims, err := h.parse(token)
	if err != nil {
		return "", err
	}
	return claims.Subject, nil
}

func (h HS256) parse(token string) (*jwt.RegisteredClaims, error) {
	opts := []jwt.ParserOption{
		jwt.WithValidMethods([]string{jwt.SigningMethodHS256.Alg()}),
		jwt.WithExpirationRequired(),
		jwt.WithTimeFunc(h.now),
		jwt.WithLeeway(leeway),
	}
	if h.Issuer != "" {
		opts = append(opts, jwt.WithIssuer(h.Issuer))
	}
	var claims jwt.RegisteredClaims
	_, err := jwt.ParseWithClaims(token, &claims, func(*jwt.Token) (any, error) { return h.Key, nil }, opts...)
	if err != nil {
		return nil, fmt.Errorf("verify token: %w", err)
	}
	if claims.Subject == "" {
		return nil, errors.New("verify token: no sub claim")
	}
	if claims.ExpiresAt == nil {
		return nil, errors.New("verify token: no exp claim")
	}
	return &claims, nil
}

// Mint issues a token for sub valid for ttl. Only the dev stack and tests mint tokens.
func (h HS256) Mint(sub string, ttl time.Duration) (string, error) {
	now := h.now()
	claims := jwt.RegisteredClaims{
		Subject:   sub,
		Issuer:    h.Issuer,
		IssuedAt:  jwt.NewNumericDate(now),
		ExpiresAt: jwt.NewNumericDate(now.Add(ttl)),
	}
	return jwt.NewWithClaims(jwt.SigningMethodHS256, claims).SignedString(h.Key)
}

type subKey struct{}

// Subject returns the authenticated user of a request that passed Require.
func Subject(ctx context.Context) string {
	s, _ := ctx.Value(subKey{}).(string)
	return s
}

// WithSubject returns ctx carrying sub, as Require does.
func WithSubject(ctx context.Context, sub string) context.Context {
	return context.WithValue(ctx, subKey{}, sub)
}

// BearerToken extracts the token from "Authorization: Bearer …". When allowQuery is true it
// also accepts the `access_token` query parameter (RFC 6750 §2.3), which browsers need for
// EventSource and WebSocket because they cannot set headers there.
func BearerToken(r *http.Request, allowQuery bool) string {
	if h := r.Header.Get("Authorization"); h != "" {
		scheme, tok, ok := strings.Cut(h, " ")
		if ok && strings.EqualFold(scheme, "Bearer") {
			return strings.TrimSpace(tok)
		}
		return ""
	}
	if allowQuery {
		return r.URL.Query().Get("access_token")
	}
	return ""
}

// Authenticate returns the subject of r's bearer token, or an unauthorized *fault.Error.
func Authenticate(v Verifier, r *http.Request, allowQuery bool) (string, error) {
	tok := BearerToken(r, allowQuery)
	if tok == "" {
		return "", fault.New(fault.Unauthorized, "a Bearer token is required")
	}
	sub, err := v.Verify(tok)
	if err != nil {
		return "", fault.New(fault.Unauthorized, "the Bearer token is invalid or expired")
	}
	return sub, nil
}

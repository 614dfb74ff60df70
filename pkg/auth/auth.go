// Package auth authenticates frontend requests: a Bearer JWT whose `sub` claim is the user.
//
// mfaflow sits behind an identity provider; it only needs to know who is calling. HS256 with a
// shared key is what the dev stack uses; the verifier is an interface so an asymmetric (JWKS)
// verifier can replace it without touching handlers.
package auth

import (
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

// Identity is who a token speaks for, and with what authority.
type Identity struct {
	// Sub is the token's subject: a user, or a service acting for users.
	Sub string
	// Scopes are the token's `scope` claim (space-separated, RFC 9068), e.g. ScopeVerify.
	Scopes []string
	// ClientID is the calling application (`client_id`, else `azp`); empty if the token names none.
	ClientID string
	// Locale is the token's `locale` claim (the user's language), if any.
	Locale string
	// Email is the token's `email` claim, EmailVerified its `email_verified`.
	Email         string
	EmailVerified bool
}

// Scopes mfaflow gives meaning to.
const (
	// ScopeVerify lets a service (an identity provider's login service) act for any user it
	// names in a request body: start and finish sign-in verifications.
	ScopeVerify = "mfa:verify"
	// ScopeAdmin lets an administrator act on any user's factors (unlock a user).
	ScopeAdmin = "mfa:admin"
)

// StepUpHeader carries the step-up proof of a change to a user's factors: an mfa_token of the
// user from a recent sign-in (DESIGN.md Part 3).
const StepUpHeader = "X-MFA-Token"

// HasScope reports whether the identity holds scope.
func (i Identity) HasScope(scope string) bool {
	for _, s := range i.Scopes {
		if s == scope {
			return true
		}
	}
	return false
}

// IdentityVerifier is a Verifier that also reads scopes and the client id.
type IdentityVerifier interface {
	Verifier
	VerifyIdentity(token string) (Identity, error)
}

// HS256 verifies and mints HMAC-SHA256 tokens with one shared key.
type HS256 struct {
	Key []byte
	// Issuer, when set, is required in the `iss` claim and put there by Mint.
	Issuer string
	// Audience, when set, is required in the `aud` claim and put there by Mint.
	Audience string
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
	c, err := h.parse(token)
	if err != nil {
		return "", err
	}
	return c.Subject, nil
}

// VerifyIdentity checks the token as Verify does and returns its identity.
func (h HS256) VerifyIdentity(token string) (Identity, error) {
	c, err := h.parse(token)
	if err != nil {
		return Identity{}, err
	}
	return c.identity(), nil
}

// identity is who c speaks for: `scope` (not `scp`, which only JWKS reads) and `client_id`, else
// `azp`.
func (c *claims) identity() Identity {
	id := Identity{Sub: c.Subject, Scopes: scopes(c.Scope), ClientID: c.ClientID, Locale: c.Locale,
		Email: c.Email, EmailVerified: c.EmailVerified}
	if id.ClientID == "" {
		id.ClientID = c.AZP
	}
	return id
}

func (h HS256) parse(token string) (*claims, error) {
	opts := []jwt.ParserOption{
		jwt.WithValidMethods([]string{jwt.SigningMethodHS256.Alg()}),
		jwt.WithExpirationRequired(),
		jwt.WithTimeFunc(h.now),
		jwt.WithLeeway(leeway),
	}
	if h.Issuer != "" {
		opts = append(opts, jwt.WithIssuer(h.Issuer))
	}
	if h.Audience != "" {
		opts = append(opts, jwt.WithAudience(h.Audience))
	}
	var c claims
	_, err := jwt.ParseWithClaims(token, &c, func(*jwt.Token) (any, error) { return h.Key, nil }, opts...)
	if err != nil {
		return nil, fmt.Errorf("verify token: %w", err)
	}
	if c.Subject == "" {
		return nil, errors.New("verify token: no sub claim")
	}
	if c.ExpiresAt == nil {
		return nil, errors.New("verify token: no exp claim")
	}
	return &c, nil
}

// Mint issues a token for sub valid for ttl. Only the dev stack and tests mint tokens.
func (h HS256) Mint(sub string, ttl time.Duration) (string, error) {
	return h.MintScoped(sub, ttl, "", "")
}

// MintScoped issues a token for sub valid for ttl with a space-separated scope and a client id
// (either may be empty). Only the dev stack and tests mint tokens.
func (h HS256) MintScoped(sub string, ttl time.Duration, scope, clientID string) (string, error) {
	return h.MintProfile(sub, ttl, scope, clientID, Profile{})
}

// Profile is what a dev token may say about its user beyond its subject: a verified `email`
// and a `locale`, as an identity provider's ID token would.
type Profile struct {
	Email  string
	Locale string
}

// MintProfile is MintScoped with the claims of p (email_verified true with an email). Only the
// dev stack and tests mint tokens.
func (h HS256) MintProfile(sub string, ttl time.Duration, scope, clientID string, p Profile) (string, error) {
	now := h.now()
	c := claims{
		RegisteredClaims: jwt.RegisteredClaims{
			Subject:   sub,
			Issuer:    h.Issuer,
			Audience:  audience(h.Audience),
			IssuedAt:  jwt.NewNumericDate(now),
			ExpiresAt: jwt.NewNumericDate(now.Add(ttl)),
		},
		ClientID: clientID,
		Locale:   p.Locale,
		Email:    p.Email,
	}
	c.EmailVerified = p.Email != ""
	if scope != "" {
		c.Scope = scope
	}
	return jwt.NewWithClaims(jwt.SigningMethodHS256, c).SignedString(h.Key)
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

// Identify returns the identity of r's bearer token, or an unauthorized *fault.Error. A verifier
// that reads no scopes gives an identity with the subject alone.
func Identify(v Verifier, r *http.Request, allowQuery bool) (Identity, error) {
	tok := BearerToken(r, allowQuery)
	if tok == "" {
		return Identity{}, fault.New(fault.Unauthorized, "a Bearer token is required")
	}
	var (
		id  Identity
		err error
	)
	if iv, ok := v.(IdentityVerifier); ok {
		id, err = iv.VerifyIdentity(tok)
	} else {
		id.Sub, err = v.Verify(tok)
	}
	if err != nil {
		return Identity{}, fault.New(fault.Unauthorized, "the Bearer token is invalid or expired")
	}
	return id, nil
}

// ActingFor is the user a request acts for: the caller itself, or, when named explicitly,
// another user, which needs ScopeVerify (a plain user token naming someone else is forbidden).
// A token with ScopeVerify must name the user: such a token is a service's, and a service acting
// for itself by omission would start sign-ins for an account that is nobody's.
func (i Identity) ActingFor(named string) (string, error) {
	if named == "" && i.HasScope(ScopeVerify) {
		return "", fault.New(fault.BadRequest, "sub is required: a service token (scope "+ScopeVerify+") names the user it acts for in the request body")
	}
	if named == "" || named == i.Sub {
		return i.Sub, nil
	}
	if i.HasScope(ScopeVerify) {
		return named, nil
	}
	return "", fault.New(fault.Forbidden, "this token may act only for its own sub (naming another user needs scope "+ScopeVerify+")")
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

func audience(a string) jwt.ClaimStrings {
	if a == "" {
		return nil
	}
	return jwt.ClaimStrings{a}
}

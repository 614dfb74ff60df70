package mfatoken

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// MaxTTL bounds the lifetime of an mfa_token (DESIGN.md: exp ≤ 5 min). It is also the default.
const MaxTTL = 5 * time.Minute

// JWKSMaxAge is how long relying apps may cache the JWKS (Cache-Control max-age). Key
// rotation waits at least this long between steps.
const JWKSMaxAge = 300 * time.Second

// ErrExpired is returned by Mint when the token would already be expired: AuthTime+TTL is not
// after now. A status poll past that point gets no mfa_token.
var ErrExpired = errors.New("mfatoken: the authentication is older than the token lifetime")

// amrValues are the Authentication Method Reference values registered by RFC 8176, plus
// "email" (a one-time code by mail): RFC 8176 has "sms" but no value for mail, and "email" is
// what the contract (DESIGN.md Part 3) and identity providers that mail codes (Okta, Azure AD)
// put beside "otp".
var amrValues = map[string]bool{
	"face": true, "fpt": true, "geo": true, "hwk": true, "iris": true, "kba": true, "mca": true,
	"mfa": true, "otp": true, "pin": true, "pop": true, "pwd": true, "rba": true, "retina": true,
	"sc": true, "sms": true, "swk": true, "tel": true, "user": true, "vbm": true, "wia": true,
	"email": true,
}

// Claims is what one mfa_token says. Minting the same Claims again gives the same claims: the
// times come from AuthTime and the id from JTI, so the status service can mint again on a
// later poll.
type Claims struct {
	Sub      string        // the user
	Audience string        // the caller's client id
	StatusID string        // the authentication's status_id
	JTI      string        // unique per authentication, chosen by the caller
	AMR      []string      // RFC 8176 values: ["otp"], ["swk","user"], ["kba"]…
	AuthTime time.Time     // when the user proved MFA: iat and auth_time (whole seconds)
	TTL      time.Duration // lifetime from AuthTime: 0 means MaxTTL, more is capped at MaxTTL
}

// Signer mints mfa_tokens with the first of its keys and publishes all of them.
type Signer struct {
	keys   *Keys
	issuer string
	now    func() time.Time
	jwks   []byte
}

// NewSigner returns a Signer for issuer (the `iss` of every token). now is the clock that
// decides whether a token would already be expired; nil means time.Now.
func NewSigner(keys *Keys, issuer string, now func() time.Time) *Signer {
	if now == nil {
		now = time.Now
	}
	jwks := struct {
		Keys []publicJWK `json:"keys"`
	}{Keys: []publicJWK{}}
	if keys != nil {
		for _, k := range keys.keys {
			jwks.Keys = append(jwks.Keys, k.jwk)
		}
	}
	body, err := json.Marshal(jwks)
	if err != nil {
		panic("mfatoken: marshal JWKS: " + err.Error()) // strings only: cannot happen
	}
	return &Signer{keys: keys, issuer: issuer, now: now, jwks: body}
}

// Mint returns the signed mfa_token for c: ES256, header kid and typ JWT; claims iss, sub,
// aud (a string), iat = auth_time = AuthTime, exp = AuthTime+TTL, jti, amr, status_id.
func (s *Signer) Mint(c Claims) (string, error) {
	if s == nil || s.keys == nil || len(s.keys.keys) == 0 {
		return "", errors.New("mfatoken: mint: no signing key")
	}
	if err := s.check(c); err != nil {
		return "", err
	}
	ttl := c.TTL
	if ttl == 0 || ttl > MaxTTL {
		ttl = MaxTTL
	}
	authTime := c.AuthTime.Truncate(time.Second)
	exp := authTime.Add(ttl).Truncate(time.Second)
	if !exp.After(s.now()) {
		return "", ErrExpired
	}
	signing := s.keys.keys[0]
	tok := jwt.NewWithClaims(jwt.SigningMethodES256, jwt.MapClaims{
		"iss":       s.issuer,
		"sub":       c.Sub,
		"aud":       c.Audience,
		"iat":       authTime.Unix(),
		"exp":       exp.Unix(),
		"jti":       c.JTI,
		"auth_time": authTime.Unix(),
		"amr":       append([]string(nil), c.AMR...),
		"status_id": c.StatusID,
	})
	tok.Header["kid"] = signing.jwk.Kid
	tok.Header["typ"] = "JWT"
	signed, err := tok.SignedString(signing.priv)
	if err != nil {
		return "", errors.New("mfatoken: mint: signing failed")
	}
	return signed, nil
}

func (s *Signer) check(c Claims) error {
	var missing []string
	for _, f := range []struct{ name, v string }{
		{"issuer", s.issuer}, {"Sub", c.Sub}, {"Audience", c.Audience}, {"StatusID", c.StatusID}, {"JTI", c.JTI},
	} {
		if f.v == "" {
			missing = append(missing, f.name)
		}
	}
	if len(c.AMR) == 0 {
		missing = append(missing, "AMR")
	}
	if c.AuthTime.IsZero() {
		missing = append(missing, "AuthTime")
	}
	if len(missing) > 0 {
		return fmt.Errorf("mfatoken: mint: missing %v", missing)
	}
	if c.TTL < 0 {
		return fmt.Errorf("mfatoken: mint: negative TTL %v", c.TTL)
	}
	for _, m := range c.AMR {
		if !amrValues[m] {
			return fmt.Errorf("mfatoken: mint: amr %q is not an RFC 8176 value (nor email)", m)
		}
	}
	return nil
}

// JWKS returns the JSON Web Key Set of every key, the signing key first:
// {"keys":[{"kty":"EC","crv":"P-256","x","y","kid","use":"sig","alg":"ES256"},…]}.
// It is computed once; the caller must not modify it.
func (s *Signer) JWKS() []byte { return s.jwks }

// DerivedSecret is Keys.DerivedSecret of the signer's keys.
func (s *Signer) DerivedSecret(purpose string) ([]byte, error) { return s.keys.DerivedSecret(purpose) }

// Handler serves the JWKS (GET /.well-known/jwks.json), cacheable for JWKSMaxAge.
func (s *Signer) Handler() http.Handler {
	cacheControl := fmt.Sprintf("public, max-age=%d", int(JWKSMaxAge/time.Second))
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
			return
		}
		h := w.Header()
		h.Set("Content-Type", "application/json")
		h.Set("Cache-Control", cacheControl)
		h.Set("X-Content-Type-Options", "nosniff")
		if r.Method == http.MethodHead {
			return
		}
		_, _ = w.Write(s.jwks)
	})
}

// Verified is what Verify reads from a valid mfa_token.
type Verified struct {
	Sub, StatusID, JTI string
	AuthTime           time.Time
}

// verifiedClaims are the claims Verify needs; exact names are safe to decode leniently here
// because only a token this signer's keys signed gets this far.
type verifiedClaims struct {
	jwt.RegisteredClaims
	AuthTime int64  `json:"auth_time"`
	StatusID string `json:"status_id"`
}

// ErrInvalid is returned by Verify for any token that is not a current mfa_token of this
// issuer: bad signature, unknown key, another issuer, expired, or claims missing.
var ErrInvalid = errors.New("mfatoken: not a valid mfa_token")

// Verify checks that token is an mfa_token signed by one of the signer's keys (by kid), for this
// issuer and not expired, and returns its subject, status id and auth_time. The status service
// uses it to spend a token as a step-up proof; relying apps verify with the JWKS instead.
func (s *Signer) Verify(token string) (Verified, error) {
	if s == nil || s.keys == nil {
		return Verified{}, ErrInvalid
	}
	var c verifiedClaims
	_, err := jwt.ParseWithClaims(token, &c, func(t *jwt.Token) (any, error) {
		kid, _ := t.Header["kid"].(string)
		for _, k := range s.keys.keys {
			if k.jwk.Kid == kid {
				return &k.priv.PublicKey, nil
			}
		}
		return nil, ErrInvalid
	}, jwt.WithValidMethods([]string{jwt.SigningMethodES256.Alg()}), jwt.WithIssuer(s.issuer),
		jwt.WithExpirationRequired(), jwt.WithTimeFunc(s.now))
	if err != nil || c.Subject == "" || c.StatusID == "" || c.AuthTime == 0 {
		return Verified{}, ErrInvalid
	}
	return Verified{Sub: c.Subject, StatusID: c.StatusID, JTI: c.ID, AuthTime: time.Unix(c.AuthTime, 0)}, nil
}

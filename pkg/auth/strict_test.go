package auth_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"fmt"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/mfaflow/mfaflow/pkg/auth"
	"github.com/mfaflow/mfaflow/pkg/authtest"
	"github.com/mfaflow/mfaflow/pkg/fault"
)

// tokenMode is one way mfaflow verifies Bearer tokens, with a way to sign a hand-written payload
// that the verifier's keys accept.
type tokenMode struct {
	name string
	v    interface {
		auth.IdentityVerifier
		auth.ExpiringVerifier
	}
	sign func(payload string) string
}

// tokenModes are HS256 with a shared key and JWKS with a provider's RS256 and ES256 keys, all
// requiring the issuer https://idp.example and the audience mfaflow.
func tokenModes(t *testing.T) []tokenMode {
	t.Helper()
	const issuer, audience = "https://idp.example", "mfaflow"
	key := []byte("strict-claims-key-strict-claims-key-0123")
	p := authtest.NewProvider(t)
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	ecKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	p.Add("rsa-1", rsaKey)
	p.Add("ec-1", ecKey)
	jwks := &auth.JWKS{URL: p.URL, Issuer: issuer, Audience: audience}
	return []tokenMode{
		{"HS256", auth.HS256{Key: key, Issuer: issuer, Audience: audience}, func(payload string) string {
			return authtest.MintRawHS256(t, key, payload)
		}},
		{"JWKS RS256", jwks, func(payload string) string { return authtest.MintRaw(t, "rsa-1", rsaKey, payload) }},
		{"JWKS ES256", jwks, func(payload string) string { return authtest.MintRaw(t, "ec-1", ecKey, payload) }},
	}
}

// TestStrictClaims: in both token modes claim names match exactly, a member named twice makes
// the token invalid, and exp, nbf and iat must be JSON numbers; tokens are still read as before
// otherwise.
func TestStrictClaims(t *testing.T) {
	now := time.Now().Unix()
	// std is iss, aud and the times, as a provider sends them; each case adds sub and the rest.
	std := fmt.Sprintf(`"iss":"https://idp.example","aud":"mfaflow","iat":%d,"nbf":%d,"exp":%d`, now, now, now+3600)
	valid := []struct {
		name, payload string
		want          auth.Identity
	}{
		{"OK", `{"sub":"alice",` + std + `,"scope":"openid mfa:verify","client_id":"shop"}`,
			auth.Identity{Sub: "alice", Scopes: []string{"openid", "mfa:verify"}, ClientID: "shop"}},
		{"OK scope array and azp", `{"sub":"ops",` + std + `,"scope":["mfa:admin"],"azp":"console"}`,
			auth.Identity{Sub: "ops", Scopes: []string{"mfa:admin"}, ClientID: "console"}},
		{"SCOPE is not scope", `{"sub":"mallory",` + std + `,"SCOPE":"mfa:admin"}`,
			auth.Identity{Sub: "mallory"}},
		{"Scope is not scope", `{"sub":"mallory",` + std + `,"scope":"openid","Scope":"mfa:admin mfa:verify"}`,
			auth.Identity{Sub: "mallory", Scopes: []string{"openid"}}},
		{"Sub is not sub", `{"sub":"attacker","Sub":"victim",` + std + `}`,
			auth.Identity{Sub: "attacker"}},
		{"SUB before sub is not sub", `{"SUB":"victim","sub":"attacker",` + std + `}`,
			auth.Identity{Sub: "attacker"}},
		{"Client_ID is not client_id", `{"sub":"alice",` + std + `,"Client_ID":"bank"}`,
			auth.Identity{Sub: "alice"}},
	}
	invalid := []struct{ name, payload string }{
		{"sub twice", `{"sub":"victim","sub":"attacker",` + std + `}`},
		{"sub twice, one escaped", `{"sub":"victim","s\u0075b":"attacker",` + std + `}`},
		{"scope twice", `{"sub":"alice",` + std + `,"scope":"openid","scope":"mfa:admin"}`},
		{"exp twice", `{"sub":"alice",` + std + fmt.Sprintf(`,"exp":%d}`, now+7200)},
		{"an unknown claim twice", `{"sub":"alice",` + std + `,"x":1,"x":1}`},
		{"exp a string", fmt.Sprintf(`{"sub":"alice","iss":"https://idp.example","aud":"mfaflow","exp":"%d"}`, now+3600)},
		{"exp null", `{"sub":"alice","iss":"https://idp.example","aud":"mfaflow","exp":null}`},
		{"iat a string", fmt.Sprintf(`{"sub":"alice","iss":"https://idp.example","aud":"mfaflow","iat":"%d","exp":%d}`, now, now+3600)},
		{"nbf a string", fmt.Sprintf(`{"sub":"alice","iss":"https://idp.example","aud":"mfaflow","nbf":"%d","exp":%d}`, now, now+3600)},
		{"EXP is not exp", fmt.Sprintf(`{"sub":"alice","iss":"https://idp.example","aud":"mfaflow","EXP":%d}`, now+3600)},
		{"Sub alone is no sub", `{"Sub":"alice",` + std + `}`},
		{"ISS is not iss", fmt.Sprintf(`{"sub":"alice","ISS":"https://idp.example","aud":"mfaflow","exp":%d}`, now+3600)},
		{"expired", fmt.Sprintf(`{"sub":"alice","iss":"https://idp.example","aud":"mfaflow","exp":%d}`, now-3600)},
		{"not an object", `["sub","alice"]`},
	}
	for _, m := range tokenModes(t) {
		t.Run(m.name, func(t *testing.T) {
			for _, c := range valid {
				t.Run(c.name, func(t *testing.T) {
					id, err := m.v.VerifyIdentity(m.sign(c.payload))
					if err != nil {
						t.Fatalf("refused %s: %v", c.payload, err)
					}
					if id.Sub != c.want.Sub || !slices.Equal(id.Scopes, c.want.Scopes) || id.ClientID != c.want.ClientID {
						t.Fatalf("identity %+v, want %+v", id, c.want)
					}
				})
			}
			for _, c := range invalid {
				t.Run(c.name, func(t *testing.T) {
					tok := m.sign(c.payload)
					if id, err := m.v.VerifyIdentity(tok); err == nil {
						t.Fatalf("accepted %s as %+v", c.payload, id)
					}
					if _, _, err := m.v.VerifyUntil(tok); err == nil {
						t.Fatalf("VerifyUntil accepted %s", c.payload)
					}
					// Through a cache, as the services verify, it is the usual 401.
					r := httptest.NewRequest("GET", "/", nil)
					r.Header.Set("Authorization", "Bearer "+tok)
					if _, err := auth.Identify(auth.NewCache(m.v, 0), r, false); fault.CodeOf(err) != fault.Unauthorized {
						t.Fatalf("Identify: %v, want %s", err, fault.Unauthorized)
					}
				})
			}
		})
	}
}

// TestActingForServiceTokenNeedsSub: a token with scope mfa:verify acts only for the user it
// names; a user token still acts for itself when it names nobody.
func TestActingForServiceTokenNeedsSub(t *testing.T) {
	service := auth.Identity{Sub: "login-service", Scopes: []string{"openid", auth.ScopeVerify}}
	_, err := service.ActingFor("")
	if fault.CodeOf(err) != fault.BadRequest || !strings.Contains(fault.From(err).Message, "sub is required") {
		t.Fatalf("service naming nobody: %v, want %s saying sub is required", err, fault.BadRequest)
	}
	if sub, err := service.ActingFor("alice"); err != nil || sub != "alice" {
		t.Fatalf("service naming alice: %q %v", sub, err)
	}
	user := auth.Identity{Sub: "alice", Scopes: []string{"openid"}}
	if sub, err := user.ActingFor(""); err != nil || sub != "alice" {
		t.Fatalf("user naming nobody: %q %v", sub, err)
	}
	if sub, err := user.ActingFor("alice"); err != nil || sub != "alice" {
		t.Fatalf("user naming itself: %q %v", sub, err)
	}
	if _, err := user.ActingFor("bob"); fault.CodeOf(err) != fault.Forbidden {
		t.Fatalf("user naming bob: %v, want %s", err, fault.Forbidden)
	}
}

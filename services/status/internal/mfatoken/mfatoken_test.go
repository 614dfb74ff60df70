package mfatoken_test

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"math/big"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/mfaflow/mfaflow/services/status/internal/mfatoken"
)

const issuer = "https://mfa.example.com"

var authTime = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

// MustKeyPEM returns a new P-256 key as PKCS#8 PEM.
func MustKeyPEM(tb testing.TB) string {
	tb.Helper()
	p, err := mfatoken.GenerateKeyPEM()
	if err != nil {
		tb.Fatal(err)
	}
	return p
}

// MustSigner parses pemText and returns a Signer whose clock reads *now.
func MustSigner(tb testing.TB, pemText string, now *time.Time) *mfatoken.Signer {
	tb.Helper()
	keys, err := mfatoken.ParseKeys(pemText)
	if err != nil {
		tb.Fatal(err)
	}
	return mfatoken.NewSigner(keys, issuer, func() time.Time { return *now })
}

func claims() mfatoken.Claims {
	return mfatoken.Claims{
		Sub: "user-1", Audience: "client-app", StatusID: "st-123", JTI: "jti-abc",
		AMR: []string{"otp"}, AuthTime: authTime, TTL: 2 * time.Minute,
	}
}

// verify is what a relying app does with a stock library: look the kid up in the JWKS JSON,
// build the public key from x and y, and check alg, iss, aud and exp.
func verify(jwks []byte, token string, now time.Time) (jwt.MapClaims, error) {
	var set struct {
		Keys []struct{ Kty, Crv, X, Y, Kid, Use, Alg string }
	}
	if err := json.Unmarshal(jwks, &set); err != nil {
		return nil, err
	}
	keyfunc := func(t *jwt.Token) (any, error) {
		kid, _ := t.Header["kid"].(string)
		for _, k := range set.Keys {
			if k.Kid != kid {
				continue
			}
			if k.Kty != "EC" || k.Crv != "P-256" || k.Alg != "ES256" || k.Use != "sig" {
				return nil, fmt.Errorf("key %s: unexpected %s %s %s %s", kid, k.Kty, k.Crv, k.Alg, k.Use)
			}
			x, err1 := base64.RawURLEncoding.DecodeString(k.X)
			y, err2 := base64.RawURLEncoding.DecodeString(k.Y)
			if err := errors.Join(err1, err2); err != nil || len(x) != 32 || len(y) != 32 {
				return nil, fmt.Errorf("key %s: bad coordinates", kid)
			}
			return ecdsa.ParseUncompressedPublicKey(elliptic.P256(), append(append([]byte{4}, x...), y...))
		}
		return nil, fmt.Errorf("kid %q not in the JWKS", kid)
	}
	var mc jwt.MapClaims
	_, err := jwt.ParseWithClaims(token, &mc, keyfunc,
		jwt.WithValidMethods([]string{"ES256"}), jwt.WithIssuer(issuer), jwt.WithAudience("client-app"),
		jwt.WithExpirationRequired(), jwt.WithIssuedAt(), jwt.WithTimeFunc(func() time.Time { return now }))
	return mc, err
}

func header(t *testing.T, token string) map[string]any {
	t.Helper()
	raw, err := base64.RawURLEncoding.DecodeString(strings.Split(token, ".")[0])
	if err != nil {
		t.Fatal(err)
	}
	var h map[string]any
	if err := json.Unmarshal(raw, &h); err != nil {
		t.Fatal(err)
	}
	return h
}

func kids(t *testing.T, jwks []byte) []string {
	t.Helper()
	var set struct{ Keys []struct{ Kid string } }
	if err := json.Unmarshal(jwks, &set); err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, k := range set.Keys {
		out = append(out, k.Kid)
	}
	return out
}

func TestMint(t *testing.T) {
	now := authTime.Add(10 * time.Second)
	s := MustSigner(t, MustKeyPEM(t), &now)

	t.Run("OK", func(t *testing.T) {
		token, err := s.Mint(claims())
		if err != nil {
			t.Fatal(err)
		}
		got, err := verify(s.JWKS(), token, now)
		if err != nil {
			t.Fatal(err)
		}
		want := jwt.MapClaims{
			"iss": issuer, "sub": "user-1", "aud": "client-app",
			"iat": float64(authTime.Unix()), "exp": float64(authTime.Add(2 * time.Minute).Unix()),
			"jti": "jti-abc", "auth_time": float64(authTime.Unix()), "amr": []any{"otp"}, "status_id": "st-123",
		}
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("claims\n got %v\nwant %v", got, want)
		}
		h := header(t, token)
		if h["alg"] != "ES256" || h["typ"] != "JWT" || h["kid"] != kids(t, s.JWKS())[0] || len(h) != 3 {
			t.Fatalf("header %v", h)
		}
	})

	t.Run("PushAMR", func(t *testing.T) {
		c := claims()
		c.AMR = []string{"swk", "user"}
		token, err := s.Mint(c)
		if err != nil {
			t.Fatal(err)
		}
		got, err := verify(s.JWKS(), token, now)
		if err != nil || !reflect.DeepEqual(got["amr"], []any{"swk", "user"}) {
			t.Fatalf("%v %v", got["amr"], err)
		}
	})

	t.Run("SameClaimsTwice", func(t *testing.T) {
		first, err := s.Mint(claims())
		if err != nil {
			t.Fatal(err)
		}
		now = now.Add(time.Minute) // a later poll
		defer func() { now = now.Add(-time.Minute) }()
		second, err := s.Mint(claims())
		if err != nil {
			t.Fatal(err)
		}
		c1, err1 := verify(s.JWKS(), first, now)
		c2, err2 := verify(s.JWKS(), second, now)
		if err := errors.Join(err1, err2); err != nil || !reflect.DeepEqual(c1, c2) {
			t.Fatalf("re-minted claims differ: %v\n%v\n%v", c1, c2, err)
		}
	})

	t.Run("SubSecondAuthTime", func(t *testing.T) {
		c := claims()
		c.AuthTime = authTime.Add(700 * time.Millisecond)
		token, err := s.Mint(c)
		if err != nil {
			t.Fatal(err)
		}
		got, err := verify(s.JWKS(), token, now)
		if err != nil || got["iat"] != float64(authTime.Unix()) || got["exp"] != float64(authTime.Add(2*time.Minute).Unix()) {
			t.Fatalf("%v %v", got, err)
		}
	})

	t.Run("Invalid", func(t *testing.T) {
		for name, edit := range map[string]func(*mfatoken.Claims){
			"NoSub":       func(c *mfatoken.Claims) { c.Sub = "" },
			"NoAudience":  func(c *mfatoken.Claims) { c.Audience = "" },
			"NoStatusID":  func(c *mfatoken.Claims) { c.StatusID = "" },
			"NoJTI":       func(c *mfatoken.Claims) { c.JTI = "" },
			"NoAMR":       func(c *mfatoken.Claims) { c.AMR = nil },
			"UnknownAMR":  func(c *mfatoken.Claims) { c.AMR = []string{"totp"} },
			"NoAuthTime":  func(c *mfatoken.Claims) { c.AuthTime = time.Time{} },
			"NegativeTTL": func(c *mfatoken.Claims) { c.TTL = -time.Second },
		} {
			t.Run(name, func(t *testing.T) {
				c := claims()
				edit(&c)
				if token, err := s.Mint(c); err == nil {
					t.Fatalf("minted %s", token)
				}
			})
		}
	})

	t.Run("NoIssuer", func(t *testing.T) {
		keys, err := mfatoken.ParseKeys(MustKeyPEM(t))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := mfatoken.NewSigner(keys, "", nil).Mint(claims()); err == nil {
			t.Fatal("minted without an issuer")
		}
	})
}

func TestTTL(t *testing.T) {
	now := authTime
	s := MustSigner(t, MustKeyPEM(t), &now)
	for name, tc := range map[string]struct{ ttl, want time.Duration }{
		"Default": {0, 5 * time.Minute},
		"Short":   {30 * time.Second, 30 * time.Second},
		"Max":     {5 * time.Minute, 5 * time.Minute},
		"Capped":  {time.Hour, 5 * time.Minute},
	} {
		t.Run(name, func(t *testing.T) {
			c := claims()
			c.TTL = tc.ttl
			token, err := s.Mint(c)
			if err != nil {
				t.Fatal(err)
			}
			got, err := verify(s.JWKS(), token, now)
			if err != nil || got["exp"] != float64(authTime.Add(tc.want).Unix()) {
				t.Fatalf("exp %v, want %v (%v)", got["exp"], authTime.Add(tc.want).Unix(), err)
			}
		})
	}
	t.Run("ErrExpired", func(t *testing.T) {
		now = authTime.Add(5 * time.Minute)
		c := claims()
		c.TTL = time.Hour
		if _, err := s.Mint(c); !errors.Is(err, mfatoken.ErrExpired) {
			t.Fatalf("minted past the capped lifetime: %v", err)
		}
	})
}

func TestVerifierRefuses(t *testing.T) {
	now := authTime
	s := MustSigner(t, MustKeyPEM(t), &now)
	token, err := s.Mint(claims())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := verify(s.JWKS(), token, now); err != nil {
		t.Fatalf("the untouched token is refused: %v", err)
	}

	t.Run("UnknownKid", func(t *testing.T) {
		other := MustSigner(t, MustKeyPEM(t), &now)
		if _, err := verify(other.JWKS(), token, now); err == nil {
			t.Fatal("verified with a JWKS that does not hold its kid")
		}
	})
	t.Run("TamperedSignature", func(t *testing.T) {
		parts := strings.Split(token, ".")
		sig, err := base64.RawURLEncoding.DecodeString(parts[2])
		if err != nil {
			t.Fatal(err)
		}
		sig[10] ^= 0x01
		forged := parts[0] + "." + parts[1] + "." + base64.RawURLEncoding.EncodeToString(sig)
		if _, err := verify(s.JWKS(), forged, now); !errors.Is(err, jwt.ErrTokenSignatureInvalid) {
			t.Fatalf("tampered signature: %v", err)
		}
	})
	t.Run("TamperedClaims", func(t *testing.T) {
		parts := strings.Split(token, ".")
		payload, _ := base64.RawURLEncoding.DecodeString(parts[1])
		payload = bytes.Replace(payload, []byte("user-1"), []byte("user-2"), 1)
		forged := parts[0] + "." + base64.RawURLEncoding.EncodeToString(payload) + "." + parts[2]
		if _, err := verify(s.JWKS(), forged, now); !errors.Is(err, jwt.ErrTokenSignatureInvalid) {
			t.Fatalf("tampered claims: %v", err)
		}
	})
	t.Run("AfterExp", func(t *testing.T) {
		if _, err := verify(s.JWKS(), token, authTime.Add(2*time.Minute)); !errors.Is(err, jwt.ErrTokenExpired) {
			t.Fatalf("at exp: %v", err)
		}
	})
}

func TestRotation(t *testing.T) {
	now := authTime
	a, b := MustKeyPEM(t), MustKeyPEM(t)

	// Step 1: B is appended. A signs, both are published.
	ab := MustSigner(t, a+b, &now)
	kidsAB := kids(t, ab.JWKS())
	if len(kidsAB) != 2 {
		t.Fatalf("published %v", kidsAB)
	}
	kidA, kidB := kidsAB[0], kidsAB[1]
	byA, err := ab.Mint(claims())
	if err != nil {
		t.Fatal(err)
	}
	if header(t, byA)["kid"] != kidA {
		t.Fatalf("signed by %v, want A %s", header(t, byA)["kid"], kidA)
	}
	if _, err := verify(ab.JWKS(), byA, now); err != nil {
		t.Fatalf("A's token: %v", err)
	}

	// Step 3: B moves first. B signs; A's tokens still verify while A is listed.
	ba := MustSigner(t, b+"\n"+a, &now)
	if got := kids(t, ba.JWKS()); !reflect.DeepEqual(got, []string{kidB, kidA}) {
		t.Fatalf("published %v, want [B A]", got)
	}
	byB, err := ba.Mint(claims())
	if err != nil {
		t.Fatal(err)
	}
	if header(t, byB)["kid"] != kidB {
		t.Fatalf("signed by %v, want B %s", header(t, byB)["kid"], kidB)
	}
	for name, tok := range map[string]string{"A": byA, "B": byB} {
		if _, err := verify(ba.JWKS(), tok, now); err != nil {
			t.Fatalf("%s's token with [B A]: %v", name, err)
		}
	}

	// Step 4: A is removed. Its tokens no longer verify; B's do.
	onlyB := MustSigner(t, b, &now)
	if got := kids(t, onlyB.JWKS()); !reflect.DeepEqual(got, []string{kidB}) {
		t.Fatalf("published %v, want [B]", got)
	}
	if _, err := verify(onlyB.JWKS(), byA, now); err == nil {
		t.Fatal("A's token verified after A was removed")
	}
	if _, err := verify(onlyB.JWKS(), byB, now); err != nil {
		t.Fatalf("B's token: %v", err)
	}
}

func TestJWKS(t *testing.T) {
	pemText := MustKeyPEM(t)
	now := authTime
	s := MustSigner(t, pemText, &now)
	var set struct {
		Keys []map[string]string `json:"keys"`
	}
	if err := json.Unmarshal(s.JWKS(), &set); err != nil || len(set.Keys) != 1 {
		t.Fatalf("%s %v", s.JWKS(), err)
	}
	k := set.Keys[0]
	if len(k) != 7 || k["kty"] != "EC" || k["crv"] != "P-256" || k["use"] != "sig" || k["alg"] != "ES256" {
		t.Fatalf("key %v", k)
	}
	if strings.Contains(string(s.JWKS()), `"d"`) {
		t.Fatalf("JWKS holds a private member: %s", s.JWKS())
	}

	t.Run("KidIsRFC7638Thumbprint", func(t *testing.T) {
		block, _ := pem.Decode([]byte(pemText))
		parsed, err := x509.ParsePKCS8PrivateKey(block.Bytes)
		if err != nil {
			t.Fatal(err)
		}
		point, err := parsed.(*ecdsa.PrivateKey).PublicKey.Bytes()
		if err != nil {
			t.Fatal(err)
		}
		x, y := base64.RawURLEncoding.EncodeToString(point[1:33]), base64.RawURLEncoding.EncodeToString(point[33:])
		if k["x"] != x || k["y"] != y {
			t.Fatalf("x/y %s %s, want %s %s", k["x"], k["y"], x, y)
		}
		sum := sha256.Sum256([]byte(`{"crv":"P-256","kty":"EC","x":"` + x + `","y":"` + y + `"}`))
		if want := base64.RawURLEncoding.EncodeToString(sum[:]); k["kid"] != want {
			t.Fatalf("kid %s, want %s", k["kid"], want)
		}
	})

	t.Run("KIDsMatchJWKS", func(t *testing.T) {
		keys, err := mfatoken.ParseKeys(pemText)
		if err != nil {
			t.Fatal(err)
		}
		if got := keys.KIDs(); len(got) != 1 || got[0] != k["kid"] {
			t.Fatalf("KIDs %v, JWKS kid %s", got, k["kid"])
		}
	})

	t.Run("Handler", func(t *testing.T) {
		rec := httptest.NewRecorder()
		s.Handler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/.well-known/jwks.json", nil))
		if rec.Code != http.StatusOK || rec.Header().Get("Content-Type") != "application/json" ||
			rec.Header().Get("Cache-Control") != "public, max-age=300" || !bytes.Equal(rec.Body.Bytes(), s.JWKS()) {
			t.Fatalf("%d %v %s", rec.Code, rec.Header(), rec.Body)
		}
		rec = httptest.NewRecorder()
		s.Handler().ServeHTTP(rec, httptest.NewRequest(http.MethodPost, "/.well-known/jwks.json", nil))
		if rec.Code != http.StatusMethodNotAllowed {
			t.Fatalf("POST: %d", rec.Code)
		}
	})
}

func pemOf(typ string, der []byte) string {
	return string(pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}))
}

func TestParseKeys(t *testing.T) {
	p256, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	p384, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	rsaKey, _ := rsa.GenerateKey(rand.Reader, 2048)
	sec1, _ := x509.MarshalECPrivateKey(p256)
	pkcs8P384, _ := x509.MarshalPKCS8PrivateKey(p384)
	sec1P384, _ := x509.MarshalECPrivateKey(p384)
	pkcs8RSA, _ := x509.MarshalPKCS8PrivateKey(rsaKey)
	pub, _ := x509.MarshalPKIXPublicKey(&p256.PublicKey)
	good := MustKeyPEM(t)

	t.Run("OK", func(t *testing.T) {
		for name, text := range map[string]string{
			"PKCS8":        good,
			"SEC1":         pemOf("EC PRIVATE KEY", sec1),
			"Both":         good + pemOf("EC PRIVATE KEY", sec1),
			"ECParameters": pemOf("EC PARAMETERS", []byte{6, 8, 42, 134, 72, 206, 61, 3, 1, 7}) + pemOf("EC PRIVATE KEY", sec1),
			"Whitespace":   "\n  " + good + "\n\n",
		} {
			t.Run(name, func(t *testing.T) {
				keys, err := mfatoken.ParseKeys(text)
				if err != nil {
					t.Fatal(err)
				}
				if want := strings.Count(text, "PRIVATE KEY-----") / 2; len(keys.KIDs()) != want {
					t.Fatalf("%d keys, want %d", len(keys.KIDs()), want)
				}
			})
		}
	})

	block, _ := pem.Decode([]byte(good))
	for name, text := range map[string]string{
		"Empty":         "",
		"Blank":         " \n\t",
		"Garbage":       "not a key",
		"TextBefore":    "key:\n" + good,
		"TrailingText":  good + "and then some",
		"Truncated":     good[:len(good)-30],
		"OnlyECParams":  pemOf("EC PARAMETERS", []byte{6, 8, 42, 134, 72, 206, 61, 3, 1, 7}),
		"PublicKey":     pemOf("PUBLIC KEY", pub),
		"RSA":           pemOf("PRIVATE KEY", pkcs8RSA),
		"RSAType":       pemOf("RSA PRIVATE KEY", x509.MarshalPKCS1PrivateKey(rsaKey)),
		"P384PKCS8":     pemOf("PRIVATE KEY", pkcs8P384),
		"P384SEC1":      pemOf("EC PRIVATE KEY", sec1P384),
		"BadDER":        pemOf("PRIVATE KEY", []byte("garbage")),
		"Duplicate":     good + good,
		"SecondIsBad":   good + pemOf("PRIVATE KEY", pkcs8P384),
		"Encrypted":     string(pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Headers: map[string]string{"Proc-Type": "4,ENCRYPTED"}, Bytes: sec1})),
		"SEC1AsPKCS8":   pemOf("PRIVATE KEY", sec1),
		"PKCS8AsSEC1":   pemOf("EC PRIVATE KEY", block.Bytes),
		"CorruptBase64": strings.Replace(good, "\n", "\n!!", 2),
	} {
		t.Run(name, func(t *testing.T) {
			keys, err := mfatoken.ParseKeys(text)
			if err == nil {
				t.Fatalf("accepted: %v", keys)
			}
			// The error names no key material: no line of the PEM body appears in it.
			for _, line := range strings.Split(text, "\n") {
				if len(line) >= 16 && !strings.HasPrefix(line, "-----") && strings.Contains(err.Error(), line[:16]) {
					t.Fatalf("error %q holds key material", err)
				}
			}
			if !strings.HasPrefix(err.Error(), "mfatoken: ") {
				t.Fatalf("error %q", err)
			}
		})
	}
	t.Run("RSANamed", func(t *testing.T) {
		_, err := mfatoken.ParseKeys(pemOf("PRIVATE KEY", pkcs8RSA))
		if err == nil || !strings.Contains(err.Error(), "RSA") {
			t.Fatalf("%v", err)
		}
	})
	t.Run("P384Named", func(t *testing.T) {
		_, err := mfatoken.ParseKeys(pemOf("PRIVATE KEY", pkcs8P384))
		if err == nil || !strings.Contains(err.Error(), "P-384") {
			t.Fatalf("%v", err)
		}
	})
	t.Run("BlockNumber", func(t *testing.T) {
		_, err := mfatoken.ParseKeys(good + pemOf("PRIVATE KEY", pkcs8P384))
		if err == nil || !strings.Contains(err.Error(), "block 2") {
			t.Fatalf("%v", err)
		}
	})
}

func TestKeysNeverPrintKeyMaterial(t *testing.T) {
	good := MustKeyPEM(t) + MustKeyPEM(t)
	keys, err := mfatoken.ParseKeys(good)
	if err != nil {
		t.Fatal(err)
	}
	var logged bytes.Buffer
	slog.New(slog.NewJSONHandler(&logged, nil)).Info("keys", "keys", keys, "value", *keys)
	slog.New(slog.NewTextHandler(&logged, nil)).Info("keys", "keys", keys, "value", *keys)
	out := fmt.Sprintf("%v %+v %#v %s %v %+v %#v", keys, keys, keys, keys, *keys, *keys, *keys) + logged.String()

	block, _ := pem.Decode([]byte(good))
	priv, _ := x509.ParsePKCS8PrivateKey(block.Bytes)
	d := priv.(*ecdsa.PrivateKey)
	dBytes, err := d.Bytes()
	if err != nil {
		t.Fatal(err)
	}
	// The kids are printed by design; a random kid may well hold "0x" (the probe for a pointer or
	// a number printed in hex), so the probes look at the output without them.
	probed := out
	for _, kid := range keys.KIDs() {
		probed = strings.ReplaceAll(probed, kid, "")
	}
	for _, secret := range []string{
		new(big.Int).SetBytes(dBytes).String(), base64.RawURLEncoding.EncodeToString(dBytes), fmt.Sprintf("%x", dBytes),
		strings.Split(good, "\n")[1][:16], "PRIVATE", "0x",
	} {
		if strings.Contains(probed, secret) {
			t.Fatalf("output holds %q: %s", secret, out)
		}
	}
	for _, kid := range keys.KIDs() {
		if !strings.Contains(out, kid) {
			t.Fatalf("output lacks kid %s: %s", kid, out)
		}
	}
}

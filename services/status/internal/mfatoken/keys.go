// Package mfatoken signs the mfa_token a relying application receives once a user has proved
// MFA (DESIGN.md Part 2): a short-lived ES256 JWT, and the JWKS that verifies it.
//
// Keys come from MFA_SIGNING_KEY: one or more PEM blocks of EC P-256 private keys. The first
// block signs; every block is published, so a key can be rolled in before it signs and kept
// published after it stops (docs/architecture.md, "MFA tokens and key rotation"). The package
// reads no environment and logs nothing; private key material never leaves it.
package mfatoken

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"strings"
)

// Keys is the parsed MFA_SIGNING_KEY: the signing key first, then the keys that are only
// published. Its String and LogValue show key ids, never key material.
type Keys struct {
	keys []key
}

type key struct {
	priv *ecdsa.PrivateKey
	jwk  publicJWK
}

// publicJWK is the RFC 7517 form of a public key, in the member order of the JWKS.
type publicJWK struct {
	Kty string `json:"kty"`
	Crv string `json:"crv"`
	X   string `json:"x"`
	Y   string `json:"y"`
	Kid string `json:"kid"`
	Use string `json:"use"`
	Alg string `json:"alg"`
}

// ParseKeys reads one or more PEM blocks of EC P-256 private keys, PKCS#8 ("PRIVATE KEY") or
// SEC 1 ("EC PRIVATE KEY"). "EC PARAMETERS" blocks, as `openssl ecparam -genkey` writes them,
// are skipped. The first key signs. Errors name the block by its position, never its content.
func ParseKeys(pemText string) (*Keys, error) {
	rest := []byte(strings.TrimSpace(pemText))
	if len(rest) == 0 {
		return nil, errors.New("mfatoken: no signing key: want one or more PEM blocks of EC P-256 private keys")
	}
	if !strings.HasPrefix(string(rest), "-----BEGIN ") {
		return nil, errors.New("mfatoken: signing key: text before the first PEM block; want only PEM blocks of EC P-256 private keys")
	}
	var ks Keys
	seen := map[string]int{}
	for n := 1; len(rest) > 0; n++ {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			return nil, fmt.Errorf("mfatoken: signing key: PEM block %d is malformed or there is text that is not a PEM block", n)
		}
		rest = []byte(strings.TrimSpace(string(rest)))
		if block.Type == "EC PARAMETERS" {
			n--
			continue
		}
		if len(block.Headers) > 0 {
			return nil, fmt.Errorf("mfatoken: signing key: PEM block %d has headers (encrypted?); want an unencrypted private key", n)
		}
		priv, err := parseBlock(block)
		if err != nil {
			return nil, fmt.Errorf("mfatoken: signing key: PEM block %d: %w", n, err)
		}
		k, err := newKey(priv)
		if err != nil {
			return nil, fmt.Errorf("mfatoken: signing key: PEM block %d: %w", n, err)
		}
		if first, dup := seen[k.jwk.Kid]; dup {
			return nil, fmt.Errorf("mfatoken: signing key: PEM block %d is the same key as block %d", n, first)
		}
		seen[k.jwk.Kid] = n
		ks.keys = append(ks.keys, k)
	}
	if len(ks.keys) == 0 {
		return nil, errors.New("mfatoken: no signing key: the PEM text holds no private key block")
	}
	return &ks, nil
}

// parseBlock returns the P-256 private key of one PEM block. Its errors are its own words:
// parser errors are dropped so that nothing derived from the key's bytes reaches a log.
func parseBlock(block *pem.Block) (*ecdsa.PrivateKey, error) {
	var priv *ecdsa.PrivateKey
	switch block.Type {
	case "PRIVATE KEY":
		parsed, err := x509.ParsePKCS8PrivateKey(block.Bytes)
		if err != nil {
			return nil, errors.New(`"PRIVATE KEY" is not a valid PKCS#8 private key (or not of a supported type)`)
		}
		p, ok := parsed.(*ecdsa.PrivateKey)
		if !ok {
			return nil, fmt.Errorf("a %s key; want EC P-256", keyType(parsed))
		}
		priv = p
	case "EC PRIVATE KEY":
		p, err := x509.ParseECPrivateKey(block.Bytes)
		if err != nil {
			return nil, errors.New(`"EC PRIVATE KEY" is not a valid SEC 1 key on a supported curve; want EC P-256`)
		}
		priv = p
	default:
		return nil, fmt.Errorf("type %q; want \"PRIVATE KEY\" (PKCS#8) or \"EC PRIVATE KEY\" (SEC 1) holding an EC P-256 key", block.Type)
	}
	if priv.Curve != elliptic.P256() {
		return nil, fmt.Errorf("an EC key on %s; want P-256 (ES256)", priv.Curve.Params().Name)
	}
	return priv, nil
}

func keyType(k any) string {
	switch t := fmt.Sprintf("%T", k); t {
	case "*rsa.PrivateKey":
		return "RSA"
	case "ed25519.PrivateKey":
		return "Ed25519"
	case "*ecdh.PrivateKey":
		return "X25519"
	default:
		return t
	}
}

func newKey(priv *ecdsa.PrivateKey) (key, error) {
	point, err := priv.PublicKey.Bytes()
	if err != nil || len(point) != 65 || point[0] != 4 {
		return key{}, errors.New("the public key cannot be encoded")
	}
	b64 := base64.RawURLEncoding.EncodeToString
	x, y := b64(point[1:33]), b64(point[33:])
	return key{priv: priv, jwk: publicJWK{
		Kty: "EC", Crv: "P-256", X: x, Y: y, Kid: thumbprint(x, y), Use: "sig", Alg: "ES256",
	}}, nil
}

// thumbprint is the RFC 7638 JWK thumbprint of a P-256 public key: base64url SHA-256 of the
// required members in lexicographic order, without whitespace.
func thumbprint(x, y string) string {
	canonical, _ := json.Marshal(struct {
		Crv string `json:"crv"`
		Kty string `json:"kty"`
		X   string `json:"x"`
		Y   string `json:"y"`
	}{"P-256", "EC", x, y})
	sum := sha256.Sum256(canonical)
	return base64.RawURLEncoding.EncodeToString(sum[:])
}

// GenerateKeyPEM returns a new EC P-256 private key as a PKCS#8 PEM block, for the dev stack
// to keep in its data dir like its other keys.
func GenerateKeyPEM() (string, error) {
	priv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return "", fmt.Errorf("mfatoken: generate key: %w", err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(priv)
	if err != nil {
		return "", fmt.Errorf("mfatoken: encode key: %w", err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})), nil
}

// KIDs returns the key ids (RFC 7638 thumbprints), the signing key's first.
func (k *Keys) KIDs() []string {
	if k == nil {
		return nil
	}
	kids := make([]string, len(k.keys))
	for i, key := range k.keys {
		kids[i] = key.jwk.Kid
	}
	return kids
}

// String shows the key ids only. (Value receivers, so that a Keys value prints safely too.)
func (k Keys) String() string {
	kids := k.KIDs()
	if len(kids) == 0 {
		return "mfatoken.Keys{}"
	}
	return fmt.Sprintf("mfatoken.Keys{signing: %s, published: [%s]}", kids[0], strings.Join(kids, " "))
}

// GoString keeps %#v from printing the private keys.
func (k Keys) GoString() string { return k.String() }

// LogValue shows the key ids only.
func (k Keys) LogValue() slog.Value {
	kids := k.KIDs()
	if len(kids) == 0 {
		return slog.GroupValue()
	}
	return slog.GroupValue(slog.String("signing_kid", kids[0]), slog.Any("kids", kids))
}

// DerivedSecret is a 32-byte secret derived from the signing key (the first key) for purpose,
// so that one configured key can also key other HMACs of the status service (the ids of
// initiations sent with an Idempotency-Key). It changes when the signing key rotates.
func (k *Keys) DerivedSecret(purpose string) ([]byte, error) {
	b, err := k.keys[0].priv.Bytes()
	if err != nil {
		return nil, fmt.Errorf("mfatoken: derive a secret: %w", err)
	}
	h := sha256.New()
	h.Write([]byte("mfaflow derived secret v1\x00" + purpose + "\x00"))
	h.Write(b)
	return h.Sum(nil), nil
}

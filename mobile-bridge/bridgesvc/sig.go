package bridgesvc

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"math/big"

	"github.com/mfaflow/mfaflow/events/commands"
)

// sigLen is an ES256 signature in JWS form: r and s, 32 bytes each, big-endian.
const sigLen = 64

// maxSigChars bounds the sig field before it is decoded: 64 bytes are 86 base64url characters.
const maxSigChars = 88

var errBadKey = errors.New("device key is not an EC P-256 JWK")

// parseDeviceKey turns a device's JWK into a public key, refusing anything but a point on P-256.
func parseDeviceKey(k *commands.DeviceKey) (*ecdsa.PublicKey, error) {
	if k == nil || k.Kty != "EC" || k.Crv != "P-256" {
		return nil, errBadKey
	}
	x, errX := base64.RawURLEncoding.DecodeString(k.X)
	y, errY := base64.RawURLEncoding.DecodeString(k.Y)
	if errX != nil || errY != nil || len(x) != 32 || len(y) != 32 {
		return nil, errBadKey
	}
	point := append(append([]byte{4}, x...), y...)
	pub, err := ecdsa.ParseUncompressedPublicKey(elliptic.P256(), point)
	if err != nil {
		return nil, errBadKey
	}
	return pub, nil
}

// verify checks an ES256 signature (JWS raw r‖s, base64url without padding) over msg.
func verify(pub *ecdsa.PublicKey, msg, sig string) bool {
	if len(sig) > maxSigChars {
		return false
	}
	raw, err := base64.RawURLEncoding.DecodeString(sig)
	if err != nil || len(raw) != sigLen {
		return false
	}
	h := sha256.Sum256([]byte(msg))
	r := new(big.Int).SetBytes(raw[:32])
	s := new(big.Int).SetBytes(raw[32:])
	return ecdsa.Verify(pub, h[:], r, s)
}

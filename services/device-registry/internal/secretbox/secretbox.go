// Package secretbox seals secrets at rest with AES-256-GCM, so that a copy of a store (a KV
// bucket backup, a MongoDB dump) does not hand out the TOTP secrets of every user.
//
// A sealed value is versioned and self-contained: 0x01 || nonce (12 bytes) || ciphertext+tag.
// The version byte leaves room for a key rotation or another cipher later without guessing.
// Associated data binds a sealed value to the record it belongs to (mfaflow uses the ph_id), so
// whoever can write the store still cannot move one user's secret into another user's record.
package secretbox

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
)

// KeySize is the key length: AES-256.
const KeySize = 32

// version1 marks AES-256-GCM with a random 96-bit nonce.
const version1 byte = 0x01

const nonceSize = 12

// Overhead is how many bytes Seal adds to a plaintext: version, nonce and GCM tag.
const Overhead = 1 + nonceSize + 16

// ErrOpen means a sealed value could not be opened: wrong key, wrong associated data, or the
// value was altered. The causes are deliberately not told apart, as GCM cannot and an attacker
// must not learn which one it was.
var ErrOpen = errors.New("secretbox: message authentication failed")

// Box seals and opens values with one key. It is safe for concurrent use.
type Box struct {
	aead cipher.AEAD
}

// New returns a Box for key, which must be exactly KeySize bytes: a shorter AES key would
// silently select AES-128 or AES-192, which is not what an operator configuring a 256-bit key
// meant.
func New(key []byte) (*Box, error) {
	if len(key) != KeySize {
		return nil, fmt.Errorf("secretbox: key must be %d bytes, got %d", KeySize, len(key))
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, fmt.Errorf("secretbox: %w", err)
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, fmt.Errorf("secretbox: %w", err)
	}
	return &Box{aead: aead}, nil
}

// GenerateKey returns a fresh random key, for the dev stack and tests.
func GenerateKey() ([]byte, error) {
	k := make([]byte, KeySize)
	if _, err := rand.Read(k); err != nil {
		return nil, fmt.Errorf("secretbox: reading random key: %w", err)
	}
	return k, nil
}

// ParseKey decodes a key as operators write it into configuration: base64 (standard or URL
// alphabet, padded or not) or hex. It must decode to exactly KeySize bytes. The error never
// echoes the input, since the input is the key.
func ParseKey(s string) ([]byte, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return nil, errors.New("secretbox: empty key")
	}
	// Hex first: 64 hex digits are also valid base64 (of 48 bytes), so the length decides
	// unambiguously in hex's favour.
	if len(s) == 2*KeySize {
		if k, err := hex.DecodeString(s); err == nil {
			return k, nil
		}
	}
	for _, enc := range []*base64.Encoding{
		base64.StdEncoding, base64.RawStdEncoding, base64.URLEncoding, base64.RawURLEncoding,
	} {
		if k, err := enc.DecodeString(s); err == nil {
			if len(k) != KeySize {
				return nil, fmt.Errorf("secretbox: key must decode to %d bytes, got %d", KeySize, len(k))
			}
			return k, nil
		}
	}
	return nil, fmt.Errorf("secretbox: key is neither base64 nor hex of %d bytes", KeySize)
}

// Seal encrypts plaintext bound to associatedData with a fresh random nonce. Random 96-bit
// nonces are safe for far more seals than a credential registry will ever make under one key.
func (b *Box) Seal(plaintext, associatedData []byte) ([]byte, error) {
	out := make([]byte, 1+nonceSize, Overhead+len(plaintext))
	out[0] = version1
	if _, err := rand.Read(out[1 : 1+nonceSize]); err != nil {
		return nil, fmt.Errorf("secretbox: reading nonce: %w", err)
	}
	return b.aead.Seal(out, out[1:1+nonceSize], plaintext, associatedData), nil
}

// Open decrypts a value made by Seal with the same key and associatedData. Any mismatch is
// ErrOpen.
func (b *Box) Open(sealed, associatedData []byte) ([]byte, error) {
	if len(sealed) < Overhead {
		return nil, ErrOpen
	}
	if sealed[0] != version1 {
		return nil, fmt.Errorf("secretbox: unknown format version %d", sealed[0])
	}
	nonce, ct := sealed[1:1+nonceSize], sealed[1+nonceSize:]
	pt, err := b.aead.Open(nil, nonce, ct, associatedData)
	if err != nil {
		return nil, ErrOpen
	}
	return pt, nil
}

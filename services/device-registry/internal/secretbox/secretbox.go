// Package secretbox seals secrets at rest with AES-256-GCM, so that a copy of a store (a KV
// bucket backup, a MongoDB dump) does not hand out the TOTP secrets of every user.
//
// A sealed value is versioned and self-contained: 0x01 || nonce (12 bytes) || ciphertext+tag for a
// single-key Box, 0x02 || key id || nonce || ciphertext+tag for a Ring (key rotation).
// The version byte leaves room for another cipher later without guessing.
// Associated data binds a sealed value to the record it belongs to (mfaflow uses the ph_id), so
// whoever can write the store still cannot move one user's secret into another user's record.
package secretbox

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"errors"
	"fmt"
	"github.com/mfaflow/mfaflow/pkg/config"
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
// alphabet, padded or not) or hex, of exactly KeySize bytes. The rules are pkg/config's, which
// every key setting (MFA_SECRET_KEY, MFA_DELIVERY_KEY) follows. The error never echoes the input.
func ParseKey(s string) ([]byte, error) {
	k, err := config.ParseKey(s, KeySize)
	if err != nil {
		return nil, fmt.Errorf("secretbox: %w", err)
	}
	return k, nil
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

// version2 marks AES-256-GCM under a key of a Ring: 0x02 || key id || nonce || ciphertext+tag.
const version2 byte = 0x02

// Ring is a set of keys for rotation without downtime: it seals with its current key, writing
// the key's id into the sealed value, and opens with whichever key the value names. Values of
// version 1 (sealed by a single-key Box, before rings) name no key and are opened by trying each.
// It is safe for concurrent use.
type Ring struct {
	current byte
	boxes   map[byte]*Box
	order   []byte // ids, current first
}

// NewRing returns a ring whose current key is keys[current].
func NewRing(current byte, keys map[byte][]byte) (*Ring, error) {
	if _, ok := keys[current]; !ok {
		return nil, fmt.Errorf("secretbox: the current key %d is not in the ring", current)
	}
	r := &Ring{current: current, boxes: map[byte]*Box{}, order: []byte{current}}
	for id, k := range keys {
		b, err := New(k)
		if err != nil {
			return nil, fmt.Errorf("secretbox: key %d: %w", id, err)
		}
		r.boxes[id] = b
		if id != current {
			r.order = append(r.order, id)
		}
	}
	return r, nil
}

// Seal encrypts plaintext with the current key.
func (r *Ring) Seal(plaintext, associatedData []byte) ([]byte, error) {
	b := r.boxes[r.current]
	out := make([]byte, 2+nonceSize, Overhead+1+len(plaintext))
	out[0], out[1] = version2, r.current
	if _, err := rand.Read(out[2 : 2+nonceSize]); err != nil {
		return nil, fmt.Errorf("secretbox: reading nonce: %w", err)
	}
	return b.aead.Seal(out, out[2:2+nonceSize], plaintext, associatedData), nil
}

// Open decrypts a value sealed by the ring (any of its keys) or by a Box with one of its keys.
func (r *Ring) Open(sealed, associatedData []byte) ([]byte, error) {
	if len(sealed) > 0 && sealed[0] == version1 {
		for _, id := range r.order {
			if pt, err := r.boxes[id].Open(sealed, associatedData); err == nil {
				return pt, nil
			}
		}
		return nil, ErrOpen
	}
	if len(sealed) < Overhead+1 || sealed[0] != version2 {
		return nil, ErrOpen
	}
	b, ok := r.boxes[sealed[1]]
	if !ok {
		return nil, fmt.Errorf("secretbox: sealed with key %d, which is not in the ring (retired too early?)", sealed[1])
	}
	pt, err := b.aead.Open(nil, sealed[2:2+nonceSize], sealed[2+nonceSize:], associatedData)
	if err != nil {
		return nil, ErrOpen
	}
	return pt, nil
}

// Current reports whether sealed was sealed with the ring's current key (nothing to rekey).
func (r *Ring) Current(sealed []byte) bool {
	return len(sealed) > 1 && sealed[0] == version2 && sealed[1] == r.current
}

// Keys returns the raw keys, current first (for keys derived from them).
func (r *Ring) Keys(raw map[byte][]byte) [][]byte {
	out := make([][]byte, 0, len(r.order))
	for _, id := range r.order {
		out = append(out, raw[id])
	}
	return out
}

// ParseKeyRing decodes MFA_SECRET_KEYS: comma-separated "id:key" entries (id 1 to 255, key as
// ParseKey takes it), the current key first. The error never echoes a key.
func ParseKeyRing(s string) (current byte, keys map[byte][]byte, err error) {
	keys = map[byte][]byte{}
	for i, entry := range strings.Split(s, ",") {
		idText, keyText, ok := strings.Cut(strings.TrimSpace(entry), ":")
		var id int
		if _, serr := fmt.Sscanf(idText, "%d", &id); !ok || serr != nil || id < 1 || id > 255 {
			return 0, nil, fmt.Errorf("secretbox: entry %d: want id:key with an id from 1 to 255", i+1)
		}
		if _, dup := keys[byte(id)]; dup {
			return 0, nil, fmt.Errorf("secretbox: key id %d appears twice", id)
		}
		k, kerr := ParseKey(keyText)
		if kerr != nil {
			return 0, nil, fmt.Errorf("secretbox: key %d: %w", id, kerr)
		}
		keys[byte(id)] = k
		if i == 0 {
			current = byte(id)
		}
	}
	return current, keys, nil
}

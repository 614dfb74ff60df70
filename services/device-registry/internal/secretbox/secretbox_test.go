package secretbox_test

import (
	"bytes"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"strings"
	"testing"

	"github.com/mfaflow/mfaflow/services/device-registry/internal/secretbox"
)

func mustBox(tb testing.TB) (*secretbox.Box, []byte) {
	tb.Helper()
	key, err := secretbox.GenerateKey()
	if err != nil {
		tb.Fatal(err)
	}
	b, err := secretbox.New(key)
	if err != nil {
		tb.Fatal(err)
	}
	return b, key
}

func TestSealOpen(t *testing.T) {
	secret := []byte("JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP")
	ad := []byte("ph-1")

	t.Run("RoundTrip", func(t *testing.T) {
		b, _ := mustBox(t)
		sealed, err := b.Seal(secret, ad)
		if err != nil {
			t.Fatal(err)
		}
		if len(sealed) != len(secret)+secretbox.Overhead || sealed[0] != 0x01 {
			t.Fatalf("sealed form: len %d, version %#x", len(sealed), sealed[0])
		}
		if bytes.Contains(sealed, secret) {
			t.Fatal("sealed value contains the plaintext")
		}
		got, err := b.Open(sealed, ad)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, secret) {
			t.Fatalf("Open = %q", got)
		}
	})

	t.Run("ErrWrongAssociatedData", func(t *testing.T) {
		b, _ := mustBox(t)
		sealed, _ := b.Seal(secret, ad)
		if _, err := b.Open(sealed, []byte("ph-2")); !errors.Is(err, secretbox.ErrOpen) {
			t.Fatalf("Open with other AD: %v", err)
		}
		if _, err := b.Open(sealed, nil); !errors.Is(err, secretbox.ErrOpen) {
			t.Fatalf("Open with no AD: %v", err)
		}
	})

	t.Run("ErrTampered", func(t *testing.T) {
		b, _ := mustBox(t)
		sealed, _ := b.Seal(secret, ad)
		for i := 1; i < len(sealed); i++ { // every byte after the version
			c := bytes.Clone(sealed)
			c[i] ^= 0x01
			if _, err := b.Open(c, ad); !errors.Is(err, secretbox.ErrOpen) {
				t.Fatalf("flip byte %d: %v", i, err)
			}
		}
		if _, err := b.Open(sealed[:len(sealed)-1], ad); !errors.Is(err, secretbox.ErrOpen) {
			t.Fatalf("truncated: %v", err)
		}
		if _, err := b.Open(sealed[:5], ad); !errors.Is(err, secretbox.ErrOpen) {
			t.Fatalf("short: %v", err)
		}
		c := bytes.Clone(sealed)
		c[0] = 0x02
		if _, err := b.Open(c, ad); err == nil {
			t.Fatal("unknown version opened")
		}
	})

	t.Run("ErrWrongKey", func(t *testing.T) {
		b1, _ := mustBox(t)
		b2, _ := mustBox(t)
		sealed, _ := b1.Seal(secret, ad)
		if _, err := b2.Open(sealed, ad); !errors.Is(err, secretbox.ErrOpen) {
			t.Fatalf("Open with other key: %v", err)
		}
	})

	t.Run("NoncesDiffer", func(t *testing.T) {
		b, _ := mustBox(t)
		seen := map[string]bool{}
		for range 100 {
			sealed, err := b.Seal(secret, ad)
			if err != nil {
				t.Fatal(err)
			}
			nonce := string(sealed[1:13])
			if seen[nonce] {
				t.Fatal("nonce repeated")
			}
			seen[nonce] = true
		}
	})
}

func TestNew(t *testing.T) {
	for _, n := range []int{0, 16, 24, 31, 33, 64} {
		if _, err := secretbox.New(make([]byte, n)); err == nil {
			t.Errorf("New with %d-byte key succeeded", n)
		}
	}
	if _, err := secretbox.New(make([]byte, 32)); err != nil {
		t.Errorf("New with 32-byte key: %v", err)
	}
}

func TestParseKey(t *testing.T) {
	key := make([]byte, 32)
	for i := range key {
		key[i] = byte(i*7 + 0xf0) // reaches bytes whose base64 differs between std and url
	}
	ok := map[string]string{
		"HexLower":      hex.EncodeToString(key),
		"HexUpper":      upper(hex.EncodeToString(key)),
		"Std":           base64.StdEncoding.EncodeToString(key),
		"RawStd":        base64.RawStdEncoding.EncodeToString(key),
		"URL":           base64.URLEncoding.EncodeToString(key),
		"RawURL":        base64.RawURLEncoding.EncodeToString(key),
		"SurroundSpace": "  " + base64.StdEncoding.EncodeToString(key) + "\n",
	}
	for name, s := range ok {
		t.Run("OK"+name, func(t *testing.T) {
			got, err := secretbox.ParseKey(s)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, key) {
				t.Fatalf("ParseKey = %x", got)
			}
		})
	}

	bad := map[string]string{
		"Empty":     "",
		"Short":     base64.StdEncoding.EncodeToString(key[:16]),
		"Long":      base64.StdEncoding.EncodeToString(append(bytes.Clone(key), 0)),
		"HexShort":  hex.EncodeToString(key[:31]),
		"HexLong":   hex.EncodeToString(append(bytes.Clone(key), 0)),
		"NotBase64": "this is not a key!",
	}
	for name, s := range bad {
		t.Run("Err"+name, func(t *testing.T) {
			if k, err := secretbox.ParseKey(s); err == nil {
				t.Fatalf("ParseKey accepted %q as %x", s, k)
			}
		})
	}

	t.Run("GeneratedKeyWorks", func(t *testing.T) {
		k, err := secretbox.GenerateKey()
		if err != nil {
			t.Fatal(err)
		}
		got, err := secretbox.ParseKey(base64.StdEncoding.EncodeToString(k))
		if err != nil || !bytes.Equal(got, k) {
			t.Fatalf("ParseKey(GenerateKey) = %x, %v", got, err)
		}
	})
}

func upper(s string) string {
	b := []byte(s)
	for i, c := range b {
		if c >= 'a' && c <= 'f' {
			b[i] = c - 'a' + 'A'
		}
	}
	return string(b)
}

func TestRingRotation(t *testing.T) {
	k1, _ := secretbox.GenerateKey()
	k2, _ := secretbox.GenerateKey()
	old, err := secretbox.New(k1)
	if err != nil {
		t.Fatal(err)
	}
	v1, _ := old.Seal([]byte("secret"), []byte("ph-1"))
	ring, err := secretbox.NewRing(2, map[byte][]byte{2: k2, 1: k1})
	if err != nil {
		t.Fatal(err)
	}
	if pt, err := ring.Open(v1, []byte("ph-1")); err != nil || string(pt) != "secret" {
		t.Fatalf("ring opens a single-key value: %q %v", pt, err)
	}
	if ring.Current(v1) {
		t.Fatal("a single-key value counts as current")
	}
	v2, err := ring.Seal([]byte("secret"), []byte("ph-1"))
	if err != nil || !ring.Current(v2) {
		t.Fatalf("seal with the current key: %v", err)
	}
	if _, err := ring.Open(v2, []byte("ph-2")); err == nil {
		t.Fatal("opened with the wrong associated data")
	}
	only1, _ := secretbox.NewRing(1, map[byte][]byte{1: k1})
	if _, err := only1.Open(v2, []byte("ph-1")); err == nil || !strings.Contains(err.Error(), "not in the ring") {
		t.Fatalf("a value of a key not in the ring: %v", err)
	}
	cur, keys, err := secretbox.ParseKeyRing("2:" + base64.StdEncoding.EncodeToString(k2) + ", 1:" + hex.EncodeToString(k1))
	if err != nil || cur != 2 || len(keys) != 2 || !bytes.Equal(keys[1], k1) {
		t.Fatalf("ParseKeyRing: %d %v %v", cur, len(keys), err)
	}
	for _, bad := range []string{"", "x:abc", "0:" + hex.EncodeToString(k1), "1:" + hex.EncodeToString(k1) + ",1:" + hex.EncodeToString(k2), "1:short"} {
		if _, _, err := secretbox.ParseKeyRing(bad); err == nil {
			t.Errorf("ParseKeyRing(%q) accepted", bad)
		} else if strings.Contains(err.Error(), hex.EncodeToString(k1)) {
			t.Errorf("error echoes a key: %v", err)
		}
	}
}

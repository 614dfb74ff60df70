package testkit_test

import (
	"crypto/ecdsa"
	"crypto/x509"
	"testing"

	"github.com/mfaflow/mfaflow/pkg/testkit"
)

// TestPasskeyKeyCoordinates: every key's x and y take 32 bytes without leading zeros, so the
// software authenticator's COSE key always has full-length coordinates (one draw in about a
// hundred would not: 500 draws catch that with near certainty).
func TestPasskeyKeyCoordinates(t *testing.T) {
	for i := range 500 {
		k, err := x509.ParsePKCS8PrivateKey(testkit.PasskeyKey())
		if err != nil {
			t.Fatal(err)
		}
		ek := k.(*ecdsa.PrivateKey)
		if len(ek.X.Bytes()) != 32 || len(ek.Y.Bytes()) != 32 {
			t.Fatalf("draw %d: x %d bytes, y %d bytes", i, len(ek.X.Bytes()), len(ek.Y.Bytes()))
		}
	}
}

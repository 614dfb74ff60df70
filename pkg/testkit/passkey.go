package testkit

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
)

// PasskeyKey returns a new P-256 private key, PKCS #8, for a software authenticator's passkey
// (descope/virtualwebauthn: NewCredentialWithImportedKey(KeyTypeEC2, PasskeyKey())).
//
// Why not its NewCredential: it writes the public key's coordinates without their leading zero
// bytes, so about one key in a hundred has a 31-byte x or y, which a COSE key must not have and
// go-webauthn rightly refuses ("EC2 key x or y coordinate has invalid length"); a test that
// drew one failed at random. PasskeyKey draws again until both coordinates fill 32 bytes.
func PasskeyKey() []byte {
	for {
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			panic(err)
		}
		pub, err := k.PublicKey.ECDH()
		if err != nil {
			panic(err)
		}
		// The uncompressed point is 0x04 || x || y, each coordinate 32 bytes with leading zeros.
		point := pub.Bytes()
		if point[1] == 0 || point[33] == 0 {
			continue
		}
		der, err := x509.MarshalPKCS8PrivateKey(k)
		if err != nil {
			panic(err)
		}
		return der
	}
}

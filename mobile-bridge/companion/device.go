package companion

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
	"os"
	"path/filepath"

	"github.com/mfaflow/mfaflow/events/protocol"
)

// NewDeviceKey makes the key pair of a push-capable device (ECDSA P-256). The private half never
// leaves the device; the public half goes to the bridge in the enroll frame (see PublicJWK).
func NewDeviceKey() (*ecdsa.PrivateKey, error) {
	return ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
}

// PublicJWK is the public half of a device key as the enroll frame's device_key: an EC P-256
// JWK with x and y as 32-byte big-endian coordinates, base64url without padding.
func PublicJWK(pub *ecdsa.PublicKey) (protocol.JWK, error) {
	point, err := pub.Bytes() // 0x04 ‖ x ‖ y
	if err != nil || len(point) != 65 {
		return protocol.JWK{}, fmt.Errorf("companion: device key is not a P-256 key")
	}
	enc := base64.RawURLEncoding
	return protocol.JWK{Kty: "EC", Crv: "P-256", X: enc.EncodeToString(point[1:33]), Y: enc.EncodeToString(point[33:])}, nil
}

// Sign signs msg the way the bridge checks it: ES256 (ECDSA P-256 over SHA-256 of the UTF-8
// bytes), the signature as JWS raw r‖s (32 bytes each, big-endian), base64url without padding.
func Sign(key *ecdsa.PrivateKey, msg string) (string, error) {
	h := sha256.Sum256([]byte(msg))
	r, s, err := ecdsa.Sign(rand.Reader, key, h[:])
	if err != nil {
		return "", fmt.Errorf("companion: sign: %w", err)
	}
	var raw [64]byte
	r.FillBytes(raw[:32])
	s.FillBytes(raw[32:])
	return base64.RawURLEncoding.EncodeToString(raw[:]), nil
}

// SignLogin signs the login of device phID with the nonce of the bridge's hello.
func SignLogin(key *ecdsa.PrivateKey, nonce, phID string) (string, error) {
	return Sign(key, protocol.LoginMessage(nonce, phID))
}

// SignPush signs an answer to a push challenge.
func SignPush(key *ecdsa.PrivateKey, challengeID, decision, number string) (string, error) {
	return Sign(key, protocol.PushMessage(challengeID, decision, number))
}

// DeviceFile is what a push-capable companion keeps about itself after enrolling: which
// device it is, where its bridge is, and its private key (PKCS#8, PEM). It is a secret.
type DeviceFile struct {
	PHID      string `json:"ph_id"`
	DeviceID  string `json:"device_id,omitempty"`
	Name      string `json:"name,omitempty"`
	BridgeURL string `json:"bridge_url"`
	// PrivateKey is the device key as a PKCS#8 PEM block ("PRIVATE KEY").
	PrivateKey string `json:"private_key"`
}

// NewDeviceFile fills a DeviceFile with key.
func NewDeviceFile(phID, deviceID, name, bridgeURL string, key *ecdsa.PrivateKey) (DeviceFile, error) {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return DeviceFile{}, fmt.Errorf("companion: encode device key: %w", err)
	}
	pemKey := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
	return DeviceFile{PHID: phID, DeviceID: deviceID, Name: name, BridgeURL: bridgeURL, PrivateKey: string(pemKey)}, nil
}

// Key decodes the device's private key.
func (d DeviceFile) Key() (*ecdsa.PrivateKey, error) {
	block, _ := pem.Decode([]byte(d.PrivateKey))
	if block == nil || block.Type != "PRIVATE KEY" {
		return nil, errors.New("companion: device file: private_key is not a PKCS#8 PEM block")
	}
	k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("companion: device file: %w", err)
	}
	ek, ok := k.(*ecdsa.PrivateKey)
	if !ok || ek.Curve != elliptic.P256() {
		return nil, errors.New("companion: device file: private_key is not an ECDSA P-256 key")
	}
	return ek, nil
}

// SaveDeviceFile writes d to path with mode 0600, replacing the file atomically so a crash never
// leaves half a key behind.
func SaveDeviceFile(path string, d DeviceFile) error {
	data, err := json.MarshalIndent(d, "", "  ")
	if err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), ".device-*.tmp") // created 0600
	if err != nil {
		return fmt.Errorf("companion: write device file: %w", err)
	}
	defer os.Remove(tmp.Name()) // after a successful rename there is nothing left to remove
	if _, err := tmp.Write(append(data, '\n')); err != nil {
		_ = tmp.Close()
		return fmt.Errorf("companion: write device file: %w", err)
	}
	if err := tmp.Chmod(0o600); err != nil {
		_ = tmp.Close()
		return fmt.Errorf("companion: write device file: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("companion: write device file: %w", err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("companion: write device file: %w", err)
	}
	return nil
}

// LoadDeviceFile reads a device file and checks that it holds a usable key.
func LoadDeviceFile(path string) (DeviceFile, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return DeviceFile{}, fmt.Errorf("companion: read device file: %w", err)
	}
	var d DeviceFile
	if err := json.Unmarshal(data, &d); err != nil {
		return DeviceFile{}, fmt.Errorf("companion: device file %s is not JSON: %w", path, err)
	}
	if d.PHID == "" || d.BridgeURL == "" {
		return DeviceFile{}, fmt.Errorf("companion: device file %s lacks ph_id or bridge_url", path)
	}
	if _, err := d.Key(); err != nil {
		return DeviceFile{}, err
	}
	return d, nil
}

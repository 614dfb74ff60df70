package kv

import (
	"time"

	"github.com/mfaflow/mfaflow/pkg/totp"
	"github.com/mfaflow/mfaflow/services/device-registry/internal/device"
)

// credentialDoc is a credential as stored in the bucket. It is this backend's own model so
// that the domain type can change without breaking stored documents, and the other way round.
type credentialDoc struct {
	PHID     string `json:"ph_id"`
	DeviceID string `json:"device_id,omitempty"`
	Sub      string `json:"sub"`
	StatusID string `json:"status_id"`
	Method   string `json:"method"`
	// SealedSecret is the secretbox output (never the plaintext secret), base64 in JSON.
	// Absent from tombstones.
	SealedSecret []byte    `json:"sealed_secret,omitempty"`
	Algorithm    string    `json:"algorithm"`
	Digits       int       `json:"digits"`
	Period       int       `json:"period"`
	Verified     bool      `json:"verified"`
	FriendlyName string    `json:"friendly_name,omitempty"`
	Platform     string    `json:"platform,omitempty"`
	LastStep     int64     `json:"last_step,omitempty"`
	LastStepFor  string    `json:"last_step_for,omitempty"`
	CreatedAt    time.Time `json:"created_at"`
	ExpiresAt    time.Time `json:"expires_at,omitzero"`
	VerifiedAt   time.Time `json:"verified_at,omitzero"`
	LastUsedAt   time.Time `json:"last_used_at,omitzero"`
	PushKey      *pushKey  `json:"push_key,omitempty"`
	PendingID    string    `json:"pending_id,omitempty"`
}

// pushKey is a device's EC P-256 public key (JWK coordinates).
type pushKey struct {
	X string `json:"x"`
	Y string `json:"y"`
}

func toDoc(c device.Credential) credentialDoc {
	return credentialDoc{
		PHID:         c.PHID,
		DeviceID:     c.DeviceID,
		Sub:          c.Sub,
		StatusID:     c.StatusID,
		Method:       c.Method,
		SealedSecret: c.SealedSecret,
		Algorithm:    c.Params.Algorithm,
		Digits:       c.Params.Digits,
		Period:       c.Params.Period,
		Verified:     c.Verified,
		FriendlyName: c.FriendlyName,
		Platform:     c.Platform,
		LastStep:     c.LastStep,
		LastStepFor:  c.LastStepFor,
		CreatedAt:    c.CreatedAt,
		ExpiresAt:    c.ExpiresAt,
		VerifiedAt:   c.VerifiedAt,
		LastUsedAt:   c.LastUsedAt,
		PushKey:      toPushKeyDoc(c.PushKey),
		PendingID:    c.PendingID,
	}
}

func toPushKeyDoc(k *device.PushKey) *pushKey {
	if k == nil {
		return nil
	}
	return &pushKey{X: k.X, Y: k.Y}
}

func toDomain(d credentialDoc, version uint64) device.Credential {
	return device.Credential{
		PHID:         d.PHID,
		DeviceID:     d.DeviceID,
		Sub:          d.Sub,
		StatusID:     d.StatusID,
		Method:       d.Method,
		SealedSecret: d.SealedSecret,
		Params:       totp.Params{Algorithm: d.Algorithm, Digits: d.Digits, Period: d.Period},
		Verified:     d.Verified,
		FriendlyName: d.FriendlyName,
		Platform:     d.Platform,
		LastStep:     d.LastStep,
		LastStepFor:  d.LastStepFor,
		CreatedAt:    d.CreatedAt,
		ExpiresAt:    d.ExpiresAt,
		VerifiedAt:   d.VerifiedAt,
		LastUsedAt:   d.LastUsedAt,
		Version:      version,
		PushKey:      toPushKey(d.PushKey),
		PendingID:    d.PendingID,
	}
}

func toPushKey(k *pushKey) *device.PushKey {
	if k == nil {
		return nil
	}
	return &device.PushKey{X: k.X, Y: k.Y}
}

// tombstone is what a removed credential leaves until the relay purges it: enough to say whose
// device it was, nothing that could verify a code.
func tombstone(c device.Credential) credentialDoc {
	d := toDoc(c)
	d.SealedSecret = nil
	d.LastStep = 0
	d.LastStepFor = ""
	d.PushKey = nil
	return d
}

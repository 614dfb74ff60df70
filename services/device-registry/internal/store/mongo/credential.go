package mongo

import (
	"time"

	"github.com/mfaflow/mfaflow/pkg/totp"
	"github.com/mfaflow/mfaflow/services/device-registry/internal/device"
)

// credentialDoc is a credential as stored in the collection. It is this backend's own model so
// that the domain type can change without breaking stored documents, and the other way round.
type credentialDoc struct {
	PHID     string `bson:"ph_id"`
	DeviceID string `bson:"device_id,omitempty"`
	Sub      string `bson:"sub"`
	StatusID string `bson:"status_id"`
	Method   string `bson:"method"`
	// SealedSecret is the secretbox output (never the plaintext secret), binary in BSON.
	// Absent from tombstones.
	SealedSecret []byte    `bson:"sealed_secret,omitempty"`
	Algorithm    string    `bson:"algorithm"`
	Digits       int       `bson:"digits"`
	Period       int       `bson:"period"`
	Verified     bool      `bson:"verified"`
	FriendlyName string    `bson:"friendly_name,omitempty"`
	Platform     string    `bson:"platform,omitempty"`
	LastStep     int64     `bson:"last_step,omitempty"`
	LastStepFor  string    `bson:"last_step_for,omitempty"`
	CreatedAt    time.Time `bson:"created_at"`
	ExpiresAt    time.Time `bson:"expires_at"`
	VerifiedAt   time.Time `bson:"verified_at"`
	LastUsedAt   time.Time `bson:"last_used_at"`
	PushKey      *pushKey  `bson:"push_key,omitempty"`
	PendingID    string    `bson:"pending_id,omitempty"`
}

// pushKey is a device's EC P-256 public key (JWK coordinates).
type pushKey struct {
	X string `bson:"x"`
	Y string `bson:"y"`
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

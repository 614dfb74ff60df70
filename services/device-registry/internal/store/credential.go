// Package store holds what the registry's storage backends (internal/store/kv and
// internal/store/mongo) share: the stored form of a credential and its converters. The
// backends differ in how they store a document, not in what it holds, so the document is
// declared once, with each backend's field names in its own tags: json for the KV bucket, bson
// for MongoDB. The names are part of data already stored: renaming a tag breaks reading it.
package store

import (
	"time"

	"github.com/mfaflow/mfaflow/pkg/totp"
	"github.com/mfaflow/mfaflow/services/device-registry/internal/device"
)

// CredentialDoc is a credential as a backend stores it. It is the backends' own model so that
// the domain type can change without breaking stored documents, and the other way round.
//
// Optional times are left out of a KV value when zero (omitzero) and stored as the zero date
// in MongoDB, as each backend always has.
type CredentialDoc struct {
	PHID     string `json:"ph_id" bson:"ph_id"`
	DeviceID string `json:"device_id,omitempty" bson:"device_id,omitempty"`
	Sub      string `json:"sub" bson:"sub"`
	StatusID string `json:"status_id" bson:"status_id"`
	Method   string `json:"method" bson:"method"`
	// Destination is an EMAIL or SMS factor's masked address (the address itself is sealed in
	// SealedSecret).
	Destination string `json:"destination,omitempty" bson:"destination,omitempty"`
	// SealedSecret is the secretbox output (never the plaintext secret): base64 in JSON,
	// binary in BSON. Absent from tombstones.
	SealedSecret []byte      `json:"sealed_secret,omitempty" bson:"sealed_secret,omitempty"`
	Algorithm    string      `json:"algorithm" bson:"algorithm"`
	Digits       int         `json:"digits" bson:"digits"`
	Period       int         `json:"period" bson:"period"`
	Verified     bool        `json:"verified" bson:"verified"`
	FriendlyName string      `json:"friendly_name,omitempty" bson:"friendly_name,omitempty"`
	Platform     string      `json:"platform,omitempty" bson:"platform,omitempty"`
	LastStep     int64       `json:"last_step,omitempty" bson:"last_step,omitempty"`
	LastStepFor  string      `json:"last_step_for,omitempty" bson:"last_step_for,omitempty"`
	CreatedAt    time.Time   `json:"created_at" bson:"created_at"`
	ExpiresAt    time.Time   `json:"expires_at,omitzero" bson:"expires_at"`
	VerifiedAt   time.Time   `json:"verified_at,omitzero" bson:"verified_at"`
	LastUsedAt   time.Time   `json:"last_used_at,omitzero" bson:"last_used_at"`
	PushKey      *PushKeyDoc `json:"push_key,omitempty" bson:"push_key,omitempty"`
	PendingID    string      `json:"pending_id,omitempty" bson:"pending_id,omitempty"`
	// Passkey is a WEBAUTHN factor's credential record.
	Passkey *PasskeyDoc `json:"passkey,omitempty" bson:"passkey,omitempty"`
}

// PasskeyDoc is a passkey's credential record (webauthn.Credential's parts): its id and public
// key (COSE), signature counter, the authenticator model (AAGUID), transports, attestation
// type and format, attachment and the flags.
type PasskeyDoc struct {
	ID                []byte   `json:"id" bson:"id"`
	PublicKey         []byte   `json:"public_key" bson:"public_key"`
	UserHandle        []byte   `json:"user_handle,omitempty" bson:"user_handle,omitempty"`
	SignCount         uint32   `json:"sign_count,omitempty" bson:"sign_count,omitempty"`
	AAGUID            []byte   `json:"aaguid,omitempty" bson:"aaguid,omitempty"`
	Transports        []string `json:"transports,omitempty" bson:"transports,omitempty"`
	AttestationType   string   `json:"attestation_type,omitempty" bson:"attestation_type,omitempty"`
	AttestationFormat string   `json:"attestation_format,omitempty" bson:"attestation_format,omitempty"`
	Attachment        string   `json:"attachment,omitempty" bson:"attachment,omitempty"`
	UserPresent       bool     `json:"up,omitempty" bson:"up,omitempty"`
	UserVerified      bool     `json:"uv,omitempty" bson:"uv,omitempty"`
	BackupEligible    bool     `json:"be,omitempty" bson:"be,omitempty"`
	BackupState       bool     `json:"bs,omitempty" bson:"bs,omitempty"`
}

func toPasskeyDoc(p *device.Passkey) *PasskeyDoc {
	if p == nil {
		return nil
	}
	return &PasskeyDoc{ID: p.ID, PublicKey: p.PublicKey, UserHandle: p.UserHandle, SignCount: p.SignCount, AAGUID: p.AAGUID, Transports: p.Transports,
		AttestationType: p.AttestationType, AttestationFormat: p.AttestationFormat, Attachment: p.Attachment,
		UserPresent: p.UserPresent, UserVerified: p.UserVerified, BackupEligible: p.BackupEligible, BackupState: p.BackupState}
}

func toPasskey(d *PasskeyDoc) *device.Passkey {
	if d == nil {
		return nil
	}
	return &device.Passkey{ID: d.ID, PublicKey: d.PublicKey, UserHandle: d.UserHandle, SignCount: d.SignCount, AAGUID: d.AAGUID, Transports: d.Transports,
		AttestationType: d.AttestationType, AttestationFormat: d.AttestationFormat, Attachment: d.Attachment,
		UserPresent: d.UserPresent, UserVerified: d.UserVerified, BackupEligible: d.BackupEligible, BackupState: d.BackupState}
}

// PushKeyDoc is a device's EC P-256 public key (JWK coordinates).
type PushKeyDoc struct {
	X string `json:"x" bson:"x"`
	Y string `json:"y" bson:"y"`
}

// ToDoc converts a credential to its stored form (Version is the backend's, not stored).
func ToDoc(c device.Credential) CredentialDoc {
	return CredentialDoc{
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
		Destination:  c.Destination,
		Passkey:      toPasskeyDoc(c.Passkey),
	}
}

func toPushKeyDoc(k *device.PushKey) *PushKeyDoc {
	if k == nil {
		return nil
	}
	return &PushKeyDoc{X: k.X, Y: k.Y}
}

// ToDomain converts a stored credential back, with the backend's version of the document.
func ToDomain(d CredentialDoc, version uint64) device.Credential {
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
		Destination:  d.Destination,
		Passkey:      toPasskey(d.Passkey),
	}
}

func toPushKey(k *PushKeyDoc) *device.PushKey {
	if k == nil {
		return nil
	}
	return &device.PushKey{X: k.X, Y: k.Y}
}

// Tombstone is what a removed credential leaves until the relay purges it: enough to say whose
// device it was, nothing that could verify a code.
func Tombstone(c device.Credential) CredentialDoc {
	d := ToDoc(c)
	d.SealedSecret = nil
	d.LastStep = 0
	d.LastStepFor = ""
	d.PushKey = nil
	d.Passkey = nil
	return d
}

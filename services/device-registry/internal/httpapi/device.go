package httpapi

import (
	"time"

	"github.com/mfaflow/mfaflow/services/device-registry/internal/device"
)

// deviceDTO is a device as frontends see it (cidaas's device-srv shape). It is built field by
// field from the domain type, so nothing else — the sealed secret above all — can leak into it.
type deviceDTO struct {
	PHID         string     `json:"ph_id"`
	DeviceID     string     `json:"device_id"`
	Type         string     `json:"type"`
	FriendlyName string     `json:"friendly_name"`
	Verified     bool       `json:"verified"`
	CreatedAt    time.Time  `json:"created_at"`
	LastUsedAt   *time.Time `json:"last_used_at,omitempty"`
	Platform     string     `json:"platform,omitempty"`
	// Push says the device can approve push sign-ins (it sent a device key at enrollment).
	Push bool `json:"push"`
	// Destination is where an EMAIL or SMS factor's codes go, masked.
	Destination string `json:"destination,omitempty"`
	// AAGUID names a passkey's (WEBAUTHN) authenticator model, when it reported one; BackedUp
	// says the passkey is synced or backed up (its backup state flag). Passkeys only.
	AAGUID   string `json:"aaguid,omitempty"`
	BackedUp *bool  `json:"backed_up,omitempty"`
}

// renameRequest is the PATCH body. The name is a pointer so that a missing field is told apart
// from an empty one in the error.
type renameRequest struct {
	FriendlyName *string `json:"friendly_name"`
}

func toDTO(c device.Credential) deviceDTO {
	d := deviceDTO{
		PHID:         c.PHID,
		DeviceID:     c.DeviceID,
		Type:         c.Method,
		FriendlyName: c.FriendlyName,
		Verified:     c.Verified,
		CreatedAt:    c.CreatedAt.UTC(),
		Platform:     c.Platform,
		Push:         c.PushKey != nil,
		Destination:  c.Destination,
	}
	if p := c.Passkey; p != nil {
		d.AAGUID = p.AAGUIDString()
		backedUp := p.BackupState
		d.BackedUp = &backedUp
	}
	if !c.LastUsedAt.IsZero() {
		t := c.LastUsedAt.UTC()
		d.LastUsedAt = &t
	}
	return d
}

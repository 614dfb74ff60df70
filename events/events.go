// Package events is mfaflow's event catalogue: the CloudEvents every service publishes on the
// MFA_EVENTS JetStream stream, their subjects and their payloads.
//
// It is a contract shared with downstream consumers, so it holds names and shapes only, no logic
// beyond building an envelope. Renaming a field here breaks consumers: add fields, never rename.
// No payload ever carries a TOTP secret, a verification code or an exchange id (the exchange id is
// the companion app's capability for an open enrollment).
package events

import (
	"encoding/json"
	"strings"
	"time"
)

// Stream is the JetStream stream that stores every event.
const Stream = "MFA_EVENTS"

// SubjectPrefix starts every event subject; the stream captures SubjectPrefix + ">".
const SubjectPrefix = "mfa.events."

// StreamSubjects is the subject filter of Stream.
const StreamSubjects = SubjectPrefix + ">"

// SpecVersion is the CloudEvents version of every envelope.
const SpecVersion = "1.0"

// Type is a CloudEvent type. Its NATS subject is SubjectPrefix plus the type without "mfa.".
type Type string

// Event types. Enrollment events have the status id as CloudEvent subject; device events the ph_id.
const (
	// EnrollmentInitiated: a user started an enrollment; the QR is on screen.
	EnrollmentInitiated Type = "mfa.enrollment.initiated"
	// EnrollmentScanned: the companion app reported that it scanned the QR.
	EnrollmentScanned Type = "mfa.enrollment.scanned"
	// EnrollmentEnrolled: a correct code proved possession; the device is registered.
	EnrollmentEnrolled Type = "mfa.enrollment.enrolled"
	// EnrollmentExpired: the enrollment reached expires_at before it completed.
	EnrollmentExpired Type = "mfa.enrollment.expired"
	// EnrollmentCancelled: the user cancelled the enrollment.
	EnrollmentCancelled Type = "mfa.enrollment.cancelled"
	// EnrollmentFailed: too many wrong codes were entered for the enrollment.
	EnrollmentFailed Type = "mfa.enrollment.failed"
	// DeviceRegistered: a verified authenticator device joined the user's registry.
	DeviceRegistered Type = "mfa.device.registered"
	// DeviceRenamed: the user gave a device a new friendly name.
	DeviceRenamed Type = "mfa.device.renamed"
	// DeviceRemoved: the user removed a device; its secret was destroyed.
	DeviceRemoved Type = "mfa.device.removed"
)

// Types lists every event type in the catalogue.
var Types = []Type{
	EnrollmentInitiated, EnrollmentScanned, EnrollmentEnrolled, EnrollmentExpired,
	EnrollmentCancelled, EnrollmentFailed, DeviceRegistered, DeviceRenamed, DeviceRemoved,
}

// Subject is the NATS subject an event of type t is published on.
func (t Type) Subject() string { return SubjectPrefix + strings.TrimPrefix(string(t), "mfa.") }

// Envelope is a CloudEvents 1.0 structured-mode JSON event.
type Envelope struct {
	SpecVersion     string          `json:"specversion"`
	ID              string          `json:"id"`
	Source          string          `json:"source"`
	Type            Type            `json:"type"`
	Subject         string          `json:"subject"`
	Time            time.Time       `json:"time"`
	DataContentType string          `json:"datacontenttype"`
	DataSchema      string          `json:"dataschema,omitempty"`
	Data            json.RawMessage `json:"data"`
}

// Sources name the publishing service in the CloudEvent `source` attribute.
const (
	SourceStatus   = "/mfaflow/status"
	SourceRegistry = "/mfaflow/device-registry"
)

// New builds an envelope. id must be unique per fact and stable across retries of the same fact,
// because it doubles as the JetStream Nats-Msg-Id that deduplicates publishes.
func New(id, source string, t Type, subject string, at time.Time, data any) (Envelope, error) {
	raw, err := json.Marshal(data)
	if err != nil {
		return Envelope{}, err
	}
	return Envelope{
		SpecVersion:     SpecVersion,
		ID:              id,
		Source:          source,
		Type:            t,
		Subject:         subject,
		Time:            at.UTC(),
		DataContentType: "application/json",
		DataSchema:      SchemaURI(t),
		Data:            raw,
	}, nil
}

// SchemaURI is the `dataschema` of events of type t: the schema file in this module.
func SchemaURI(t Type) string {
	return "https://mfaflow.dev/events/schemas/" + string(t) + ".json"
}

// Enrollment is the data of every mfa.enrollment.* event.
type Enrollment struct {
	// StatusID identifies the enrollment (also the CloudEvent subject).
	StatusID string `json:"status_id"`
	// Sub is the user the enrollment belongs to.
	Sub string `json:"sub"`
	// Method is the verification type, "TOTP".
	Method string `json:"type"`
	// Status is the state the enrollment entered.
	Status string `json:"status"`
	// PreviousStatus is the state it left; empty for mfa.enrollment.initiated.
	PreviousStatus string `json:"previous_status,omitempty"`
	// ExpiresAt is when a pending enrollment expires.
	ExpiresAt time.Time `json:"expires_at"`
	// DeviceID is the companion's device id (scanned, enrolled) or the assigned one (enrolled).
	DeviceID string `json:"device_id,omitempty"`
	// Platform is the companion's platform, when it reported one.
	Platform string `json:"platform,omitempty"`
	// PHID is the registered device's id (enrolled only).
	PHID string `json:"ph_id,omitempty"`
	// Channel says how the step was taken: "companion" (mobile bridge) or "frontend" (typed code).
	Channel string `json:"channel,omitempty"`
	// Reason explains failed ("too_many_attempts").
	Reason string `json:"reason,omitempty"`
	// FailedAttempts counts the wrong codes entered so far (failed only).
	FailedAttempts int `json:"failed_attempts,omitempty"`
}

// Device is the data of every mfa.device.* event.
type Device struct {
	// PHID identifies the device in the registry (also the CloudEvent subject).
	PHID string `json:"ph_id"`
	// DeviceID is the authenticator device's own id.
	DeviceID string `json:"device_id"`
	// Sub is the user the device belongs to.
	Sub string `json:"sub"`
	// Method is the verification type, "TOTP".
	Method string `json:"type"`
	// FriendlyName is the name the user gave the device.
	FriendlyName string `json:"friendly_name,omitempty"`
	// StatusID is the enrollment that registered the device.
	StatusID string `json:"status_id,omitempty"`
}

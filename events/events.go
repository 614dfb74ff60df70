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
	// DeviceRemoved: the user (or an administrator, then data.actor) removed a device; its
	// secret was destroyed.
	DeviceRemoved Type = "mfa.device.removed"

	// Verification events have the authentication's status id as CloudEvent subject, except
	// mfa.verification.locked and mfa.verification.unlocked, whose subject is the user (a lock
	// is about the user, not one authentication).

	// VerificationInitiated: a relying app started an authentication for a user.
	VerificationInitiated Type = "mfa.verification.initiated"
	// VerificationSucceeded: a right code (or recovery code) authenticated the user.
	VerificationSucceeded Type = "mfa.verification.succeeded"
	// VerificationFailed: a code was refused (wrong or replayed); the authentication stays open.
	VerificationFailed Type = "mfa.verification.failed"
	// VerificationLocked: too many wrong codes; the user's code checks are locked until locked_until.
	VerificationLocked Type = "mfa.verification.locked"
	// VerificationUnlocked: an administrator lifted the user's lock and forgot the wrong codes.
	VerificationUnlocked Type = "mfa.verification.unlocked"
	// VerificationExpired: the authentication reached expires_at before it succeeded.
	VerificationExpired Type = "mfa.verification.expired"
	// VerificationCancelled: the caller cancelled the authentication (or a newer push replaced it).
	VerificationCancelled Type = "mfa.verification.cancelled"
	// VerificationDenied: the user denied a push sign-in, or answered it with the wrong number.
	VerificationDenied Type = "mfa.verification.denied"

	// Push events have the authentication's status id as CloudEvent subject.

	// PushSent: a push challenge went out to the user's push-capable devices.
	PushSent Type = "mfa.push.sent"
	// PushAcknowledged: the challenge reached a logged-in device.
	PushAcknowledged Type = "mfa.push.acknowledged"

	// Recovery events have the user as CloudEvent subject.

	// RecoveryGenerated: a fresh set of recovery codes replaced the user's previous set.
	RecoveryGenerated Type = "mfa.recovery.generated"
	// RecoveryUsed: a recovery code was spent as a second factor.
	RecoveryUsed Type = "mfa.recovery.used"

	// Factors events have the user as CloudEvent subject.

	// FactorsReset: an administrator reset all of the user's factors (Okta's reset_factors):
	// every device removed, the recovery codes deleted, the lockout cleared.
	FactorsReset Type = "mfa.factors.reset"

	// Delivery events have the delivery id as CloudEvent subject.

	// DeliveryFailed: the notifier gave up on a message (a code) before it expired: the mail
	// server or SMS provider kept refusing it, or it could not be built. Never the address in
	// full or the code.
	DeliveryFailed Type = "mfa.delivery.failed"
)

// Types lists every event type in the catalogue.
var Types = []Type{
	EnrollmentInitiated, EnrollmentScanned, EnrollmentEnrolled, EnrollmentExpired,
	EnrollmentCancelled, EnrollmentFailed, DeviceRegistered, DeviceRenamed, DeviceRemoved,
	VerificationInitiated, VerificationSucceeded, VerificationFailed, VerificationLocked,
	VerificationExpired, VerificationCancelled, VerificationDenied, RecoveryGenerated, RecoveryUsed,
	DeliveryFailed,
	PushSent, PushAcknowledged, VerificationUnlocked, FactorsReset,
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
	SourceNotifier = "/mfaflow/notifier"
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
	// Actor is the administrator (the admin token's sub) who removed the device for the user;
	// empty when the user acted (removed only).
	Actor string `json:"actor,omitempty"`
}

// Verification is the data of mfa.verification.initiated, succeeded, failed, expired and
// cancelled. It never carries a code.
type Verification struct {
	// StatusID identifies the authentication (also the CloudEvent subject).
	StatusID string `json:"status_id"`
	// Sub is the user being authenticated.
	Sub string `json:"sub"`
	// Method is the factor: "TOTP", "BACKUPCODE" or "PUSH".
	Method string `json:"type"`
	// Status is the state the authentication entered (failed: the state it stays in).
	Status string `json:"status"`
	// PreviousStatus is the state it left; empty for initiated and failed.
	PreviousStatus string `json:"previous_status,omitempty"`
	// ExpiresAt is when an open authentication expires.
	ExpiresAt time.Time `json:"expires_at"`
	// ClientID is the relying app that started the authentication (the mfa_token audience).
	ClientID string `json:"client_id,omitempty"`
	// PHID is the device whose code matched or that answered the push (succeeded with TOTP or
	// PUSH, denied).
	PHID string `json:"ph_id,omitempty"`
	// Reason says why a code was refused: "invalid_code" or "code_replayed" (failed), or why a
	// push was denied: "denied", "not_me" or "wrong_number" (denied).
	Reason string `json:"reason,omitempty"`
	// FailedAttempts counts the refused codes of this authentication so far (failed only).
	FailedAttempts int `json:"failed_attempts,omitempty"`
	// Context is what the relying app said about the sign-in (app, ip, user_agent, location).
	Context map[string]string `json:"context,omitempty"`
}

// Lock is the data of mfa.verification.locked.
type Lock struct {
	// Sub is the locked user (also the CloudEvent subject).
	Sub string `json:"sub"`
	// LockedUntil is when code checks open again.
	LockedUntil time.Time `json:"locked_until"`
	// Lock counts the user's locks in a row (1 for the first); each doubles the back-off.
	Lock int `json:"lock"`
	// FailedAttempts is how many wrong codes in a row caused it.
	FailedAttempts int `json:"failed_attempts"`
}

// Unlock is the data of mfa.verification.unlocked.
type Unlock struct {
	// Sub is the unlocked user (also the CloudEvent subject).
	Sub string `json:"sub"`
	// Actor is the administrator who unlocked the user (the admin token's sub).
	Actor string `json:"actor"`
}

// Reset is the data of mfa.factors.reset.
type Reset struct {
	// Sub is the user whose factors were reset (also the CloudEvent subject).
	Sub string `json:"sub"`
	// DevicesRemoved is how many devices the reset removed (each also has mfa.device.removed).
	DevicesRemoved int `json:"devices_removed"`
	// RecoveryCodesRemoved says whether the reset deleted a set of recovery codes.
	RecoveryCodesRemoved bool `json:"recovery_codes_removed"`
	// Actor is the administrator who reset the factors (the admin token's sub), or the user
	// who disabled MFA.
	Actor string `json:"actor"`
	// Reason is why: "admin_reset" (an administrator) or "user_disabled" (the user disabled MFA,
	// confirmed with a fresh second factor or an emailed link). Empty in events of versions
	// before it was added: read as admin_reset.
	Reason string `json:"reason,omitempty"`
}

// Recovery is the data of mfa.recovery.generated and mfa.recovery.used. It never carries a code.
type Recovery struct {
	// Sub is the user (also the CloudEvent subject).
	Sub string `json:"sub"`
	// Remaining is how many unused codes the user's current set holds.
	Remaining int `json:"remaining"`
	// CreatedAt is when the current set was generated.
	CreatedAt time.Time `json:"created_at"`
	// StatusID is the authentication that spent the code (used only).
	StatusID string `json:"status_id,omitempty"`
}

// Push is the data of mfa.push.sent and mfa.push.acknowledged. It never carries the number or
// the candidates.
type Push struct {
	// StatusID identifies the authentication (also the CloudEvent subject).
	StatusID string `json:"status_id"`
	// Sub is the user asked to approve.
	Sub string `json:"sub"`
	// ExpiresAt is when the challenge (and the authentication) expires.
	ExpiresAt time.Time `json:"expires_at"`
	// Devices is how many push-capable devices the challenge went to (sent only).
	Devices int `json:"devices,omitempty"`
	// PHID is the device that received it (acknowledged only).
	PHID string `json:"ph_id,omitempty"`
}

// Delivery is the data of mfa.delivery.failed. It never carries the code or the full address.
type Delivery struct {
	// DeliveryID identifies the delivery (also the CloudEvent subject); the same id was the
	// mail's Message-ID or the SMS webhook's X-Mfaflow-Delivery on every attempt.
	DeliveryID string `json:"delivery_id"`
	// Sub is the user the message was for.
	Sub string `json:"sub"`
	// StatusID is the enrollment or sign-in the message belonged to, if any.
	StatusID string `json:"status_id,omitempty"`
	// Channel is email or sms.
	Channel string `json:"channel"`
	// Kind is the message kind (enrollment_code, signin_code).
	Kind string `json:"kind"`
	// Destination is the address, masked (a***@example.org, +49 ••• •••• 78).
	Destination string `json:"destination"`
	// Attempts is how many times the notifier tried.
	Attempts int `json:"attempts"`
	// Reason says why it gave up: expired (retried until the message was no use any more),
	// rejected (the server refused it permanently) or unreadable (the request did not open).
	Reason string `json:"reason"`
}

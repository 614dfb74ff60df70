// Package commands is the request/reply contract between mfaflow services: the NATS subjects of
// every micro endpoint and the JSON messages they take and return.
//
// Services never call each other's Go code; they send these messages. A command answers success
// with its reply and every refusal as a micro error whose code is one of the fault codes (see
// package fault) and whose description is worded for people; there is no second vocabulary of
// results inside replies. A refusal that ends at a known time (locked) also carries that time
// in the header Mfa-Fault-Until (RFC 3339, UTC; pkg/rpc.HeaderUntil), which rpc.Call returns
// as fault.Error.Until. Where the refusals of a command mean something particular to the
// caller (the factor commands), they are listed with its subject below.
package commands

import (
	"encoding/json"
	"time"
)

// Micro service names, as they appear in $SRV.PING/INFO/STATS.
const (
	StatusService   = "mfa-status"
	RegistryService = "mfa-device-registry"
	NotifierService = "mfa-notifier"
)

// Notifier endpoints (group "mfa.notifier.v1").
const (
	NotifierGroup = "mfa.notifier.v1"
	// NotifierChannels answers which channels the notifier can deliver (ChannelsReply): EMAIL
	// and SMS are active methods only where it can. No responder means neither.
	NotifierChannels = NotifierGroup + ".channels"
)

// ChannelsReply says which channels the notifier is configured for.
type ChannelsReply struct {
	Email bool `json:"email"`
	SMS   bool `json:"sms"`
}

// StatusDelivery (status service endpoint) is how the notifier reports the outcome of a code's
// delivery (DeliveryReport) so that the status object shows it ("delivery":"sent|failed").
// A report about a delivery the status object no longer waits for (a resend replaced it) is
// answered with success and changes nothing.
const StatusDelivery = "mfa.status.v1.delivery"

// DeliveryReport is one delivery's outcome.
type DeliveryReport struct {
	StatusID   string `json:"status_id"`
	DeliveryID string `json:"delivery_id"`
	// State is "sent" or "failed".
	State string `json:"state"`
}

// Status service endpoints (group "mfa.status.v1").
const (
	StatusGroup = "mfa.status.v1"
	// StatusCreate records a new INITIATED enrollment.
	StatusCreate = StatusGroup + ".create"
	// StatusScan reports that a companion scanned the QR of an enrollment.
	StatusScan = StatusGroup + ".scan"
	// StatusEnroll completes an enrollment with a code from the companion.
	StatusEnroll = StatusGroup + ".enroll"
	// StatusPushPending lists the open push challenges of a logged-in device's user.
	StatusPushPending = StatusGroup + ".push.pending"
	// StatusPushAck reports that a challenge reached a device (INITIATED → PUSH_ACKNOWLEDGED).
	StatusPushAck = StatusGroup + ".push.ack"
	// StatusPushRespond carries a device's verified answer to a challenge.
	StatusPushRespond = StatusGroup + ".push.respond"
	// StatusKeyedIDs derives the ids of an initiation sent with an Idempotency-Key and reports
	// the enrollment they name, if one is stored already.
	StatusKeyedIDs = StatusGroup + ".keyed-ids"
	// StatusStepUpRedeem spends an mfa_token as the step-up proof of a change to a user's
	// factors (X-MFA-Token): the device registry asks before it changes the factors of a user
	// who has one. Refusals are the fault step_up_required.
	StatusStepUpRedeem = StatusGroup + ".step-up.redeem"
)

// StepUpRedeemRequest names the user whose factors change and the mfa_token that proves a
// fresh sign-in. The token is a credential: never logged.
type StepUpRedeemRequest struct {
	Sub   string `json:"sub"`
	Token string `json:"token"`
}

// StepUpRedeemReply says which sign-in the spent token came from.
type StepUpRedeemReply struct {
	StatusID string `json:"status_id"`
}

// BridgeDevicePrefix + ph_id is the core NATS subject on which the bridge replica that holds a
// device's session takes requests for it: a PushChallenge to deliver, answered with a
// PushDelivery once the frame is written. No responder means the device is not connected.
const BridgeDevicePrefix = "mfa.bridge.v1.device."

// BridgeSessionPrefix + ph_id announces a new session of a device (a SessionStarted), so the
// replica holding an older one closes it: one live session per device.
const BridgeSessionPrefix = "mfa.bridge.v1.session."

// PushChallenge is a challenge as the status service hands it to the bridge. Numbers are the
// three candidates (one right); the right one is never sent to the device as such.
type PushChallenge struct {
	ChallengeID string            `json:"challenge_id"`
	StatusID    string            `json:"status_id"`
	Sub         string            `json:"sub"`
	Numbers     []string          `json:"numbers"`
	Context     map[string]string `json:"context,omitempty"`
	ExpiresAt   time.Time         `json:"expires_at"`
}

// PushDelivery answers a delivery request.
type PushDelivery struct {
	Delivered bool `json:"delivered"`
}

// SessionStarted announces a device session on a bridge replica.
type SessionStarted struct {
	PHID      string `json:"ph_id"`
	SessionID string `json:"session_id"`
}

// PushPendingRequest asks for the open challenges of a device's user.
type PushPendingRequest struct {
	PHID string `json:"ph_id"`
	Sub  string `json:"sub"`
}

// PushPendingReply lists them, oldest first.
type PushPendingReply struct {
	Challenges []PushChallenge `json:"challenges"`
}

// PushAckRequest reports a delivered challenge.
type PushAckRequest struct {
	ChallengeID string `json:"challenge_id"`
	PHID        string `json:"ph_id"`
	Sub         string `json:"sub"`
}

// PushRespondRequest is a device's answer; the bridge has verified its signature with the
// device key of the session.
type PushRespondRequest struct {
	ChallengeID string `json:"challenge_id"`
	PHID        string `json:"ph_id"`
	Sub         string `json:"sub"`
	Decision    string `json:"decision"`
	Number      string `json:"number"`
	Reason      string `json:"reason,omitempty"`
}

// Registry service endpoints (group "mfa.registry.v1").
const (
	RegistryGroup = "mfa.registry.v1"
	// RegistryCreateCredential creates a pending TOTP credential and returns its secret, once;
	// for EMAIL and SMS it sends the first code, for WEBAUTHN it answers the creation options
	// (refusal: method_inactive where the WebAuthn settings cannot work).
	RegistryCreateCredential = RegistryGroup + ".credentials.create"
	// RegistryVerifyCredential checks a code against a pending credential and claims it for a
	// device, registering nothing yet.
	RegistryVerifyCredential = RegistryGroup + ".credentials.verify"
	// RegistryActivateCredential registers the device of a verified claim, once the enrollment
	// is ENROLLED (the status service commits first, so a lost race leaves no device).
	RegistryActivateCredential = RegistryGroup + ".credentials.activate"
	// RegistryDiscardCredential destroys the claimed credential of an enrollment that ended
	// without it (the status service calls it when a cancel or an expiry beat a right code).
	RegistryDiscardCredential = RegistryGroup + ".credentials.discard"
	// RegistryFactorsReady asks whether a user can be asked for a sign-in code of a method now
	// (has a usable factor, is not locked). It checks no code. Answers an empty FactorReply;
	// refusals: no_factor, locked (with Mfa-Fault-Until).
	RegistryFactorsReady = RegistryGroup + ".factors.ready"
	// RegistryFactorsCheck checks a sign-in code (TOTP or recovery code) of a user, counting
	// wrong codes towards the user's lockout. Answers FactorReply for a right code; refusals:
	// invalid_code (wrong, counted), code_replayed (right but used already, not counted),
	// bad_request (cannot be a code of the method, not counted), locked (with
	// Mfa-Fault-Until; also when this wrong code locked the user), no_factor. WEBAUTHN (Code the
	// assertion JSON, Challenge the sealed session): invalid_credential (does not verify,
	// counted), cloned_authenticator (the signature counter went backwards, not counted),
	// method_inactive.
	RegistryFactorsCheck = RegistryGroup + ".factors.check"
	// RegistryFactorsFailure counts a failed factor use that is not a code (a push answered with
	// the wrong number) towards the user's lockout. Answers an empty FactorReply; refusal:
	// locked (with Mfa-Fault-Until) when the user is, or this failure made them, locked.
	RegistryFactorsFailure = RegistryGroup + ".factors.failure"
	// RegistryDeviceGet returns a registered device's owner and push key (bridge login).
	RegistryDeviceGet = RegistryGroup + ".devices.get"
	// RegistryPushDevices lists a user's push-capable devices.
	RegistryPushDevices = RegistryGroup + ".devices.push"
	// RegistryDeviceUsed records that a device approved a sign-in (its last_used_at).
	RegistryDeviceUsed = RegistryGroup + ".devices.used"
	// RegistryResendCredential sends a new code for an EMAIL or SMS enrollment
	// (ResendCredentialRequest) and answers the new sealed pending credential
	// (CreateCredentialReply without a secret); the old code stops working. Refusals:
	// method_inactive, too_many_requests (SMS limits, with Mfa-Fault-Until), expired.
	RegistryResendCredential = RegistryGroup + ".credentials.resend"
	// RegistryFactorsChallenge sends a sign-in code of a method whose codes are sent (EMAIL,
	// SMS) to one of the user's factors (ChallengeRequest → ChallengeReply). Refusals: no_factor,
	// locked (with Mfa-Fault-Until), not_found (no such ph_id), method_inactive,
	// too_many_requests (SMS limits, with Mfa-Fault-Until), region_not_allowed. For WEBAUTHN it
	// sends nothing: it answers the request options (ChallengeReply.PublicKey) and the sealed
	// session.
	RegistryFactorsChallenge = RegistryGroup + ".factors.challenge"
	// RegistryContact answers where security notifications for a user go (ContactRequest →
	// ContactReply): the most recently verified EMAIL factor's address, else the verified
	// `email` claim the user's token carried, else the address of the last EMAIL factor the user
	// had (so that the mail saying it was removed, or MFA disabled, still reaches them). Refusal:
	// not_found when there is none. Only the notifier may call it (NATS permissions): the reply
	// holds a full address.
	RegistryContact = RegistryGroup + ".contact"
)

// ContactRequest names the user.
type ContactRequest struct {
	Sub string `json:"sub"`
}

// ContactReply is a user's contact address and language.
type ContactReply struct {
	Email  string `json:"email"`
	Locale string `json:"locale,omitempty"`
}

// ResendCredentialRequest names an EMAIL or SMS enrollment and hands back its sealed pending
// credential.
type ResendCredentialRequest struct {
	StatusID          string `json:"status_id"`
	Sub               string `json:"sub"`
	PendingCredential []byte `json:"pending_credential"`
}

// ChallengeRequest asks for a sign-in code to be sent. PHID picks the factor; empty means the
// one used most recently. Locale is the language of the message.
type ChallengeRequest struct {
	Sub      string `json:"sub"`
	Method   string `json:"method"`
	PHID     string `json:"ph_id,omitempty"`
	StatusID string `json:"status_id"`
	Locale   string `json:"locale,omitempty"`
}

// ChallengeReply says where the code went. Challenge is the code's sealed keyed hash, which
// the status service keeps with the sign-in (it cannot open it) and hands back with the code
// (FactorRequest.Challenge). Never logged, never in an event or a reply to a client.
type ChallengeReply struct {
	PHID          string    `json:"ph_id"`
	Destination   string    `json:"destination"`
	DeliveryID    string    `json:"delivery_id"`
	CodeExpiresAt time.Time `json:"code_expires_at"`
	Challenge     []byte    `json:"challenge"`
	// PublicKey is a WEBAUTHN sign-in's PublicKeyCredentialRequestOptions, in the JSON form
	// browsers parse (PublicKeyCredential.parseRequestOptionsFromJSON: base64url fields), with
	// the user's passkeys in allowCredentials; the frontend gets it as `public_key`. Challenge
	// is then the sealed WebAuthn session (the challenge and the passkeys allowed), bound to
	// the sign-in and the user.
	PublicKey json.RawMessage `json:"public_key,omitempty"`
}

// DeviceRequest names a device, or a user's devices.
type DeviceRequest struct {
	PHID string `json:"ph_id,omitempty"`
	Sub  string `json:"sub,omitempty"`
}

// DeviceKey is a device's push key as a JWK (EC P-256).
type DeviceKey struct {
	Kty string `json:"kty"`
	Crv string `json:"crv"`
	X   string `json:"x"`
	Y   string `json:"y"`
}

// DeviceInfo is a registered device as the bridge and the status service need it.
type DeviceInfo struct {
	PHID string     `json:"ph_id"`
	Sub  string     `json:"sub"`
	Key  *DeviceKey `json:"push_key,omitempty"`
}

// PushDevicesReply lists a user's push-capable devices.
type PushDevicesReply struct {
	Devices []DeviceInfo `json:"devices"`
}

// FactorRequest names a user's factor, and for a check the code and the authentication it is for.
type FactorRequest struct {
	Sub      string `json:"sub"`
	Method   string `json:"method"`
	Code     string `json:"code,omitempty"`
	StatusID string `json:"status_id,omitempty"`
	// Challenge is the sign-in's sealed challenge (ChallengeReply) when its code was sent, or
	// its sealed WebAuthn session (WEBAUTHN; Code is then the assertion's JSON,
	// credential.toJSON() of the browser).
	Challenge []byte `json:"challenge,omitempty"`
}

// FactorReply answers RegistryFactorsReady, RegistryFactorsCheck and RegistryFactorsFailure
// when they succeed; their refusals are fault codes (see the subjects).
type FactorReply struct {
	// PHID is the device whose code matched (check, TOTP).
	PHID string `json:"ph_id,omitempty"`
	// Remaining is the user's unused recovery codes (check, BACKUPCODE).
	Remaining int `json:"remaining,omitempty"`
	// UserVerified: the passkey's authenticator verified the user (the assertion's UV flag;
	// check, WEBAUTHN). The mfa_token's amr then has "user".
	UserVerified bool `json:"user_verified,omitempty"`
}

// Device describes the authenticator device as the companion reports it.
type Device struct {
	DeviceID string `json:"device_id,omitempty"`
	Name     string `json:"name,omitempty"`
	Platform string `json:"platform,omitempty"`
	// Key makes the device push-capable (enroll only).
	Key *DeviceKey `json:"device_key,omitempty"`
}

// CreateCredentialRequest asks the registry for the pending credential of an enrollment.
type CreateCredentialRequest struct {
	StatusID  string    `json:"status_id"`
	Sub       string    `json:"sub"`
	ExpiresAt time.Time `json:"expires_at"`
	// StepUpToken is the X-MFA-Token of the initiation: the registry redeems it when sub
	// already has a factor. A retry of an initiation still in progress (Idempotency-Key) sends
	// Retry instead, since its token was spent by the first attempt.
	StepUpToken string `json:"step_up_token,omitempty"`
	Retry       bool   `json:"retry,omitempty"`
	// Method is the factor to enroll: "" or TOTP, or EMAIL / SMS with Destination (an email
	// address, or a phone number in E.164 or national with Region) and the Locale of the
	// code's message. The registry sends the code; the reply then has no secret.
	Method      string `json:"type,omitempty"`
	Destination string `json:"destination,omitempty"`
	Region      string `json:"region,omitempty"`
	Locale      string `json:"locale,omitempty"`
	// FriendlyName is the name a WEBAUTHN passkey gets (optional; default the authenticator's
	// name where its AAGUID is known, else "Passkey").
	FriendlyName string `json:"friendly_name,omitempty"`
	// ContactEmail is the verified `email` claim of the user's token, if any: the registry
	// remembers it (with Locale) as where security notifications go, so that the mail about
	// this very factor reaches the user.
	ContactEmail string `json:"contact_email,omitempty"`
}

// CreateCredentialReply carries the new secret. It is the only message that ever holds a secret,
// and only the initiation service receives it, to hand it to the user once.
//
// PendingCredential is the same credential sealed by the registry (AES-256-GCM under its key,
// bound to the status id and sub): the registry stores nothing at initiation, and the status
// service keeps this value in the enrollment, unable to open it, until a code claims it
// (VerifyCredentialRequest) or the enrollment ends. It is never logged, never in an event or
// a reply to a client.
type CreateCredentialReply struct {
	Secret            string `json:"secret"`
	Algorithm         string `json:"algorithm"`
	Digits            int    `json:"digits"`
	Period            int    `json:"period"`
	PendingCredential []byte `json:"pending_credential"`
	// EMAIL and SMS: where the code went (masked), the delivery, and when the code expires.
	Destination   string    `json:"destination,omitempty"`
	DeliveryID    string    `json:"delivery_id,omitempty"`
	CodeExpiresAt time.Time `json:"code_expires_at,omitzero"`
	// PublicKey is a WEBAUTHN enrollment's PublicKeyCredentialCreationOptions in the JSON form
	// browsers parse (PublicKeyCredential.parseCreationOptionsFromJSON: base64url fields); the
	// frontend gets it as `public_key`. PendingCredential then holds the sealed WebAuthn
	// registration session.
	PublicKey json.RawMessage `json:"public_key,omitempty"`
}

// VerifyCredentialRequest proves possession of a pending credential with a code.
type VerifyCredentialRequest struct {
	StatusID string `json:"status_id"`
	Sub      string `json:"sub"`
	Code     string `json:"code"`
	Device   Device `json:"device"`
	// PendingCredential is the enrollment's sealed pending credential (CreateCredentialReply);
	// without it the registry looks for one it stored itself (enrollments begun by an earlier
	// version).
	PendingCredential []byte `json:"pending_credential,omitempty"`
	// Credential is a WEBAUTHN enrollment's registration response as the browser made it
	// (credential.toJSON()), in place of Code. Any failure to verify it is the fault
	// invalid_credential, and nothing is stored.
	Credential json.RawMessage `json:"credential,omitempty"`
}

// ActivateCredentialRequest registers the device that a verify claimed: PHID and DeviceID are
// those of the CredentialClaim the verify returned.
type ActivateCredentialRequest struct {
	StatusID string `json:"status_id"`
	Sub      string `json:"sub"`
	PHID     string `json:"ph_id"`
	DeviceID string `json:"device_id"`
}

// CredentialClaim names the device of a verified (and later activated) credential.
type CredentialClaim struct {
	PHID     string `json:"ph_id"`
	DeviceID string `json:"device_id"`
}

// DiscardCredentialRequest names the enrollment whose pending credential must go.
type DiscardCredentialRequest struct {
	StatusID string `json:"status_id"`
}

// CreateEnrollmentRequest records an INITIATED enrollment. StatusID should be
// ids.StatusIDFor(ExchangeID) (pkg/ids), which saves the status service an index write; any other valid id
// still works.
type CreateEnrollmentRequest struct {
	StatusID   string    `json:"status_id"`
	ExchangeID string    `json:"exchange_id"`
	Sub        string    `json:"sub"`
	Method     string    `json:"type"`
	ExpiresAt  time.Time `json:"expires_at"`
	// PendingCredential is the registry's sealed pending credential (CreateCredentialReply),
	// kept with the enrollment while it is open. A repeated create (a retried keyed
	// initiation) with another one replaces it while the enrollment is still INITIATED.
	PendingCredential []byte `json:"pending_credential,omitempty"`
	// EMAIL and SMS: where the first code went (masked), its delivery and its expiry, from the
	// registry's CreateCredentialReply.
	Destination   string    `json:"destination,omitempty"`
	DeliveryID    string    `json:"delivery_id,omitempty"`
	CodeExpiresAt time.Time `json:"code_expires_at,omitzero"`
}

// KeyedIDsRequest asks for the ids of sub's enrollment initiated with Idempotency-Key Key.
type KeyedIDsRequest struct {
	Sub string `json:"sub"`
	Key string `json:"key"`
}

// KeyedIDsReply carries the derived ids (StatusID is ids.StatusIDFor(ExchangeID)) and the
// enrollment already stored under them, if any.
type KeyedIDsReply struct {
	StatusID   string           `json:"status_id"`
	ExchangeID string           `json:"exchange_id"`
	Existing   *EnrollmentReply `json:"existing,omitempty"`
}

// ScanRequest reports a scan by a companion app.
type ScanRequest struct {
	ExchangeID string `json:"exchange_id"`
	Device     Device `json:"device"`
}

// EnrollRequest completes an enrollment from the companion with a code.
type EnrollRequest struct {
	ExchangeID string `json:"exchange_id"`
	Code       string `json:"code"`
	Device     Device `json:"device"`
}

// EnrollmentReply is the enrollment after a command: the status object of the HTTP API.
type EnrollmentReply struct {
	Status    string    `json:"status"`
	ID        string    `json:"id"`
	Sub       string    `json:"sub"`
	Method    string    `json:"type"`
	ExpiresAt time.Time `json:"expires_at"`
	UpdatedAt time.Time `json:"updated_at"`
	DeviceID  string    `json:"device_id,omitempty"`
	PHID      string    `json:"ph_id,omitempty"`
	// Destination (masked) and Delivery (pending, sent, failed) of the code of an EMAIL or SMS
	// enrollment or sign-in.
	Destination string `json:"destination,omitempty"`
	Delivery    string `json:"delivery,omitempty"`
	// Seq counts the enrollment's writes (1 when created). Each write is a compare-and-set,
	// so Seq grows by one per change whichever replica made it; live subscribers order
	// announcements by it and not by UpdatedAt, which comes from the writing replica's clock.
	Seq uint64 `json:"seq,omitempty"`
}

// StatusChangedPrefix starts the core NATS subject on which every enrollment transition is
// announced (followed by the status id), carrying an EnrollmentReply. Any status replica can
// then serve any live subscriber, whichever replica made the change. It is a notification, not
// a record: durable facts are the CloudEvents on MFA_EVENTS.
const StatusChangedPrefix = "mfa.status.v1.changed."

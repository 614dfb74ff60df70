// Package protocol defines the frames of the mobile bridge websocket protocol (sub-protocol
// "mfa-bridge.v1"), shared by the bridge server and the reference companion client.
//
// Every frame is a JSON text message with a "type". Client frames carry a client-chosen "id"
// that the bridge echoes in its answer, so a client may pipeline requests.
package protocol

import "time"

// Subprotocol is the websocket sub-protocol name the bridge selects when a client offers it.
const Subprotocol = "mfa-bridge.v1"

// Path is where the bridge accepts websocket connections, relative to the public base URL.
const Path = "/mobile-bridge/v1/connect"

// Frame types.
const (
	TypeScan   = "scan"
	TypeEnroll = "enroll"
	TypeAck    = "ack"
	TypeError  = "error"
	// TypeHello is the bridge's first frame on every connection: a fresh nonce to sign in login.
	TypeHello = "hello"
	// TypeLogin starts a device session of a push-capable device (signed with its device key).
	TypeLogin = "login"
	// TypePushChallenge asks a logged-in device to approve or deny a sign-in.
	TypePushChallenge = "push.challenge"
	// TypePushResponse is the device's signed answer to a challenge.
	TypePushResponse = "push.response"
)

// Push decisions.
const (
	DecisionApprove = "approve"
	DecisionDeny    = "deny"
	// ReasonNotMe marks a deny of a sign-in the user did not start (for risk systems).
	ReasonNotMe = "not_me"
)

// LoginMessage is the exact text a device signs to log in: ES256 over its UTF-8 bytes, the
// signature as JWS raw r‖s (64 bytes), base64url without padding.
func LoginMessage(nonce, phID string) string {
	return Subprotocol + " login|" + nonce + "|" + phID
}

// PushMessage is the exact text a device signs to answer a challenge.
func PushMessage(challengeID, decision, number string) string {
	return Subprotocol + " push|" + challengeID + "|" + decision + "|" + number
}

// JWK is a device's public key: an EC P-256 key, coordinates base64url without padding.
type JWK struct {
	Kty string `json:"kty"`
	Crv string `json:"crv"`
	X   string `json:"x"`
	Y   string `json:"y"`
}

// Hello is the bridge's greeting; the nonce is single use and valid for this connection only.
type Hello struct {
	Type  string `json:"type"`
	Nonce string `json:"nonce"`
}

// PushChallenge is a sign-in for the device's user to approve. Numbers holds three two-digit
// candidates ("07"); the right one is shown by the frontend that started the sign-in.
type PushChallenge struct {
	Type        string            `json:"type"`
	ChallengeID string            `json:"challenge_id"`
	Numbers     []string          `json:"numbers"`
	Context     map[string]string `json:"context,omitempty"`
	ExpiresAt   time.Time         `json:"expires_at"`
}

// Device is what a companion tells about itself when it scans.
type Device struct {
	DeviceID string `json:"device_id,omitempty"`
	Name     string `json:"name,omitempty"`
	Platform string `json:"platform,omitempty"`
}

// Request is any client frame. Fields not used by a type are left empty.
type Request struct {
	Type       string  `json:"type"`
	ID         string  `json:"id"`
	ExchangeID string  `json:"exchange_id,omitempty"`
	Device     *Device `json:"device,omitempty"`
	Code       string  `json:"code,omitempty"`
	// DeviceKey (enroll) makes the device push-capable: the public half of a key pair the app
	// made for this enrollment.
	DeviceKey *JWK `json:"device_key,omitempty"`
	// PHID and Sig (login, push.response): the device and its signature.
	PHID string `json:"ph_id,omitempty"`
	Sig  string `json:"sig,omitempty"`
	// ChallengeID, Decision, Number and Reason (push.response).
	ChallengeID string `json:"challenge_id,omitempty"`
	Decision    string `json:"decision,omitempty"`
	Number      string `json:"number,omitempty"`
	Reason      string `json:"reason,omitempty"`
}

// Ack answers a successful request.
type Ack struct {
	Type     string `json:"type"`
	ID       string `json:"id"`
	Status   string `json:"status,omitempty"`
	StatusID string `json:"status_id,omitempty"`
	DeviceID string `json:"device_id,omitempty"`
	PHID     string `json:"ph_id,omitempty"`
}

// Error answers a failed request; the connection stays open.
type Error struct {
	Type    string `json:"type"`
	ID      string `json:"id,omitempty"`
	Code    string `json:"code"`
	Message string `json:"message"`
}

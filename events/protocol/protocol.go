// Package protocol defines the frames of the mobile bridge websocket protocol (sub-protocol
// "mfa-bridge.v1"), shared by the bridge server and the reference companion client.
//
// Every frame is a JSON text message with a "type". Client frames carry a client-chosen "id"
// that the bridge echoes in its answer, so a client may pipeline requests.
package protocol

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
)

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
}

// Ack answers a successful request.
type Ack struct {
	Type     string `json:"type"`
	ID       string `json:"id"`
	Status   string `json:"status"`
	StatusID string `json:"status_id"`
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

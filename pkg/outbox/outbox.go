// Package outbox defines the events a store write carries with it. A service that changes state
// hands the resulting events to the same store write (the transactional outbox pattern); a relay
// publishes them afterwards, with retries, so a crash between "state changed" and "event sent"
// loses nothing. Each message id is the JetStream Nats-Msg-Id, so a repeated publish is stored
// once.
package outbox

import (
	"encoding/json"
	"fmt"

	"github.com/mfaflow/mfaflow/events"
)

// Message is one event waiting to be published.
type Message struct {
	// ID is the CloudEvent id and the Nats-Msg-Id.
	ID string `json:"id"`
	// Subject is the NATS subject to publish on.
	Subject string `json:"subject"`
	// Data is the encoded CloudEvent.
	Data json.RawMessage `json:"data"`
}

// FromEnvelope encodes a CloudEvent as an outbox message for its type's subject.
func FromEnvelope(env events.Envelope) (Message, error) {
	data, err := json.Marshal(env)
	if err != nil {
		return Message{}, fmt.Errorf("encode event %s: %w", env.Type, err)
	}
	return Message{ID: env.ID, Subject: env.Type.Subject(), Data: data}, nil
}

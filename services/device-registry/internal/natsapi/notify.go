package natsapi

import (
	"context"

	"github.com/mfaflow/mfaflow/pkg/delivery"
	"github.com/mfaflow/mfaflow/pkg/natsx"
	"github.com/mfaflow/mfaflow/services/device-registry/internal/device"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Deliveries hands the registry's codes to the notifier: each one sealed with the delivery key
// (MFA_DELIVERY_KEY) and stored on MFA_DELIVERIES (pkg/delivery), so a notifier restart loses
// none and no code rests in plain text.
type Deliveries struct {
	Publisher delivery.Publisher
}

var _ device.Deliverer = Deliveries{}

// Deliver implements device.Deliverer.
func (d Deliveries) Deliver(ctx context.Context, m device.Message) error {
	return d.Publisher.Publish(ctx, delivery.Request{
		ID: m.ID, Channel: m.Channel, To: m.To, Masked: m.Masked, Kind: m.Kind, Code: m.Code,
		Link: m.Link, Locale: m.Locale, Sub: m.Sub, StatusID: m.StatusID, ExpiresAt: m.ExpiresAt,
	})
}

// NewDeliveries returns Deliveries publishing through js with key.
func NewDeliveries(js jetstream.JetStream, key []byte) Deliveries {
	return Deliveries{Publisher: delivery.Publisher{JS: js, Key: key}}
}

// NotifierChannels is device.Channels through natsx.NotifierChannels.
type NotifierChannels struct{ *natsx.NotifierChannels }

var _ device.Channels = NotifierChannels{}

// NewNotifierChannels asks the notifier on nc.
func NewNotifierChannels(nc *nats.Conn) NotifierChannels {
	return NotifierChannels{&natsx.NotifierChannels{NC: nc}}
}

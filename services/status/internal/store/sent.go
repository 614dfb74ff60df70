// Package store holds what the status service's storage backends (kv, mongo) share: the stored
// form of a sent code's facts, which enrollments and sign-ins of EMAIL and SMS keep alike.
package store

import (
	"time"

	"github.com/mfaflow/mfaflow/pkg/factor"
)

// SentDoc is factor.Sent as stored (never the code: only where it went and its delivery).
type SentDoc struct {
	PHID          string    `json:"ph_id,omitempty" bson:"ph_id,omitempty"`
	Destination   string    `json:"destination" bson:"destination"`
	DeliveryID    string    `json:"delivery_id" bson:"delivery_id"`
	Delivery      string    `json:"delivery" bson:"delivery"`
	Resends       int       `json:"resends,omitempty" bson:"resends,omitempty"`
	SentAt        time.Time `json:"sent_at" bson:"sent_at"`
	CodeExpiresAt time.Time `json:"code_expires_at" bson:"code_expires_at"`
}

// ToSentDoc is s as stored; nil when nothing was sent, so documents of other methods do not
// change shape.
func ToSentDoc(s factor.Sent) *SentDoc {
	if s == (factor.Sent{}) {
		return nil
	}
	return &SentDoc{PHID: s.PHID, Destination: s.Destination, DeliveryID: s.DeliveryID, Delivery: s.Delivery,
		Resends: s.Resends, SentAt: s.SentAt, CodeExpiresAt: s.CodeExpiresAt}
}

// Sent is d as the domain's factor.Sent (zero for nil).
func (d *SentDoc) Sent() factor.Sent {
	if d == nil {
		return factor.Sent{}
	}
	return factor.Sent{PHID: d.PHID, Destination: d.Destination, DeliveryID: d.DeliveryID, Delivery: d.Delivery,
		Resends: d.Resends, SentAt: d.SentAt.UTC(), CodeExpiresAt: d.CodeExpiresAt.UTC()}
}

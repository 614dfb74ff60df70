// Package natsapi is the initiation service's client side of the registry and status commands.
package natsapi

import (
	"context"
	"time"

	"github.com/mfaflow/mfaflow/events/commands"
	"github.com/mfaflow/mfaflow/pkg/rpc"
	"github.com/mfaflow/mfaflow/services/initiation/internal/setup"
	"github.com/nats-io/nats.go"
)

// Clients reaches the registry and status services.
type Clients struct {
	NC      *nats.Conn
	Timeout time.Duration
}

var (
	_ setup.Registry = (*Clients)(nil)
	_ setup.Status   = (*Clients)(nil)
)

func (c *Clients) ctx(ctx context.Context) (context.Context, context.CancelFunc) {
	t := c.Timeout
	if t <= 0 {
		t = 5 * time.Second
	}
	return context.WithTimeout(ctx, t)
}

// CreatePending implements setup.Registry.
func (c *Clients) CreatePending(ctx context.Context, statusID, sub string, expiresAt time.Time, proof setup.StepUpProof, f setup.Factor) (setup.Credential, error) {
	ctx, cancel := c.ctx(ctx)
	defer cancel()
	var r commands.CreateCredentialReply
	err := rpc.Call(ctx, c.NC, commands.RegistryCreateCredential, commands.CreateCredentialRequest{
		StatusID: statusID, Sub: sub, ExpiresAt: expiresAt, StepUpToken: proof.Token, Retry: proof.Retry,
		Method: f.Method, Destination: f.Address, Region: f.Region, Locale: f.Locale, ContactEmail: f.ContactEmail, FriendlyName: f.FriendlyName,
	}, &r)
	return setup.Credential{Secret: r.Secret, Algorithm: r.Algorithm, Digits: r.Digits, Period: r.Period, Pending: r.PendingCredential,
		Destination: r.Destination, DeliveryID: r.DeliveryID, CodeExpiresAt: r.CodeExpiresAt, PublicKey: r.PublicKey}, err
}

// Create implements setup.Status.
func (c *Clients) Create(ctx context.Context, statusID, exchangeID, sub, method string, expiresAt time.Time, pending []byte, sent setup.Credential) error {
	ctx, cancel := c.ctx(ctx)
	defer cancel()
	return rpc.Call(ctx, c.NC, commands.StatusCreate, commands.CreateEnrollmentRequest{
		StatusID: statusID, ExchangeID: exchangeID, Sub: sub, Method: method, ExpiresAt: expiresAt, PendingCredential: pending,
		Destination: sent.Destination, DeliveryID: sent.DeliveryID, CodeExpiresAt: sent.CodeExpiresAt,
	}, nil)
}

// KeyedIDs implements setup.Status.
func (c *Clients) KeyedIDs(ctx context.Context, sub, key string) (string, string, *setup.Existing, error) {
	ctx, cancel := c.ctx(ctx)
	defer cancel()
	var r commands.KeyedIDsReply
	if err := rpc.Call(ctx, c.NC, commands.StatusKeyedIDs, commands.KeyedIDsRequest{Sub: sub, Key: key}, &r); err != nil {
		return "", "", nil, err
	}
	var existing *setup.Existing
	if r.Existing != nil {
		existing = &setup.Existing{State: r.Existing.Status, ExpiresAt: r.Existing.ExpiresAt}
	}
	return r.StatusID, r.ExchangeID, existing, nil
}

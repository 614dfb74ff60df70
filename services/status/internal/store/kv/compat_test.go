package kv_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/mfaflow/mfaflow/pkg/natstest"
	"github.com/mfaflow/mfaflow/services/status/internal/enrollment"
	"github.com/mfaflow/mfaflow/services/status/internal/signin"
	"github.com/mfaflow/mfaflow/services/status/internal/store/kv"
)

// Documents written before enrollments and sign-ins had a document type each (one union
// document, the sign-in's fields in an "authentications only" section) read as what they are,
// each through its own store and neither through the other's; the view reads them too.
func TestDocumentsWrittenBeforeTheSplitRead(t *testing.T) {
	ctx := context.Background()
	s, err := kv.Open(ctx, natstest.Start(t).JetStream(t), "")
	if err != nil {
		t.Fatal(err)
	}
	const (
		enrollmentID = "0b7e4c1a-5d2f-4f0e-9a63-7c1d2e3f4a5b"
		signInID     = "1c8f5d2b-6e3a-4a1f-8b74-8d2e3f4a5b6c"
	)
	legacy := map[string]string{
		enrollmentID: `{"doc":{"id":"` + enrollmentID + `","exchange_id":"ex-e","sub":"alice","method":"TOTP","state":"ENROLLED",` +
			`"created_at":"2026-11-01T10:00:00Z","updated_at":"2026-11-01T10:01:00Z","expires_at":"2026-11-01T10:10:00Z",` +
			`"device_id":"d-1","device_name":"Phone","device_platform":"ios","registered_device_id":"d-1","ph_id":"ph-1","seq":3}}`,
		signInID: `{"doc":{"id":"` + signInID + `","exchange_id":"ex-s","sub":"alice","method":"PUSH","state":"AUTHENTICATED",` +
			`"created_at":"2026-11-01T10:00:00Z","updated_at":"2026-11-01T10:00:30Z","expires_at":"2026-11-01T10:05:00Z",` +
			`"ph_id":"ph-1","failed_attempts":1,"seq":4,"kind":"authentication","initiator":"login-service","client_id":"shop",` +
			`"context":{"app":"shop"},"auth_time":"2026-11-01T10:00:30Z","step_up_used_at":"2026-11-01T10:01:00Z",` +
			`"number":"42","candidates":["17","42","88"]}}`,
	}
	for id, raw := range legacy {
		if _, err := s.KV().Put(ctx, "e."+id, []byte(raw)); err != nil {
			t.Fatal(err)
		}
	}
	at := func(v string) time.Time { ts, _ := time.Parse(time.RFC3339, v); return ts }
	check := func(t *testing.T, es enrollment.Store, ss signin.Store) {
		e, err := es.Get(ctx, enrollmentID)
		if err != nil || e.State != enrollment.Enrolled || e.DeviceID != "d-1" || e.PHID != "ph-1" || e.Device.Name != "Phone" || e.Seq != 3 {
			t.Fatalf("enrollment: %+v %v", e, err)
		}
		a, err := ss.Get(ctx, signInID)
		if err != nil || a.State != signin.Authenticated || a.Initiator != "login-service" || a.ClientID != "shop" ||
			a.Context["app"] != "shop" || a.PHID != "ph-1" || a.Number != "42" || len(a.Candidates) != 3 || a.Seq != 4 ||
			a.FailedAttempts != 1 || !a.AuthTime.Equal(at("2026-11-01T10:00:30Z")) || !a.StepUpUsedAt.Equal(at("2026-11-01T10:01:00Z")) {
			t.Fatalf("sign-in: %+v %v", a, err)
		}
		if _, err := es.Get(ctx, signInID); !errors.Is(err, enrollment.ErrNotFound) {
			t.Fatalf("the sign-in as an enrollment: %v", err)
		}
		if _, err := ss.Get(ctx, enrollmentID); !errors.Is(err, signin.ErrNotFound) {
			t.Fatalf("the enrollment as a sign-in: %v", err)
		}
	}
	t.Run("Store", func(t *testing.T) { check(t, s, s.SignIns()) })
	t.Run("View", func(t *testing.T) {
		v := kv.NewView(s)
		check(t, v, v.SignIns())
	})
}

package eventschema_test

import (
	"encoding/json"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mfaflow/mfaflow/events"
	"github.com/mfaflow/mfaflow/tests/eventschema"
)

func event(t *testing.T, typ events.Type, subject string, data any) []byte {
	t.Helper()
	source := events.SourceRegistry
	switch {
	case typ == events.VerificationLocked:
	case strings.HasPrefix(string(typ), "mfa.enrollment."), strings.HasPrefix(string(typ), "mfa.verification."),
		strings.HasPrefix(string(typ), "mfa.push."):
		source = events.SourceStatus
	}
	env, err := events.New("evt-1", source, typ, subject, time.Now(), data)
	if err != nil {
		t.Fatal(err)
	}
	raw, err := json.Marshal(env)
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

func initiated(statusID string) events.Enrollment {
	return events.Enrollment{StatusID: statusID, Sub: "alice", Method: "TOTP", Status: "INITIATED",
		ExpiresAt: time.Now().Add(10 * time.Minute)}
}

func TestValidate(t *testing.T) {
	dev := events.Device{PHID: "ph-1", DeviceID: "dev-1", Sub: "alice", Method: "TOTP", StatusID: "st-1"}
	sent := events.Push{StatusID: "st-1", Sub: "alice", ExpiresAt: time.Now().Add(5 * time.Minute), Devices: 1}
	ack := events.Push{StatusID: "st-1", Sub: "alice", ExpiresAt: time.Now().Add(5 * time.Minute), PHID: "ph-1"}
	valid := map[string][]byte{
		"initiated":  event(t, events.EnrollmentInitiated, "st-1", initiated("st-1")),
		"registered": event(t, events.DeviceRegistered, "ph-1", dev),
		"push sent":  event(t, events.PushSent, "st-1", sent),
		"push ack":   event(t, events.PushAcknowledged, "st-1", ack),
	}
	for name, raw := range valid {
		if err := eventschema.Validate(raw); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}

	leak := event(t, events.EnrollmentInitiated, "st-1", struct {
		events.Enrollment
		Secret string `json:"totp_secret"`
	}{initiated("st-1"), "JBSWY3DPEHPK3PXP"})
	invalid := map[string][]byte{
		"not JSON":          []byte("{"),
		"not an object":     []byte(`"mfa.enrollment.initiated"`),
		"trailing data":     append(event(t, events.EnrollmentInitiated, "st-1", initiated("st-1")), "{}"...),
		"unknown type":      event(t, "mfa.enrollment.paused", "st-1", initiated("st-1")),
		"leaked secret":     leak,
		"wrong payload":     event(t, events.DeviceRemoved, "st-1", initiated("st-1")),
		"enrollment subj.":  event(t, events.EnrollmentInitiated, "st-2", initiated("st-1")),
		"device subject":    event(t, events.DeviceRegistered, "st-1", dev),
		"push subject":      event(t, events.PushSent, "st-2", sent),
		"push ack by ph_id": event(t, events.PushAcknowledged, "ph-1", ack),
	}
	for name, raw := range invalid {
		if err := eventschema.Validate(raw); err == nil {
			t.Errorf("%s: accepted", name)
		} else {
			t.Logf("%s: %v", name, err)
		}
	}
}

func TestValidateConcurrently(t *testing.T) {
	raw := event(t, events.EnrollmentInitiated, "st-1", initiated("st-1"))
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			if err := eventschema.Validate(raw); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
}

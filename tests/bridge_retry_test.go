package tests_test

import (
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/mfaflow/mfaflow/events"
	"github.com/mfaflow/mfaflow/events/protocol"
	"github.com/mfaflow/mfaflow/mobile-bridge/companion"
	"github.com/mfaflow/mfaflow/pkg/natstest"
	"github.com/mfaflow/mfaflow/tests/harness"
)

// TestEnrollFrameRepeatedAfterLostAnswer: a companion sends enroll, the connection drops
// before the answer arrives, and the app sends the identical frame on a new connection. It gets
// the ack it missed, with the ph_id that push needs. The same frame from another device, with
// another key, without the key or with another code is a conflict, and the connection stays
// usable after it. One device is registered, and no event carries the code.
func TestEnrollFrameRepeatedAfterLostAnswer(t *testing.T) {
	st := harness.Start(t, harness.Options{}, nil)
	rec := st.RecordEvents(t)
	alice := st.Token(t, "alice")
	in := initiate(t, st, alice, "?qr=none")
	eid := in.ExchangeID.ExchangeID

	jwk := func(t *testing.T) *protocol.JWK {
		key, err := companion.NewDeviceKey()
		if err != nil {
			t.Fatal(err)
		}
		k, err := companion.PublicJWK(&key.PublicKey)
		if err != nil {
			t.Fatal(err)
		}
		return &k
	}
	deviceKey := jwk(t)
	phone := &protocol.Device{DeviceID: "retry-phone-1", Name: "Alice's phone", Platform: "android"}

	first, _ := rawBridge(t, st.URL)
	if ack := rawCall(t, first, protocol.Request{Type: protocol.TypeScan, ID: "1", ExchangeID: eid, Device: phone}); ack["status"] != "SCANNED" {
		t.Fatalf("scan = %v", ack)
	}
	code := codeFor(t, in.TOTPSecret)
	enroll := protocol.Request{Type: protocol.TypeEnroll, ID: "2", ExchangeID: eid, Code: code,
		Device: &protocol.Device{DeviceID: phone.DeviceID}, DeviceKey: deviceKey}
	// The answer is lost: the connection goes before the app reads it.
	if err := first.WriteJSON(enroll); err != nil {
		t.Fatal(err)
	}
	_ = first.Close()
	var enrolled statusResponse
	natstest.Eventually(t, 10*time.Second, func() error {
		if enrolled = poll(t, st, alice, in.StatusID); enrolled.Status != "ENROLLED" {
			return fmt.Errorf("status %s, want ENROLLED", enrolled.Status)
		}
		return nil
	})

	again, _ := rawBridge(t, st.URL)
	wantAck := func(t *testing.T, id string) {
		t.Helper()
		req := enroll
		req.ID = id
		ack := rawCall(t, again, req)
		if ack["type"] != protocol.TypeAck || ack["id"] != id || ack["status"] != "ENROLLED" || ack["status_id"] != in.StatusID ||
			ack["device_id"] != phone.DeviceID || ack["ph_id"] != enrolled.PHID || enrolled.PHID == "" {
			t.Fatalf("repeated enroll = %v; want the ack of the first (status_id %s, device_id %s, ph_id %s)", ack, in.StatusID, phone.DeviceID, enrolled.PHID)
		}
	}
	wantAck(t, "2-again")

	for _, tc := range []struct {
		name   string
		change func(r *protocol.Request)
	}{
		{"OtherDevice", func(r *protocol.Request) { r.Device = &protocol.Device{DeviceID: "retry-phone-2"} }},
		{"OtherKey", func(r *protocol.Request) { r.DeviceKey = jwk(t) }},
		{"KeyLeftOut", func(r *protocol.Request) { r.DeviceKey = nil }},
		{"OtherCode", func(r *protocol.Request) { r.Code = wrongCode(code) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req := enroll
			req.ID = "x-" + tc.name
			tc.change(&req)
			got := rawCall(t, again, req)
			if got["type"] != protocol.TypeError || got["id"] != req.ID || got["code"] != "conflict" || got["ph_id"] != nil {
				t.Fatalf("repeat with %s = %v; want a conflict error frame", tc.name, got)
			}
			wantAck(t, "after-"+tc.name) // the connection stays up, and the right repeat still works
		})
	}

	var devices []struct {
		PHID string `json:"ph_id"`
		Push bool   `json:"push"`
	}
	st.MustJSON(t, http.MethodGet, "/device-srv/devices", alice, nil, http.StatusOK, &devices)
	if len(devices) != 1 || devices[0].PHID != enrolled.PHID || !devices[0].Push {
		t.Fatalf("devices = %+v, want the one push-capable device %s", devices, enrolled.PHID)
	}
	rec.WaitTypes(t, in.StatusID, events.EnrollmentInitiated, events.EnrollmentScanned, events.EnrollmentEnrolled)
	checkEvents(t, rec, in.TOTPSecret, code, eid)
}

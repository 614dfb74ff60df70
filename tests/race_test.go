package tests_test

import (
	"context"
	"encoding/json"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/mfaflow/mfaflow/events"
	"github.com/mfaflow/mfaflow/events/protocol"
	"github.com/mfaflow/mfaflow/mobile-bridge/companion"
	"github.com/mfaflow/mfaflow/tests/harness"
)

// TestCancelRacingRightCodeLeavesNoOrphanDevice races a cancel against a right code, over HTTP
// (typed code) and over the bridge (enroll frame), many times. Whoever wins, the user's device
// list must hold exactly the devices of the enrollments that ended ENROLLED, and no
// mfa.device.registered event may name a cancelled enrollment. Before the status service
// committed first, 12 of 50 HTTP races and 16 of 50 bridge races left a verified device behind
// a CANCELLED enrollment.
func TestCancelRacingRightCodeLeavesNoOrphanDevice(t *testing.T) {
	const races = 25
	for _, channel := range []string{"http", "bridge"} {
		t.Run(channel, func(t *testing.T) {
			// The races send frames far faster than a phone would: lift the bridge's frame limit;
			// and one user starts every race's enrollment: lift the per-user limit (0 = off).
			st := harness.Start(t, harness.Options{}, map[string]string{"MFA_BRIDGE_FRAME_RATE": "1000", "MFA_BRIDGE_FRAME_BURST": "1000", "MFA_USER_START_RATE": "0", "MFA_STEP_UP": "off"})
			rec := st.RecordEvents(t)
			sub := "racer-" + channel
			token := st.Token(t, sub)
			var phone *companion.Client
			if channel == "bridge" {
				phone = dial(t, st)
			}
			enrolled := map[string]string{} // status id → ph_id
			var cancelled []string
			for i := range races {
				in := initiate(t, st, token, "?qr=none")
				code := codeFor(t, in.TOTPSecret)
				ctx, stop := context.WithTimeout(context.Background(), 10*time.Second)
				if phone != nil {
					if _, err := phone.Scan(ctx, in.ExchangeID.ExchangeID, protocol.Device{DeviceID: "phone"}); err != nil {
						t.Fatalf("race %d: scan: %v", i, err)
					}
				}
				var wg sync.WaitGroup
				wg.Go(func() {
					// A stagger, not a wait: it spreads the cancel over the enroll's whole
					// window (code check, registry, commit) so that both outcomes occur.
					time.Sleep(time.Duration(i%10) * 2 * time.Millisecond)
					st.Do(t, http.MethodDelete, "/verification-srv/verificationstatus/"+in.StatusID, token, nil)
				})
				wg.Go(func() {
					if phone != nil {
						_, _ = phone.Enroll(ctx, in.ExchangeID.ExchangeID, code)
						return
					}
					st.Do(t, http.MethodPost, "/verification-srv/v2/setup/enroll/totp", token,
						map[string]string{"exchange_id": in.ExchangeID.ExchangeID, "verification_code": code})
				})
				wg.Wait()
				stop()
				switch s := poll(t, st, token, in.StatusID); s.Status {
				case "ENROLLED":
					enrolled[s.ID] = s.PHID
				case "CANCELLED":
					if s.PHID != "" {
						t.Fatalf("race %d: CANCELLED status names device %s", i, s.PHID)
					}
					cancelled = append(cancelled, s.ID)
				default:
					t.Fatalf("race %d: final state %s", i, s.Status)
				}
			}
			t.Logf("%s: %d enrolled, %d cancelled", channel, len(enrolled), len(cancelled))

			// The registry registers an ENROLLED enrollment's device before the answer, and every
			// mfa.device.registered event is about one of them.
			var devices []struct {
				PHID string `json:"ph_id"`
			}
			st.MustJSON(t, http.MethodGet, "/device-srv/devices", token, nil, http.StatusOK, &devices)
			wantPHIDs := map[string]bool{}
			for _, ph := range enrolled {
				wantPHIDs[ph] = true
			}
			if len(devices) != len(enrolled) {
				t.Fatalf("%d devices for %d ENROLLED enrollments: %+v", len(devices), len(enrolled), devices)
			}
			for _, d := range devices {
				if !wantPHIDs[d.PHID] {
					t.Fatalf("device %s belongs to no ENROLLED enrollment", d.PHID)
				}
			}
			steps := []events.Type{events.EnrollmentInitiated}
			if phone != nil {
				steps = append(steps, events.EnrollmentScanned)
			}
			for id, ph := range enrolled {
				rec.WaitTypes(t, id, append(steps, events.EnrollmentEnrolled)...)
				rec.WaitTypes(t, ph, events.DeviceRegistered)
			}
			for _, id := range cancelled {
				rec.WaitTypes(t, id, append(steps, events.EnrollmentCancelled)...)
			}
			orphans := map[string]bool{}
			for _, id := range cancelled {
				orphans[id] = true
			}
			for _, ev := range rec.All() {
				if ev.Type != events.DeviceRegistered {
					continue
				}
				var d events.Device
				if err := json.Unmarshal(ev.Data, &d); err != nil {
					t.Fatal(err)
				}
				if orphans[d.StatusID] {
					t.Fatalf("mfa.device.registered for cancelled enrollment %s", d.StatusID)
				}
			}
		})
	}
}

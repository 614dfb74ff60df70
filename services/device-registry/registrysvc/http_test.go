package registrysvc_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/mfaflow/mfaflow/events"
	"github.com/mfaflow/mfaflow/events/commands"
	"github.com/mfaflow/mfaflow/pkg/fault"
	"github.com/mfaflow/mfaflow/pkg/natstest"
)

func TestHTTPList(t *testing.T) {
	e := start(t)
	older, _ := e.enroll(t, "alice", commands.Device{DeviceID: "dev-old", Name: "Old phone", Platform: "android"})
	e.clock.Advance(time.Minute)
	newer, _ := e.enroll(t, "alice", commands.Device{})
	bobs, _ := e.enroll(t, "bob", commands.Device{DeviceID: "dev-bob"})
	e.claim(t, "pending-status", "alice", e.create(t, "pending-status", "alice")) // claimed, not activated: not a device yet

	t.Run("OK", func(t *testing.T) {
		got := e.list(t, "alice")
		if len(got) != 2 || got[0].PHID != newer.PHID || got[1].PHID != older.PHID {
			t.Fatalf("alice's devices = %+v, want newest first: %s, %s", got, newer.PHID, older.PHID)
		}
		d := got[1]
		want := deviceJSON{
			PHID: older.PHID, DeviceID: "dev-old", Type: "TOTP", FriendlyName: "Old phone",
			Verified: true, CreatedAt: d.CreatedAt, Platform: "android",
		}
		if d.PHID != want.PHID || d.DeviceID != want.DeviceID || d.Type != want.Type || d.FriendlyName != want.FriendlyName ||
			!d.Verified || d.Platform != want.Platform || d.LastUsedAt != nil {
			t.Fatalf("device = %+v, want %+v", d, want)
		}
		if !d.CreatedAt.Equal(e.clock.Now().Add(-time.Minute)) {
			t.Fatalf("created_at = %v", d.CreatedAt)
		}
		if got[0].FriendlyName != "Authenticator" {
			t.Fatalf("default friendly name = %q", got[0].FriendlyName)
		}
	})

	t.Run("FieldNames", func(t *testing.T) {
		_, body := e.do(t, "bob", http.MethodGet, "/device-srv/devices", "")
		var raw []map[string]any
		if err := json.Unmarshal(body, &raw); err != nil || len(raw) != 1 {
			t.Fatalf("bob's devices %s: %v", body, err)
		}
		for _, k := range []string{"ph_id", "device_id", "type", "friendly_name", "verified", "created_at"} {
			if _, ok := raw[0][k]; !ok {
				t.Errorf("field %s missing from %s", k, body)
			}
		}
		if _, ok := raw[0]["last_used_at"]; ok {
			t.Errorf("last_used_at present for a device never used: %s", body)
		}
		if raw[0]["ph_id"] != bobs.PHID {
			t.Errorf("bob sees %v", raw[0]["ph_id"])
		}
		for _, k := range []string{"sealed_secret", "secret", "last_step", "sub"} {
			if _, ok := raw[0][k]; ok {
				t.Errorf("internal field %s exposed: %s", k, body)
			}
		}
	})

	t.Run("EmptyIsArray", func(t *testing.T) {
		resp, body := e.do(t, "carol", http.MethodGet, "/device-srv/devices", "")
		if resp.StatusCode != http.StatusOK || strings.TrimSpace(string(body)) != "[]" {
			t.Fatalf("carol's devices: %d %s, want 200 []", resp.StatusCode, body)
		}
	})

	t.Run("ErrUnauthorized", func(t *testing.T) {
		resp, body := e.do(t, "", http.MethodGet, "/device-srv/devices", "")
		assertProblem(t, resp, body, http.StatusUnauthorized, fault.Unauthorized)

		req, _ := http.NewRequestWithContext(ctxT(t), http.MethodGet, e.srv.URL+"/device-srv/devices", nil)
		req.Header.Set("Authorization", "Bearer not-a-jwt")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusUnauthorized {
			t.Fatalf("bad token: %d", resp.StatusCode)
		}
	})
}

func TestHTTPRename(t *testing.T) {
	e := start(t)
	dev, _ := e.enroll(t, "alice", commands.Device{DeviceID: "dev-1", Name: "Phone"})
	path := "/device-srv/devices/" + dev.PHID

	t.Run("OK", func(t *testing.T) {
		resp, body := e.do(t, "alice", http.MethodPatch, path, `{"friendly_name":"  Work phone  "}`)
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("PATCH: %d %s", resp.StatusCode, body)
		}
		var got deviceJSON
		if err := json.Unmarshal(body, &got); err != nil {
			t.Fatal(err)
		}
		if got.PHID != dev.PHID || got.FriendlyName != "Work phone" || got.DeviceID != "dev-1" {
			t.Fatalf("renamed device = %+v", got)
		}
		if l := e.list(t, "alice"); len(l) != 1 || l[0].FriendlyName != "Work phone" {
			t.Fatalf("list after rename = %+v", l)
		}
		ev := e.eventsAbout(t, events.DeviceRenamed, dev.PHID, 1)[0]
		var data events.Device
		if err := json.Unmarshal(ev.Envelope.Data, &data); err != nil {
			t.Fatal(err)
		}
		if data.FriendlyName != "Work phone" || data.PHID != dev.PHID || data.Sub != "alice" {
			t.Fatalf("renamed event data = %+v", data)
		}
	})

	t.Run("SameNameNoEvent", func(t *testing.T) {
		resp, body := e.do(t, "alice", http.MethodPatch, path, `{"friendly_name":"Work phone"}`)
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("PATCH: %d %s", resp.StatusCode, body)
		}
		e.eventsAbout(t, events.DeviceRenamed, dev.PHID, 1)
	})

	t.Run("SecondRenameSecondEvent", func(t *testing.T) {
		resp, body := e.do(t, "alice", http.MethodPatch, path, `{"friendly_name":"Téléphone ✓"}`)
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("PATCH: %d %s", resp.StatusCode, body)
		}
		evs := e.eventsAbout(t, events.DeviceRenamed, dev.PHID, 2)
		if evs[0].Envelope.ID == evs[1].Envelope.ID {
			t.Fatal("two renames share an event id and would be deduplicated")
		}
	})

	t.Run("ErrNotFound", func(t *testing.T) {
		resp, body := e.do(t, "mallory", http.MethodPatch, path, `{"friendly_name":"mine now"}`)
		assertProblem(t, resp, body, http.StatusNotFound, fault.NotFound)
		resp, body = e.do(t, "alice", http.MethodPatch, "/device-srv/devices/no-such-device", `{"friendly_name":"x"}`)
		assertProblem(t, resp, body, http.StatusNotFound, fault.NotFound)
		if l := e.list(t, "alice"); l[0].FriendlyName == "mine now" {
			t.Fatal("another user renamed alice's device")
		}
	})

	t.Run("ErrBadRequest", func(t *testing.T) {
		for name, body := range map[string]string{
			"NotJSON":     `{"friendly_name":`,
			"NoName":      `{}`,
			"Empty":       `{"friendly_name":""}`,
			"Blank":       `{"friendly_name":"   "}`,
			"TooLong":     fmt.Sprintf(`{"friendly_name":%q}`, strings.Repeat("x", 65)),
			"ControlChar": `{"friendly_name":"bad\u0007name"}`,
			"WrongType":   `{"friendly_name":5}`,
		} {
			t.Run(name, func(t *testing.T) {
				resp, got := e.do(t, "alice", http.MethodPatch, path, body)
				assertProblem(t, resp, got, http.StatusBadRequest, fault.BadRequest)
			})
		}
		resp, body := e.do(t, "alice", http.MethodPatch, path, fmt.Sprintf(`{"friendly_name":%q}`, strings.Repeat("é", 64)))
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("64 characters: %d %s", resp.StatusCode, body)
		}
	})
}

func TestHTTPRemove(t *testing.T) {
	e := start(t)
	dev, secret := e.enroll(t, "alice", commands.Device{DeviceID: "dev-1"})
	keep, _ := e.enroll(t, "alice", commands.Device{DeviceID: "dev-2"})
	path := "/device-srv/devices/" + dev.PHID

	resp, body := e.do(t, "mallory", http.MethodDelete, path, "")
	assertProblem(t, resp, body, http.StatusNotFound, fault.NotFound)
	if l := e.list(t, "alice"); len(l) != 2 {
		t.Fatalf("another user's DELETE removed something: %+v", l)
	}

	resp, body = e.do(t, "alice", http.MethodDelete, path, "")
	if resp.StatusCode != http.StatusNoContent || len(body) != 0 {
		t.Fatalf("DELETE: %d %s, want 204", resp.StatusCode, body)
	}
	if l := e.list(t, "alice"); len(l) != 1 || l[0].PHID != keep.PHID {
		t.Fatalf("list after remove = %+v", l)
	}
	resp, body = e.do(t, "alice", http.MethodDelete, path, "")
	assertProblem(t, resp, body, http.StatusNotFound, fault.NotFound)
	resp, body = e.do(t, "alice", http.MethodPatch, path, `{"friendly_name":"ghost"}`)
	assertProblem(t, resp, body, http.StatusNotFound, fault.NotFound)

	ev := e.eventsAbout(t, events.DeviceRemoved, dev.PHID, 1)[0]
	var data events.Device
	if err := json.Unmarshal(ev.Envelope.Data, &data); err != nil {
		t.Fatal(err)
	}
	if data.PHID != dev.PHID || data.DeviceID != "dev-1" || data.Sub != "alice" {
		t.Fatalf("removed event data = %+v", data)
	}
	assertNoSecret(t, "the removed event", ev.Raw, secret, "")

	// Once the event is out, nothing of the device is left in the bucket.
	natstest.Eventually(t, wait, func() error {
		for k := range e.rawValues(t) {
			if strings.Contains(k, dev.PHID) {
				return fmt.Errorf("key %s still in the bucket", k)
			}
		}
		return nil
	})
	for k, v := range e.rawValues(t) {
		if strings.Contains(string(v), dev.PHID) {
			t.Fatalf("key %s still names the removed device", k)
		}
	}
}

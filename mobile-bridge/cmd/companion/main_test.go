package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"image/png"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/boombuler/barcode"
	"github.com/boombuler/barcode/qr"
	"github.com/mfaflow/mfaflow/events/commands"
	"github.com/mfaflow/mfaflow/events/protocol"
	"github.com/mfaflow/mfaflow/mobile-bridge/bridgesvc"
	"github.com/mfaflow/mfaflow/mobile-bridge/companion"
	"github.com/mfaflow/mfaflow/mobile-bridge/internal/bridgetest"
	"github.com/mfaflow/mfaflow/pkg/fault"
	"github.com/mfaflow/mfaflow/pkg/totp"
)

// The CLI is a main package, so these tests drive run, the whole program minus os.Exit.

const secret = "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP"

type result struct {
	status         int
	stdout, stderr string
}

func runCLI(t *testing.T, stdin string, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var out, errOut bytes.Buffer
	status := run(ctx, args, strings.NewReader(stdin), &out, &errOut)
	return result{status, out.String(), errOut.String()}
}

func enrollURI(baseURL, eid string) string {
	q := url.Values{"secret": {secret}, "issuer": {"ACME"}, "eid": {eid}, "burl": {baseURL}, "t": {"totp"}}
	return "otpauth://totp/ACME:alice?" + q.Encode()
}

func qrPNG(t *testing.T, text string) []byte {
	t.Helper()
	code, err := qr.Encode(text, qr.M, qr.Auto)
	if err != nil {
		t.Fatal(err)
	}
	if code, err = barcode.Scale(code, 320, 320); err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if err := png.Encode(&buf, code); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func writeFile(t *testing.T, name string, data []byte) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func startEnv(t *testing.T, script bridgetest.Enrollment) *bridgetest.Env {
	t.Helper()
	env := bridgetest.Start(t, bridgesvc.Config{})
	env.Status.Add("eid-1", script)
	return env
}

func TestEnroll(t *testing.T) {
	t.Run("URI", func(t *testing.T) {
		env := startEnv(t, bridgetest.Enrollment{StatusID: "st-1", Secret: secret})
		r := runCLI(t, "", "enroll", "--uri", enrollURI(env.URL, "eid-1"), "--device-id", "dev-42", "--name", "laptop")
		want := "scanned: status SCANNED (status_id st-1)\nenrolled: ph_id ph-st-1 device_id dev-42\n"
		if r.status != 0 || r.stdout != want {
			t.Fatalf("exit %d, stdout %q, stderr %q; want 0 and %q", r.status, r.stdout, r.stderr, want)
		}
		scans := env.Status.Scans()
		if len(scans) != 1 || scans[0].Device.Name != "laptop" || scans[0].Device.Platform != "cli" {
			t.Fatalf("status got scans %+v", scans)
		}
	})
	t.Run("DefaultDeviceID", func(t *testing.T) {
		env := startEnv(t, bridgetest.Enrollment{StatusID: "st-1", Secret: secret})
		r := runCLI(t, "", "enroll", "--uri", enrollURI(env.URL, "eid-1"))
		if r.status != 0 {
			t.Fatalf("exit %d, stderr %q", r.status, r.stderr)
		}
		scans := env.Status.Scans()
		if len(scans) != 1 || !regexp.MustCompile(`^[0-9a-f]{16}$`).MatchString(scans[0].Device.DeviceID) ||
			scans[0].Device.Name != "mfaflow companion" {
			t.Fatalf("status got scans %+v, want a random 16-hex device id and the default name", scans)
		}
	})
	t.Run("QRFile", func(t *testing.T) {
		env := startEnv(t, bridgetest.Enrollment{StatusID: "st-1", Secret: secret})
		path := writeFile(t, "qr.png", qrPNG(t, enrollURI(env.URL, "eid-1")))
		r := runCLI(t, "", "enroll", "--qr", path)
		if r.status != 0 || !strings.Contains(r.stdout, "enrolled: ph_id ph-st-1") {
			t.Fatalf("exit %d, stdout %q, stderr %q", r.status, r.stdout, r.stderr)
		}
	})
	t.Run("DataURIOnStdin", func(t *testing.T) {
		env := startEnv(t, bridgetest.Enrollment{StatusID: "st-1", Secret: secret})
		dataURI := "data:image/png;base64," + base64.StdEncoding.EncodeToString(qrPNG(t, enrollURI(env.URL, "eid-1")))
		r := runCLI(t, dataURI+"\n", "enroll", "--qr", "-")
		if r.status != 0 || !strings.Contains(r.stdout, "enrolled: ph_id ph-st-1") {
			t.Fatalf("exit %d, stdout %q, stderr %q", r.status, r.stdout, r.stderr)
		}
	})
	t.Run("JSON", func(t *testing.T) {
		env := startEnv(t, bridgetest.Enrollment{StatusID: "st-1", Secret: secret})
		r := runCLI(t, "", "enroll", "--json", "--uri", enrollURI(env.URL, "eid-1"), "--device-id", "dev-42")
		var ack protocol.Ack
		if err := json.Unmarshal([]byte(r.stdout), &ack); err != nil {
			t.Fatalf("stdout %q is not an ack: %v", r.stdout, err)
		}
		if r.status != 0 || ack.Type != protocol.TypeAck || ack.Status != "ENROLLED" || ack.PHID != "ph-st-1" || ack.DeviceID != "dev-42" {
			t.Fatalf("exit %d, ack %+v", r.status, ack)
		}
	})
	t.Run("ErrExpired", func(t *testing.T) {
		env := startEnv(t, bridgetest.Enrollment{StatusID: "st-1", Fault: fault.New(fault.Expired, "enrollment expired")})
		r := runCLI(t, "", "enroll", "--uri", enrollURI(env.URL, "eid-1"))
		if r.status != 1 || r.stderr != "error: expired: enrollment expired\n" || r.stdout != "" {
			t.Fatalf("exit %d, stdout %q, stderr %q; want 1 and the expired error", r.status, r.stdout, r.stderr)
		}
	})
	t.Run("ErrUnreachable", func(t *testing.T) {
		env := startEnv(t, bridgetest.Enrollment{StatusID: "st-1", Secret: secret})
		uri := enrollURI(env.URL+"/nowhere", "eid-1") // the bridge route does not exist there
		r := runCLI(t, "", "enroll", "--uri", uri)
		if r.status != 1 || !strings.HasPrefix(r.stderr, "error: unavailable: ") {
			t.Fatalf("exit %d, stderr %q; want 1 and unavailable", r.status, r.stderr)
		}
	})
	t.Run("ErrPlainURI", func(t *testing.T) {
		r := runCLI(t, "", "enroll", "--uri", "otpauth://totp/ACME:alice?secret="+secret)
		if r.status != 1 || !strings.HasPrefix(r.stderr, "error: bad_request: ") {
			t.Fatalf("exit %d, stderr %q; want 1 and bad_request", r.status, r.stderr)
		}
	})
	t.Run("ErrNoSource", func(t *testing.T) {
		if r := runCLI(t, "", "enroll"); r.status != 2 {
			t.Fatalf("exit %d, stderr %q; want 2", r.status, r.stderr)
		}
	})
	t.Run("ErrBothSources", func(t *testing.T) {
		if r := runCLI(t, "", "enroll", "--uri", "otpauth://totp/x?secret="+secret, "--qr", "x.png"); r.status != 2 {
			t.Fatalf("exit %d, stderr %q; want 2", r.status, r.stderr)
		}
	})
}

func TestCode(t *testing.T) {
	before, err := totp.Code(secret, time.Now(), totp.Default)
	if err != nil {
		t.Fatal(err)
	}
	r := runCLI(t, "", "code", "--uri", "otpauth://totp/ACME:alice?secret="+secret)
	after, err := totp.Code(secret, time.Now(), totp.Default)
	if err != nil {
		t.Fatal(err)
	}
	got := strings.TrimSpace(r.stdout)
	// A step boundary may fall between the calls; either side's code is right.
	if r.status != 0 || (got != before && got != after) {
		t.Fatalf("exit %d, code %q, stderr %q; want %s or %s", r.status, got, r.stderr, before, after)
	}
}

func TestUsage(t *testing.T) {
	tests := []struct {
		name   string
		args   []string
		status int
	}{
		{"Help", []string{"help"}, 0},
		{"EnrollHelp", []string{"enroll", "-h"}, 0},
		{"NoCommand", nil, 2},
		{"UnknownCommand", []string{"frobnicate"}, 2},
		{"UnknownFlag", []string{"code", "--nope"}, 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if r := runCLI(t, "", tt.args...); r.status != tt.status {
				t.Fatalf("exit %d, want %d (stderr %q)", r.status, tt.status, r.stderr)
			}
		})
	}
}

func TestEnrollDevice(t *testing.T) {
	env := startEnv(t, bridgetest.Enrollment{StatusID: "st-1", Secret: secret})
	path := filepath.Join(t.TempDir(), "device.json")
	r := runCLI(t, "", "enroll", "--uri", enrollURI(env.URL, "eid-1"), "--device-id", "dev-42", "--device", path)
	want := "scanned: status SCANNED (status_id st-1)\nenrolled: ph_id ph-st-1 device_id dev-42\ndevice: push-capable, key saved to " + path + "\n"
	if r.status != 0 || r.stdout != want {
		t.Fatalf("exit %d, stdout %q, stderr %q; want %q", r.status, r.stdout, r.stderr, want)
	}
	info, err := os.Stat(path)
	if err != nil || info.Mode().Perm() != 0o600 {
		t.Fatalf("device file: %v, %v; want mode 0600", info, err)
	}
	d, err := companion.LoadDeviceFile(path)
	if err != nil || d.PHID != "ph-st-1" || d.DeviceID != "dev-42" || d.BridgeURL != env.URL {
		t.Fatalf("device file %+v, %v", d, err)
	}
	key, _ := d.Key()
	jwk, _ := companion.PublicJWK(&key.PublicKey)
	enrolls := env.Status.Enrolls()
	if len(enrolls) != 1 || enrolls[0].Device.Key == nil || enrolls[0].Device.Key.X != jwk.X || enrolls[0].Device.Key.Y != jwk.Y {
		t.Fatalf("status got %+v, want the key of the device file", enrolls)
	}
}

func TestListen(t *testing.T) {
	setup := func(t *testing.T) (*bridgetest.Env, string) {
		env := bridgetest.Start(t, bridgesvc.Config{})
		key, err := companion.NewDeviceKey()
		if err != nil {
			t.Fatal(err)
		}
		jwk, _ := companion.PublicJWK(&key.PublicKey)
		env.Registry.Add(commands.DeviceInfo{PHID: "ph-1", Sub: "alice",
			Key: &commands.DeviceKey{Kty: jwk.Kty, Crv: jwk.Crv, X: jwk.X, Y: jwk.Y}})
		d, err := companion.NewDeviceFile("ph-1", "dev-1", "laptop", env.URL, key)
		if err != nil {
			t.Fatal(err)
		}
		path := filepath.Join(t.TempDir(), "device.json")
		if err := companion.SaveDeviceFile(path, d); err != nil {
			t.Fatal(err)
		}
		env.Status.AddChallenge(bridgetest.Challenge{
			PushChallenge: commands.PushChallenge{ChallengeID: "ch-1", StatusID: "st-9", Sub: "alice",
				Numbers: []string{"12", "42", "77"}, Context: map[string]string{"app": "ACME"}, ExpiresAt: time.Now().Add(time.Minute)},
			Right: "42",
		})
		return env, path
	}
	t.Run("ApproveOnce", func(t *testing.T) {
		env, path := setup(t)
		r := runCLI(t, "", "listen", "--device", path, "--approve", "42", "--once")
		if r.status != 0 || !strings.Contains(r.stdout, "challenge ch-1: numbers 12 42 77 app=\"ACME\"") ||
			!strings.Contains(r.stdout, "answered approve: status AUTHENTICATED") {
			t.Fatalf("exit %d, stdout %q, stderr %q", r.status, r.stdout, r.stderr)
		}
		want := commands.PushRespondRequest{ChallengeID: "ch-1", PHID: "ph-1", Sub: "alice", Decision: "approve", Number: "42"}
		if got := env.Status.PushResponds(); len(got) != 1 || got[0] != want {
			t.Fatalf("status got %+v, want [%+v]", got, want)
		}
	})
	t.Run("Interactive", func(t *testing.T) {
		env, path := setup(t)
		r := runCLI(t, "77\n", "listen", "--device", path, "--once")
		if r.status != 0 || !strings.Contains(r.stdout, "answered approve: status DENIED") {
			t.Fatalf("exit %d, stdout %q, stderr %q", r.status, r.stdout, r.stderr)
		}
		if got := env.Status.PushResponds(); len(got) != 1 || got[0].Number != "77" {
			t.Fatalf("status got %+v", got)
		}
	})
	t.Run("InteractiveEmptyLineAsksAgain", func(t *testing.T) {
		env, path := setup(t)
		r := runCLI(t, "\n  \n42\n", "listen", "--device", path, "--once")
		if r.status != 0 || strings.Count(r.stdout, "number shown at sign-in") != 3 ||
			!strings.Contains(r.stdout, "answered approve: status AUTHENTICATED") {
			t.Fatalf("exit %d, stdout %q, stderr %q", r.status, r.stdout, r.stderr)
		}
		if got := env.Status.PushResponds(); len(got) != 1 || got[0].Decision != "approve" || got[0].Number != "42" {
			t.Fatalf("status got %+v", got)
		}
	})
	t.Run("DenyNotMe", func(t *testing.T) {
		env, path := setup(t)
		r := runCLI(t, "", "listen", "--device", path, "--deny", "--not-me", "--once")
		if got := env.Status.PushResponds(); r.status != 0 || len(got) != 1 || got[0].Decision != "deny" || got[0].Reason != "not_me" {
			t.Fatalf("exit %d, stderr %q, status got %+v", r.status, r.stderr, got)
		}
	})
	t.Run("ErrUnknownDevice", func(t *testing.T) {
		env, path := setup(t)
		env.Registry.Remove("ph-1")
		r := runCLI(t, "", "listen", "--device", path, "--once")
		if r.status != 1 || !strings.HasPrefix(r.stderr, "error: unauthorized: ") {
			t.Fatalf("exit %d, stderr %q; want 1 and unauthorized", r.status, r.stderr)
		}
	})
	t.Run("ErrUsage", func(t *testing.T) {
		if r := runCLI(t, "", "listen", "--approve", "42"); r.status != 2 {
			t.Fatalf("exit %d without --device, want 2", r.status)
		}
	})
}

// TestAsk: the answer typed at the prompt. An empty line asks again instead of denying.
func TestAsk(t *testing.T) {
	for _, tc := range []struct {
		name, in                 string
		decision, number, reason string
		prompts                  int
		err                      error
	}{
		{"Number", "07\n", "approve", "07", "", 1, nil},
		{"EmptyLinesAskAgain", "\n \t\n\n42\n", "approve", "42", "", 4, nil},
		{"Deny", "deny\n", "deny", "", "", 1, nil},
		{"NotMe", "\nnot-me\n", "deny", "", "not_me", 2, nil},
		{"NotTwoDigitsDenies", "4\n", "deny", "", "", 1, nil},
		{"ErrStdinClosed", "\n", "", "", "", 2, errStdinClosed},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var out, errOut bytes.Buffer
			l := &listener{in: bufio.NewScanner(strings.NewReader(tc.in)), out: &out, errOut: &errOut}
			decision, number, reason, err := l.ask()
			if err != tc.err || decision != tc.decision || number != tc.number || reason != tc.reason {
				t.Fatalf("got %q %q %q %v, want %q %q %q %v", decision, number, reason, err, tc.decision, tc.number, tc.reason, tc.err)
			}
			if got := strings.Count(out.String(), "number shown at sign-in"); got != tc.prompts {
				t.Fatalf("%d prompts, want %d: %q", got, tc.prompts, out.String())
			}
		})
	}
}

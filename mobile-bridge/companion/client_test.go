package companion_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/mfaflow/mfaflow/events/protocol"
	"github.com/mfaflow/mfaflow/mobile-bridge/bridgesvc"
	"github.com/mfaflow/mfaflow/mobile-bridge/companion"
	"github.com/mfaflow/mfaflow/mobile-bridge/internal/bridgetest"
	"github.com/mfaflow/mfaflow/pkg/fault"
	"github.com/mfaflow/mfaflow/pkg/totp"
)

const secret = "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP"

var phone = protocol.Device{DeviceID: "0123456789abcdef", Name: "test phone", Platform: "cli"}

func testContext(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func mustDial(t *testing.T, ctx context.Context, baseURL string) *companion.Client {
	t.Helper()
	c, err := companion.Dial(ctx, baseURL)
	if err != nil {
		t.Fatalf("Dial: %v", err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

func mustCode(t *testing.T, at time.Time) string {
	t.Helper()
	code, err := totp.Code(secret, at, totp.Default)
	if err != nil {
		t.Fatal(err)
	}
	return code
}

func wantBridgeError(t *testing.T, err error, code fault.Code) {
	t.Helper()
	var be *companion.BridgeError
	if !errors.As(err, &be) || be.Code != string(code) {
		t.Fatalf("error %v, want a BridgeError with code %s", err, code)
	}
}

func enrollURI(baseURL, eid string) string {
	q := url.Values{"secret": {secret}, "issuer": {"ACME"}, "eid": {eid}, "burl": {baseURL}, "t": {"totp"}}
	return "otpauth://totp/ACME:alice?" + q.Encode()
}

func TestClient(t *testing.T) {
	t.Run("ScanThenEnroll", func(t *testing.T) {
		env := bridgetest.Start(t, bridgesvc.Config{})
		env.Status.Add("eid-1", bridgetest.Enrollment{StatusID: "st-1", Secret: secret})
		ctx := testContext(t)
		c := mustDial(t, ctx, env.URL)

		ack, err := c.Scan(ctx, "eid-1", phone)
		if err != nil || ack.Status != "SCANNED" || ack.StatusID != "st-1" {
			t.Fatalf("Scan = %+v, %v; want SCANNED st-1", ack, err)
		}
		ack, err = c.Enroll(ctx, "eid-1", mustCode(t, time.Now()))
		if err != nil || ack.Status != "ENROLLED" || ack.PHID != "ph-st-1" || ack.DeviceID != phone.DeviceID {
			t.Fatalf("Enroll = %+v, %v; want ENROLLED ph-st-1 %s", ack, err, phone.DeviceID)
		}
		if got := env.Status.Scans(); len(got) != 1 || got[0].Device.Name != phone.Name || got[0].Device.Platform != phone.Platform {
			t.Fatalf("status got scans %+v", got)
		}
	})
	t.Run("BridgeErrorThenUsable", func(t *testing.T) {
		env := bridgetest.Start(t, bridgesvc.Config{})
		env.Status.Add("eid-1", bridgetest.Enrollment{StatusID: "st-1", Secret: secret})
		ctx := testContext(t)
		c := mustDial(t, ctx, env.URL)

		_, err := c.Enroll(ctx, "eid-1", mustCode(t, time.Now().Add(time.Hour)))
		wantBridgeError(t, err, fault.InvalidCode)
		_, err = c.Enroll(ctx, "eid-1", "12ab")
		wantBridgeError(t, err, fault.BadRequest)
		if _, err := c.Scan(ctx, "eid-1", phone); err != nil {
			t.Fatalf("Scan after errors: %v", err)
		}
	})
	t.Run("ErrorWithoutIDGoesToItsRequest", func(t *testing.T) {
		env := bridgetest.Start(t, bridgesvc.Config{MaxFrameBytes: 512})
		ctx := testContext(t)
		c := mustDial(t, ctx, env.URL)

		big := phone
		big.Name = string(make([]byte, 1024))
		_, err := c.Scan(ctx, "eid-1", big)
		wantBridgeError(t, err, fault.PayloadTooLarge)
	})
	t.Run("ConcurrentCallsMatchedByID", func(t *testing.T) {
		env := bridgetest.Start(t, bridgesvc.Config{})
		ctx := testContext(t)
		c := mustDial(t, ctx, env.URL)
		for i := range 10 {
			if i%2 == 0 {
				env.Status.Add(fmt.Sprint("eid-", i), bridgetest.Enrollment{StatusID: fmt.Sprint("st-", i), Secret: secret})
			}
		}

		var wg sync.WaitGroup
		errs := make(chan error, 10)
		for i := range 10 {
			wg.Go(func() {
				ack, err := c.Scan(ctx, fmt.Sprint("eid-", i), phone)
				switch {
				case i%2 == 0 && (err != nil || ack.StatusID != fmt.Sprint("st-", i)):
					errs <- fmt.Errorf("scan %d = %+v, %v", i, ack, err)
				case i%2 == 1:
					var be *companion.BridgeError
					if !errors.As(err, &be) || be.Code != string(fault.NotFound) {
						errs <- fmt.Errorf("scan %d = %+v, %v; want not_found", i, ack, err)
					}
				}
			})
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Error(err)
		}
	})
	t.Run("ContextDeadline", func(t *testing.T) {
		env := bridgetest.Start(t, bridgesvc.Config{})
		block := make(chan struct{})
		env.Status.Add("eid-slow", bridgetest.Enrollment{StatusID: "st-slow", Block: block})
		c := mustDial(t, testContext(t), env.URL)
		// Registered after the dial so it runs before the client's Close: the bridge then has
		// its answer and reads the close frame at once.
		t.Cleanup(func() { close(block) })

		ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
		defer cancel()
		if _, err := c.Scan(ctx, "eid-slow", phone); !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("Scan = %v, want context.DeadlineExceeded", err)
		}
	})
	t.Run("BridgeGoingAway", func(t *testing.T) {
		env := bridgetest.Start(t, bridgesvc.Config{})
		env.Status.Add("eid-1", bridgetest.Enrollment{StatusID: "st-1", Secret: secret})
		ctx := testContext(t)
		c := mustDial(t, ctx, env.URL)
		if _, err := c.Scan(ctx, "eid-1", phone); err != nil {
			t.Fatal(err)
		}
		if err := env.Bridge.Close(); err != nil {
			t.Fatal(err)
		}
		if _, err := c.Scan(ctx, "eid-1", phone); !errors.Is(err, companion.ErrConnectionLost) {
			t.Fatalf("Scan after the bridge closed = %v, want ErrConnectionLost", err)
		}
	})
	t.Run("ErrAfterClose", func(t *testing.T) {
		env := bridgetest.Start(t, bridgesvc.Config{})
		ctx := testContext(t)
		c := mustDial(t, ctx, env.URL)
		if err := c.Close(); err != nil {
			t.Fatal(err)
		}
		if _, err := c.Scan(ctx, "eid-1", phone); !errors.Is(err, companion.ErrClosed) {
			t.Fatalf("Scan after Close = %v, want ErrClosed", err)
		}
	})
}

func TestDial(t *testing.T) {
	t.Run("ErrScheme", func(t *testing.T) {
		if _, err := companion.Dial(testContext(t), "ftp://example.com"); err == nil {
			t.Fatal("Dial ftp succeeded")
		}
	})
	t.Run("ErrNotABridge", func(t *testing.T) {
		up := websocket.Upgrader{}
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			ws, err := up.Upgrade(w, r, nil) // selects no sub-protocol
			if err == nil {
				_ = ws.Close()
			}
		}))
		t.Cleanup(srv.Close)
		if _, err := companion.Dial(testContext(t), srv.URL); err == nil {
			t.Fatal("Dial of a server without the sub-protocol succeeded")
		}
	})
	t.Run("ErrNoRoute", func(t *testing.T) {
		srv := httptest.NewServer(http.NotFoundHandler())
		t.Cleanup(srv.Close)
		if _, err := companion.Dial(testContext(t), srv.URL); err == nil {
			t.Fatal("Dial of a 404 succeeded")
		}
	})
}

func TestEnroll(t *testing.T) {
	t.Run("OK", func(t *testing.T) {
		env := bridgetest.Start(t, bridgesvc.Config{})
		env.Status.Add("eid-1", bridgetest.Enrollment{StatusID: "st-1", Secret: secret})

		ack, err := companion.Enroll(testContext(t), enrollURI(env.URL, "eid-1"), phone, time.Now)
		if err != nil || ack.Status != "ENROLLED" || ack.PHID != "ph-st-1" || ack.DeviceID != phone.DeviceID {
			t.Fatalf("Enroll = %+v, %v", ack, err)
		}
		if s, e := env.Status.Scans(), env.Status.Enrolls(); len(s) != 1 || len(e) != 1 {
			t.Fatalf("status got %d scans and %d enrolls, want 1 each", len(s), len(e))
		}
	})
	t.Run("ErrInvalidCodeFromWrongClock", func(t *testing.T) {
		env := bridgetest.Start(t, bridgesvc.Config{})
		env.Status.Add("eid-1", bridgetest.Enrollment{StatusID: "st-1", Secret: secret})
		lateClock := func() time.Time { return time.Now().Add(-time.Hour) }

		_, err := companion.Enroll(testContext(t), enrollURI(env.URL, "eid-1"), phone, lateClock)
		wantBridgeError(t, err, fault.InvalidCode)
	})
	t.Run("ErrExpired", func(t *testing.T) {
		env := bridgetest.Start(t, bridgesvc.Config{})
		env.Status.Add("eid-1", bridgetest.Enrollment{StatusID: "st-1", Fault: fault.New(fault.Expired, "enrollment expired")})

		_, err := companion.Enroll(testContext(t), enrollURI(env.URL, "eid-1"), phone, nil)
		wantBridgeError(t, err, fault.Expired)
		if n := len(env.Status.Enrolls()); n != 0 {
			t.Fatalf("enrolled after a failed scan (%d enroll commands)", n)
		}
	})
	t.Run("ErrNotBridged", func(t *testing.T) {
		_, err := companion.Enroll(testContext(t), "otpauth://totp/ACME:alice?secret="+secret, phone, nil)
		if !errors.Is(err, companion.ErrNotBridged) {
			t.Fatalf("Enroll of a plain URI = %v, want ErrNotBridged", err)
		}
	})
}

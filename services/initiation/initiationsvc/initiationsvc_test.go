package initiationsvc_test

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/makiuchi-d/gozxing"
	"github.com/makiuchi-d/gozxing/qrcode"
	"github.com/mfaflow/mfaflow/events/commands"
	"github.com/mfaflow/mfaflow/pkg/auth"
	"github.com/mfaflow/mfaflow/pkg/fault"
	"github.com/mfaflow/mfaflow/pkg/httpx"
	"github.com/mfaflow/mfaflow/pkg/natstest"
	"github.com/mfaflow/mfaflow/pkg/rpc"
	"github.com/mfaflow/mfaflow/services/initiation/initiationsvc"
	"github.com/nats-io/nats.go/micro"

	"bytes"
	"encoding/base64"
	"image/png"
)

var tokens = auth.HS256{Key: []byte("0123456789abcdef0123456789abcdef")}

// peers answers the registry and status commands on a real NATS server the way those services
// do, recording what initiation sent; statusFault, when set, is the status service's answer.
type peers struct {
	mu          sync.Mutex
	registry    []commands.CreateCredentialRequest
	status      []commands.CreateEnrollmentRequest
	statusFault *fault.Error
}

func startPeers(t *testing.T, srv *natstest.Server, p *peers) {
	t.Helper()
	nc := srv.Connect(t)
	log := slog.New(slog.DiscardHandler)
	ctx := context.Background()
	reg, err := micro.AddService(nc, micro.Config{Name: "registry-peer", Version: "0.0.1"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = reg.Stop() })
	err = reg.AddEndpoint("create", rpc.Endpoint(ctx, log, func(_ context.Context, r commands.CreateCredentialRequest) (commands.CreateCredentialReply, error) {
		p.mu.Lock()
		defer p.mu.Unlock()
		p.registry = append(p.registry, r)
		return commands.CreateCredentialReply{Secret: "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP", Algorithm: "SHA1", Digits: 6, Period: 30,
			PendingCredential: []byte("sealed for " + r.StatusID)}, nil
	}), micro.WithEndpointSubject(commands.RegistryCreateCredential))
	if err != nil {
		t.Fatal(err)
	}
	err = reg.AddEndpoint("status-create", rpc.Endpoint(ctx, log, func(_ context.Context, r commands.CreateEnrollmentRequest) (commands.EnrollmentReply, error) {
		p.mu.Lock()
		defer p.mu.Unlock()
		if p.statusFault != nil {
			return commands.EnrollmentReply{}, p.statusFault
		}
		p.status = append(p.status, r)
		return commands.EnrollmentReply{Status: "INITIATED", ID: r.StatusID}, nil
	}), micro.WithEndpointSubject(commands.StatusCreate))
	if err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
}

func startInitiation(t *testing.T, srv *natstest.Server) string {
	t.Helper()
	svc, err := initiationsvc.New(t.Context(), srv.Connect(t), initiationsvc.Config{
		Verifier: tokens, PublicURL: "https://mfa.example.com/", Issuer: "Example Corp",
		EnrollmentTTL: 5 * time.Minute, RequestTimeout: time.Second,
	}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	rt := httpx.NewRouter()
	svc.Routes(rt)
	hs := httptest.NewServer(rt)
	t.Cleanup(hs.Close)
	return hs.URL
}

func post(t *testing.T, u, sub string) (int, map[string]any) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, u, strings.NewReader(`{"deviceInfo":{"deviceId":""}}`))
	if sub != "" {
		tok, err := tokens.Mint(sub, time.Minute)
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Authorization", "Bearer "+tok)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	var out map[string]any
	if err := json.Unmarshal(body, &out); err != nil {
		t.Fatalf("%d %s: %v", resp.StatusCode, body, err)
	}
	return resp.StatusCode, out
}

func decodeQR(t *testing.T, dataURI string) string {
	t.Helper()
	raw, err := base64.StdEncoding.DecodeString(strings.TrimPrefix(dataURI, "data:image/png;base64,"))
	if err != nil {
		t.Fatal(err)
	}
	img, err := png.Decode(bytes.NewReader(raw))
	if err != nil {
		t.Fatal(err)
	}
	bmp, err := gozxing.NewBinaryBitmapFromImage(img)
	if err != nil {
		t.Fatal(err)
	}
	res, err := qrcode.NewQRCodeReader().Decode(bmp, nil)
	if err != nil {
		// gozxing's finder-pattern detector misses some valid symbols; our PNG is a pure
		// barcode (quiet zone, whole pixels per module), which its pure mode reads directly.
		res, err = qrcode.NewQRCodeReader().Decode(bmp, map[gozxing.DecodeHintType]any{gozxing.DecodeHintType_PURE_BARCODE: true})
	}
	if err != nil {
		t.Fatalf("decode %dx%d QR: %v", img.Bounds().Dx(), img.Bounds().Dy(), err)
	}
	return res.GetText()
}

func TestInitiate(t *testing.T) {
	srv := natstest.Start(t)
	p := &peers{}
	startPeers(t, srv, p)
	base := startInitiation(t, srv)

	for _, route := range []string{"/verification-srv/v2/setup/initiate/totp", "/verification-actions-srv/setup/TOTP/initiation"} {
		t.Run(route, func(t *testing.T) {
			status, out := post(t, base+route, "alice@example.com")
			if status != http.StatusOK {
				t.Fatalf("status %d: %v", status, out)
			}
			ex := out["exchange_id"].(map[string]any)
			uri := out["otpauth_uri"].(string)
			if got := decodeQR(t, out["qr_code"].(string)); got != uri {
				t.Fatalf("QR encodes %q, want %q", got, uri)
			}
			u, err := url.Parse(uri)
			if err != nil {
				t.Fatal(err)
			}
			if u.Path != "/Example Corp:alice@example.com" || u.Query().Get("burl") != "https://mfa.example.com" || u.Query().Get("eid") != ex["exchange_id"] {
				t.Fatalf("uri %s", uri)
			}
			p.mu.Lock()
			defer p.mu.Unlock()
			reg, st := p.registry[len(p.registry)-1], p.status[len(p.status)-1]
			if reg.StatusID != out["status_id"] || reg.Sub != "alice@example.com" {
				t.Fatalf("registry asked %+v", reg)
			}
			if st.StatusID != out["status_id"] || st.ExchangeID != ex["exchange_id"] || st.Sub != "alice@example.com" || st.Method != "TOTP" {
				t.Fatalf("status asked %+v", st)
			}
			// The registry's sealed credential goes to the status service, never to the user.
			if string(st.PendingCredential) != "sealed for "+reg.StatusID {
				t.Fatalf("status got pending credential %q", st.PendingCredential)
			}
			for k := range out {
				if strings.Contains(strings.ToLower(k), "pending") {
					t.Fatalf("the answer carries %q", k)
				}
			}
			if ttl := time.Until(st.ExpiresAt); ttl < 4*time.Minute || ttl > 5*time.Minute {
				t.Fatalf("expires in %v, want ~5m", ttl)
			}
		})
	}
	t.Run("ErrUnauthorized", func(t *testing.T) {
		if status, out := post(t, base+"/verification-srv/v2/setup/initiate/totp", ""); status != 401 || out["code"] != "unauthorized" {
			t.Fatalf("%d %v", status, out)
		}
	})
	t.Run("StatusFaultPassesThrough", func(t *testing.T) {
		p.mu.Lock()
		p.statusFault = fault.New(fault.Conflict, "exchange id taken")
		p.mu.Unlock()
		if status, out := post(t, base+"/verification-srv/v2/setup/initiate/totp", "alice"); status != 409 || out["code"] != "conflict" {
			t.Fatalf("%d %v", status, out)
		}
	})
}

func TestInitiateWithoutPeersIsUnavailable(t *testing.T) {
	srv := natstest.Start(t)
	base := startInitiation(t, srv)
	status, out := post(t, base+"/verification-srv/v2/setup/initiate/totp", "alice")
	if status != http.StatusServiceUnavailable || out["code"] != "unavailable" {
		t.Fatalf("%d %v", status, out)
	}
	if strings.Contains(out["detail"].(string), "nats") {
		t.Fatalf("internal detail leaked: %v", out["detail"])
	}
}

package config_test

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/mfaflow/mfaflow/pkg/auth"
	"github.com/mfaflow/mfaflow/pkg/config"
)

func env(m map[string]string) func(string) string { return func(k string) string { return m[k] } }

func TestDefaults(t *testing.T) {
	c, err := config.FromEnv(env(nil))
	if err != nil {
		t.Fatal(err)
	}
	if c.HTTPAddr != ":8080" || c.PublicURL != "http://localhost:8080" || c.EmbeddedNATSAddr != "127.0.0.1:4222" ||
		c.EnrollmentTTL != 10*time.Minute || c.Store != "nats" || c.Issuer != "mfaflow" || c.NATSURL != "" || c.SecretKey != "" {
		t.Fatalf("defaults: %+v", c)
	}
}

func TestCommandLimits(t *testing.T) {
	c, err := config.FromEnv(env(nil))
	if err != nil || c.CommandConcurrency != 256 || c.CommandTimeout != 10*time.Second {
		t.Fatalf("defaults: %d %v %v", c.CommandConcurrency, c.CommandTimeout, err)
	}
	c, err = config.FromEnv(env(map[string]string{"MFA_COMMAND_CONCURRENCY": " 32 ", "MFA_COMMAND_TIMEOUT": "2500ms"}))
	if err != nil || c.CommandConcurrency != 32 || c.CommandTimeout != 2500*time.Millisecond {
		t.Fatalf("set: %d %v %v", c.CommandConcurrency, c.CommandTimeout, err)
	}
}

func TestNATSReplicas(t *testing.T) {
	c, err := config.FromEnv(env(nil))
	if err != nil || c.NATSReplicas != 1 {
		t.Fatalf("default: %d %v", c.NATSReplicas, err)
	}
	c, err = config.FromEnv(env(map[string]string{"MFA_NATS_REPLICAS": " 3 "}))
	if err != nil || c.NATSReplicas != 3 {
		t.Fatalf("set: %d %v", c.NATSReplicas, err)
	}
}

func TestBridgeLimits(t *testing.T) {
	c, err := config.FromEnv(env(nil))
	if err != nil || c.BridgeMaxConnections != 10000 || c.BridgeFrameRate != 10 || c.BridgeFrameBurst != 20 {
		t.Fatalf("defaults: %d %v %d %v", c.BridgeMaxConnections, c.BridgeFrameRate, c.BridgeFrameBurst, err)
	}
	c, err = config.FromEnv(env(map[string]string{"MFA_BRIDGE_MAX_CONNECTIONS": " 500 ", "MFA_BRIDGE_FRAME_RATE": "2.5", "MFA_BRIDGE_FRAME_BURST": "4"}))
	if err != nil || c.BridgeMaxConnections != 500 || c.BridgeFrameRate != 2.5 || c.BridgeFrameBurst != 4 {
		t.Fatalf("set: %d %v %d %v", c.BridgeMaxConnections, c.BridgeFrameRate, c.BridgeFrameBurst, err)
	}
}

// TestUserLimits: MFA_USER_START_RATE (per minute), MFA_USER_START_BURST and MFA_USER_STREAMS
// default to 20, 10 and 20; 0 turns a limit off.
func TestUserLimits(t *testing.T) {
	c, err := config.FromEnv(env(nil))
	if err != nil || c.UserStartRate != 20 || c.UserStartBurst != 10 || c.UserStreams != 20 {
		t.Fatalf("defaults: %v %d %d %v", c.UserStartRate, c.UserStartBurst, c.UserStreams, err)
	}
	c, err = config.FromEnv(env(map[string]string{"MFA_USER_START_RATE": "0", "MFA_USER_START_BURST": " 3 ", "MFA_USER_STREAMS": "0"}))
	if err != nil || c.UserStartRate != 0 || c.UserStartBurst != 3 || c.UserStreams != 0 {
		t.Fatalf("set: %v %d %d %v", c.UserStartRate, c.UserStartBurst, c.UserStreams, err)
	}
}

func TestVerificationTTL(t *testing.T) {
	c, err := config.FromEnv(env(nil))
	if err != nil || c.VerificationTTL != 5*time.Minute {
		t.Fatalf("default: %v %v", c.VerificationTTL, err)
	}
	for _, v := range []string{"30s", "1h", " 90s "} {
		c, err = config.FromEnv(env(map[string]string{"MFA_VERIFICATION_TTL": v}))
		if want, _ := time.ParseDuration(strings.TrimSpace(v)); err != nil || c.VerificationTTL != want {
			t.Fatalf("%q: %v %v", v, c.VerificationTTL, err)
		}
	}
}

// A PEM with a placeholder body, written on one line with `\n` as in an env file: config checks
// the shape only; mfatoken parses the key.
const pemText = `-----BEGIN PRIVATE KEY-----\nTUZBLVNJR05JTkctS0VZLVBMQUNFSE9MREVS\n-----END PRIVATE KEY-----`

func TestSigningKey(t *testing.T) {
	c, err := config.FromEnv(env(nil))
	if err != nil || c.SigningKey != "" {
		t.Fatalf("default: %q %v", c.SigningKey, err)
	}
	t.Run("Multiline", func(t *testing.T) {
		text := strings.ReplaceAll(pemText, `\n`, "\n") + "\n"
		c, err := config.FromEnv(env(map[string]string{"MFA_SIGNING_KEY": text}))
		if err != nil || c.SigningKey != strings.TrimSpace(text) {
			t.Fatalf("%q %v", c.SigningKey, err)
		}
	})
	t.Run("EscapedNewlines", func(t *testing.T) {
		c, err := config.FromEnv(env(map[string]string{"MFA_SIGNING_KEY": pemText + `\n` + pemText}))
		want := strings.ReplaceAll(pemText, `\n`, "\n")
		if err != nil || c.SigningKey != want+"\n"+want || strings.Contains(c.SigningKey, `\n`) {
			t.Fatalf("%q %v", c.SigningKey, err)
		}
	})
}

const pushSecret = "push-secret-push-secret-push-secret!"

func TestPushSettings(t *testing.T) {
	c, err := config.FromEnv(env(nil))
	if err != nil || c.PushWebhookURL != "" || c.PushWebhookSecret != "" || c.PushRate != 5 {
		t.Fatalf("defaults: %q %q %d %v", c.PushWebhookURL, c.PushWebhookSecret, c.PushRate, err)
	}
	t.Run("Set", func(t *testing.T) {
		c, err := config.FromEnv(env(map[string]string{
			"MFA_PUSH_WEBHOOK_URL": " https://push.example.com/wake?token=t ", "MFA_PUSH_WEBHOOK_SECRET": pushSecret, "MFA_PUSH_RATE": "100",
		}))
		if err != nil || c.PushWebhookURL != "https://push.example.com/wake?token=t" || c.PushWebhookSecret != pushSecret || c.PushRate != 100 {
			t.Fatalf("%q %q %d %v", c.PushWebhookURL, c.PushWebhookSecret, c.PushRate, err)
		}
	})
	t.Run("PlainHTTP", func(t *testing.T) {
		c, err := config.FromEnv(env(map[string]string{"MFA_PUSH_WEBHOOK_URL": "http://push-adapter:8080/", "MFA_PUSH_WEBHOOK_SECRET": pushSecret, "MFA_PUSH_RATE": "1"}))
		if err != nil || c.PushWebhookURL != "http://push-adapter:8080/" || c.PushRate != 1 {
			t.Fatalf("%q %d %v", c.PushWebhookURL, c.PushRate, err)
		}
	})
	t.Run("SecretWithoutURL", func(t *testing.T) {
		// Unused but harmless: an operator may stage the secret before the adapter.
		if _, err := config.FromEnv(env(map[string]string{"MFA_PUSH_WEBHOOK_SECRET": "short"})); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("ErrURL", func(t *testing.T) {
		for _, u := range []string{"/wake", "push.example.com/wake", "https:///wake", "ftp://push.example.com/", "https://push example.com/%zz"} {
			_, err := config.FromEnv(env(map[string]string{"MFA_PUSH_WEBHOOK_URL": u, "MFA_PUSH_WEBHOOK_SECRET": pushSecret}))
			if err == nil || !strings.Contains(err.Error(), "MFA_PUSH_WEBHOOK_URL") {
				t.Fatalf("%q: %v", u, err)
			}
		}
	})
	t.Run("ErrorsDoNotEchoTheURL", func(t *testing.T) {
		_, err := config.FromEnv(env(map[string]string{"MFA_PUSH_WEBHOOK_URL": "push.example.com/wake?token=url-token", "MFA_PUSH_WEBHOOK_SECRET": "too-short-secret"}))
		if err == nil || strings.Contains(err.Error(), "url-token") || strings.Contains(err.Error(), "too-short-secret") {
			t.Fatalf("%v", err)
		}
	})
}

func TestPublicURLFollowsTheListenAddress(t *testing.T) {
	c, err := config.FromEnv(env(map[string]string{"MFA_HTTP_ADDR": "127.0.0.1:9000"}))
	if err != nil || c.PublicURL != "http://127.0.0.1:9000" {
		t.Fatalf("%q %v", c.PublicURL, err)
	}
	c, err = config.FromEnv(env(map[string]string{"MFA_PUBLIC_URL": "https://mfa.example.com/"}))
	if err != nil || c.PublicURL != "https://mfa.example.com" {
		t.Fatalf("%q %v", c.PublicURL, err)
	}
}

func TestErrors(t *testing.T) {
	for name, vars := range map[string]map[string]string{
		"TTL":                      {"MFA_ENROLLMENT_TTL": "ten minutes"},
		"NegTTL":                   {"MFA_ENROLLMENT_TTL": "-1m"},
		"HugeTTL":                  {"MFA_ENROLLMENT_TTL": "48h"},
		"VerificationTTL":          {"MFA_VERIFICATION_TTL": "five minutes"},
		"ShortVerificationTTL":     {"MFA_VERIFICATION_TTL": "29s"},
		"NegVerificationTTL":       {"MFA_VERIFICATION_TTL": "-5m"},
		"HugeVerificationTTL":      {"MFA_VERIFICATION_TTL": "61m"},
		"SigningKey":               {"MFA_SIGNING_KEY": "not-a-pem-secret-value"},
		"Store":                    {"MFA_STORE": "redis"},
		"MongoWithoutURI":          {"MFA_STORE": "mongo"},
		"MongoURI":                 {"MFA_STORE": "mongo", "MFA_MONGODB_URI": "db:27017"},
		"LogLevel":                 {"MFA_LOG_LEVEL": "loud"},
		"PollRate":                 {"MFA_POLL_RATE": "fast"},
		"PollBurst":                {"MFA_POLL_BURST": "0"},
		"UserStartRate":            {"MFA_USER_START_RATE": "lots"},
		"NegUserStartRate":         {"MFA_USER_START_RATE": "-1"},
		"NaNUserStartRate":         {"MFA_USER_START_RATE": "NaN"},
		"InfUserStartRate":         {"MFA_USER_START_RATE": "+Inf"},
		"UserStartBurst":           {"MFA_USER_START_BURST": "0"},
		"HugeUserStartBurst":       {"MFA_USER_START_BURST": "10001"},
		"UserStreams":              {"MFA_USER_STREAMS": "many"},
		"NegUserStreams":           {"MFA_USER_STREAMS": "-1"},
		"HugeUserStreams":          {"MFA_USER_STREAMS": "100001"},
		"CommandConcurrency":       {"MFA_COMMAND_CONCURRENCY": "many"},
		"ZeroCommandConcurrency":   {"MFA_COMMAND_CONCURRENCY": "0"},
		"HugeCommandConcurrency":   {"MFA_COMMAND_CONCURRENCY": "1000000"},
		"CommandTimeout":           {"MFA_COMMAND_TIMEOUT": "10"},
		"NegCommandTimeout":        {"MFA_COMMAND_TIMEOUT": "-1s"},
		"HugeCommandTimeout":       {"MFA_COMMAND_TIMEOUT": "1h"},
		"BridgeMaxConnections":     {"MFA_BRIDGE_MAX_CONNECTIONS": "lots"},
		"ZeroBridgeMaxConnections": {"MFA_BRIDGE_MAX_CONNECTIONS": "0"},
		"HugeBridgeMaxConnections": {"MFA_BRIDGE_MAX_CONNECTIONS": "2000000"},
		"BridgeFrameRate":          {"MFA_BRIDGE_FRAME_RATE": "fast"},
		"ZeroBridgeFrameRate":      {"MFA_BRIDGE_FRAME_RATE": "0"},
		"NaNBridgeFrameRate":       {"MFA_BRIDGE_FRAME_RATE": "NaN"},
		"InfBridgeFrameRate":       {"MFA_BRIDGE_FRAME_RATE": "+Inf"},
		"BridgeFrameBurst":         {"MFA_BRIDGE_FRAME_BURST": "0"},
		"HugeBridgeFrameBurst":     {"MFA_BRIDGE_FRAME_BURST": "100000"},
		"PushWebhookSecretMissing": {"MFA_PUSH_WEBHOOK_URL": "https://push.example.com/wake"},
		"PushWebhookSecretShort":   {"MFA_PUSH_WEBHOOK_URL": "https://push.example.com/wake", "MFA_PUSH_WEBHOOK_SECRET": strings.Repeat("s", 31)},
		"PushRate":                 {"MFA_PUSH_RATE": "five"},
		"ZeroPushRate":             {"MFA_PUSH_RATE": "0"},
		"HugePushRate":             {"MFA_PUSH_RATE": "101"},
		"NATSReplicas":             {"MFA_NATS_REPLICAS": "three"},
		"ZeroNATSReplicas":         {"MFA_NATS_REPLICAS": "0"},
		"HugeNATSReplicas":         {"MFA_NATS_REPLICAS": "6"},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := config.FromEnv(env(vars))
			if err == nil {
				t.Fatal("accepted")
			}
			for k := range vars {
				if !strings.Contains(err.Error(), k) {
					t.Fatalf("error %q does not name %s", err, k)
				}
			}
			for _, k := range []string{"MFA_SIGNING_KEY", "MFA_PUSH_WEBHOOK_SECRET"} {
				if v := vars[k]; v != "" && strings.Contains(err.Error(), v) {
					t.Fatalf("error %q echoes %s", err, k)
				}
			}
		})
	}
}

func TestLogValueMasksSecrets(t *testing.T) {
	c, err := config.FromEnv(env(map[string]string{
		"MFA_SECRET_KEY": "c2VjcmV0LWtleS1zZWNyZXQta2V5LXNlY3JldC1rZXk=", "MFA_JWT_SECRET": "jwt-secret-jwt-secret-jwt-secret-jwt",
		"MFA_MONGODB_URI": "mongodb://admin:hunter2@db:27017", "MFA_SIGNING_KEY": pemText,
		"MFA_PUSH_WEBHOOK_URL": "https://user:pw-in-url@push.example.com/wake?token=url-token", "MFA_PUSH_WEBHOOK_SECRET": pushSecret,
	}))
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	slog.New(slog.NewTextHandler(&buf, nil)).Info("start", "config", c)
	for _, secret := range []string{"c2VjcmV0", "jwt-secret", "hunter2", "TUZBLVNJR05J", "PRIVATE KEY", "push-secret", "pw-in-url", "url-token", "/wake"} {
		if strings.Contains(buf.String(), secret) {
			t.Fatalf("log holds %q: %s", secret, buf.String())
		}
	}
	if !strings.Contains(buf.String(), "signing_key=********") || !strings.Contains(buf.String(), "verification_ttl=5m0s") {
		t.Fatalf("signing key or verification TTL missing from %s", buf.String())
	}
	if !strings.Contains(buf.String(), "push_webhook_url=https://push.example.com ") || !strings.Contains(buf.String(), "push_webhook_secret=********") ||
		!strings.Contains(buf.String(), "push_rate=5") {
		t.Fatalf("push settings missing from %s", buf.String())
	}
	if !strings.Contains(buf.String(), "db:27017") {
		t.Fatalf("mongo host missing from %s", buf.String())
	}
}

func TestMongoStore(t *testing.T) {
	c, err := config.FromEnv(env(map[string]string{"MFA_STORE": "mongo", "MFA_MONGODB_URI": "mongodb://db:27017/mfaflow"}))
	if err != nil || c.Store != "mongo" || c.MongoURI != "mongodb://db:27017/mfaflow" {
		t.Fatalf("MFA_STORE=mongo with a URI: %+v %v", c.Store, err)
	}
}

func TestIdentityProviderTokens(t *testing.T) {
	c, err := config.FromEnv(env(map[string]string{"MFA_JWT_JWKS_URL": "https://idp.example/.well-known/jwks.json", "MFA_JWT_AUDIENCE": "mfaflow", "MFA_JWT_ISSUER": "https://idp.example"}))
	if err != nil {
		t.Fatal(err)
	}
	v, err := c.Verifier()
	if err != nil {
		t.Fatal(err)
	}
	if j, ok := v.(*auth.JWKS); !ok || j.URL != c.JWKSURL || j.Audience != "mfaflow" || j.Issuer != "https://idp.example" {
		t.Fatalf("verifier = %#v, want the JWKS verifier with audience and issuer", v)
	}
	if _, err := config.FromEnv(env(map[string]string{"MFA_JWT_JWKS_URL": "https://idp.example/jwks", "MFA_JWT_SECRET": strings.Repeat("k", 32)})); err == nil || !strings.Contains(err.Error(), "exclude each other") {
		t.Fatalf("JWKS URL with a shared secret: %v, want refused", err)
	}
	if _, err := config.FromEnv(env(map[string]string{"MFA_JWT_JWKS_URL": "not a url"})); err == nil {
		t.Fatal("a JWKS URL that is not absolute is accepted")
	}
	c, err = config.FromEnv(env(map[string]string{"MFA_JWT_SECRET": strings.Repeat("k", 32)}))
	if err != nil {
		t.Fatal(err)
	}
	if v, err := c.Verifier(); err != nil {
		t.Fatal(err)
	} else if _, ok := v.(auth.HS256); !ok {
		t.Fatalf("without a JWKS URL the verifier is %T, want HS256", v)
	}
}

func TestWebAuthn(t *testing.T) {
	base := map[string]string{"MFA_JWT_SECRET": strings.Repeat("k", 32)}
	load := func(t *testing.T, env map[string]string) config.Config {
		t.Helper()
		all := map[string]string{}
		for k, v := range base {
			all[k] = v
		}
		for k, v := range env {
			all[k] = v
		}
		c, err := config.FromEnv(func(k string) string { return all[k] })
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	t.Run("DefaultsFromPublicURL", func(t *testing.T) {
		w, err := load(t, map[string]string{"MFA_PUBLIC_URL": "https://mfa.example.org/", "MFA_ISSUER": "Acme"}).WebAuthn()
		if err != nil || w.RPID != "mfa.example.org" || w.RPName != "Acme" || len(w.Origins) != 1 || w.Origins[0] != "https://mfa.example.org" || w.UserVerification != "preferred" {
			t.Fatalf("%+v %v", w, err)
		}
	})
	t.Run("LocalhostWorks", func(t *testing.T) {
		if w, err := load(t, map[string]string{"MFA_PUBLIC_URL": "http://localhost:8080"}).WebAuthn(); err != nil || w.Origins[0] != "http://localhost:8080" {
			t.Fatalf("%+v %v", w, err)
		}
	})
	t.Run("IPAddressIsInactive", func(t *testing.T) {
		_, err := load(t, map[string]string{"MFA_PUBLIC_URL": "http://127.0.0.1:8080"}).WebAuthn()
		if err == nil || !strings.Contains(err.Error(), "MFA_WEBAUTHN_RP_ID") || !strings.Contains(err.Error(), "IP address") {
			t.Fatalf("%v", err)
		}
	})
	t.Run("ExplicitSettings", func(t *testing.T) {
		w, err := load(t, map[string]string{"MFA_PUBLIC_URL": "http://127.0.0.1:8080", "MFA_WEBAUTHN_RP_ID": "localhost",
			"MFA_WEBAUTHN_ORIGINS": "http://localhost:9000, https://app.localhost", "MFA_WEBAUTHN_USER_VERIFICATION": "required"}).WebAuthn()
		if err != nil || len(w.Origins) != 2 || w.UserVerification != "required" {
			t.Fatalf("%+v %v", w, err)
		}
	})
	t.Run("OriginOutsideRPID", func(t *testing.T) {
		if _, err := load(t, map[string]string{"MFA_WEBAUTHN_RP_ID": "example.org", "MFA_WEBAUTHN_ORIGINS": "https://example.com"}).WebAuthn(); err == nil {
			t.Fatal("an origin outside the RP ID was accepted")
		}
	})
	t.Run("PlainHTTPOutsideLocalhost", func(t *testing.T) {
		if _, err := load(t, map[string]string{"MFA_PUBLIC_URL": "http://mfa.example.org"}).WebAuthn(); err == nil {
			t.Fatal("plain http on a public host was accepted")
		}
	})
	t.Run("BadUserVerificationFailsStartUp", func(t *testing.T) {
		env := map[string]string{"MFA_JWT_SECRET": strings.Repeat("k", 32), "MFA_WEBAUTHN_USER_VERIFICATION": "always"}
		if _, err := config.FromEnv(func(k string) string { return env[k] }); err == nil || !strings.Contains(err.Error(), "MFA_WEBAUTHN_USER_VERIFICATION") {
			t.Fatalf("%v", err)
		}
	})
}

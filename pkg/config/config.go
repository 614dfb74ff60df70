// Package config reads mfaflow's configuration once, in main, from environment variables
// (the names are part of the contract in DESIGN.md). Libraries never read the environment;
// they take the values from Config.
package config

import (
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/mfaflow/mfaflow/pkg/auth"
	"github.com/mfaflow/mfaflow/pkg/natsx"
	"github.com/mfaflow/mfaflow/pkg/rpc"
	"github.com/nats-io/nats.go"
)

// Config is every setting of every mfaflow process. Each process uses the part it needs.
type Config struct {
	HTTPAddr  string // MFA_HTTP_ADDR
	PublicURL string // MFA_PUBLIC_URL
	NATSURL   string // MFA_NATS_URL
	// NATSReplicas is the replica count of the MFA_EVENTS stream and the KV buckets a service
	// creates when they are missing; existing ones keep what the operator configured.
	NATSReplicas     int           // MFA_NATS_REPLICAS
	EmbeddedNATSAddr string        // MFA_EMBEDDED_NATS_ADDR
	DataDir          string        // MFA_DATA_DIR
	Store            string        // MFA_STORE
	MongoURI         string        // MFA_MONGODB_URI
	EnrollmentTTL    time.Duration // MFA_ENROLLMENT_TTL
	// VerificationTTL bounds one authentication (sign-in verification) from initiation on.
	VerificationTTL time.Duration // MFA_VERIFICATION_TTL
	Issuer          string        // MFA_ISSUER
	ClientID        string        // MFA_CLIENT_ID
	SecretKey       string        // MFA_SECRET_KEY
	// SecretKeys is a key ring for rotating SecretKey: "id:key,id:key", the current key first.
	SecretKeys string // MFA_SECRET_KEYS
	JWTSecret  string // MFA_JWT_SECRET
	JWTIssuer  string // MFA_JWT_ISSUER
	// JWKSURL, when set, verifies Bearer tokens of an identity provider against its JWKS (RS256,
	// ES256, ES384, EdDSA) instead of the shared HS256 secret; JWTAudience is then required in `aud`.
	JWKSURL     string // MFA_JWT_JWKS_URL
	JWTAudience string // MFA_JWT_AUDIENCE
	// NATS credentials beyond the URL: a .creds file (user JWT and NKey seed), an NKey seed
	// file, and TLS client certificates with the CA that signed the server's.
	NATSCreds   string // MFA_NATS_CREDS
	NATSNKey    string // MFA_NATS_NKEY
	NATSTLSCert string // MFA_NATS_TLS_CERT
	NATSTLSKey  string // MFA_NATS_TLS_KEY
	NATSTLSCA   string // MFA_NATS_TLS_CA
	// SigningKey is PEM text: one or more EC P-256 private keys that sign mfa_tokens, the
	// first one signing, all published in the JWKS. Literal `\n` in the variable are newlines.
	SigningKey string     // MFA_SIGNING_KEY
	LogLevel   slog.Level // MFA_LOG_LEVEL
	PollRate   float64    // MFA_POLL_RATE
	PollBurst  int        // MFA_POLL_BURST
	// CommandConcurrency bounds the NATS commands one endpoint runs at once on one replica
	// (rpc.Limits.MaxInFlight); CommandTimeout is each command's deadline (rpc.Limits.Timeout).
	CommandConcurrency int           // MFA_COMMAND_CONCURRENCY
	CommandTimeout     time.Duration // MFA_COMMAND_TIMEOUT
	// BridgeMaxConnections caps the websocket connections of one mobile-bridge replica;
	// BridgeFrameRate and BridgeFrameBurst bound the frames per second of one connection.
	BridgeMaxConnections int     // MFA_BRIDGE_MAX_CONNECTIONS
	BridgeFrameRate      float64 // MFA_BRIDGE_FRAME_RATE
	BridgeFrameBurst     int     // MFA_BRIDGE_FRAME_BURST
	// LockoutThreshold wrong sign-in codes in a row lock a user for LockoutDuration, doubling per
	// further lock up to LockoutMaxDuration.
	LockoutThreshold   int           // MFA_LOCKOUT_THRESHOLD
	LockoutDuration    time.Duration // MFA_LOCKOUT_DURATION
	LockoutMaxDuration time.Duration // MFA_LOCKOUT_MAX_DURATION
	// PushWebhookURL, when set, receives a wake-up signed with PushWebhookSecret for each push
	// challenge to a device that is not connected; empty turns wake-ups off.
	PushWebhookURL    string // MFA_PUSH_WEBHOOK_URL
	PushWebhookSecret string // MFA_PUSH_WEBHOOK_SECRET
	// PushRate bounds the push sign-ins one user may start per PushRateWindow.
	PushRate int // MFA_PUSH_RATE
	// StepUp, when true (MFA_STEP_UP=on, the default), makes changing the factors of a user who
	// has one need X-MFA-Token with a fresh, unused mfa_token of the user; StepUpMaxAge is how
	// old its auth_time may be.
	StepUp       bool          // MFA_STEP_UP
	StepUpMaxAge time.Duration // MFA_STEP_UP_MAX_AGE
	// UserStartRate is the initiations (enrollments, sign-ins, recovery-code sets) one user may
	// start per minute on one replica of each service, after a burst of UserStartBurst; 0 turns
	// the limit off.
	UserStartRate  float64 // MFA_USER_START_RATE
	UserStartBurst int     // MFA_USER_START_BURST
	// UserStreams bounds the live status streams (SSE and websocket) one user holds open on one
	// status replica; 0 turns the limit off.
	UserStreams int // MFA_USER_STREAMS
	// Codes by email and SMS: digits and validity of a code, wrong codes before an enrollment
	// fails; SMS sent per user, per number and in all per hour, and the regions SMS go to.
	// DisableConfirmURL is the frontend page an emailed "disable MFA" link opens (the token is
	// appended as ?token=…); empty means the demo page at PublicURL.
	DisableConfirmURL string        // MFA_DISABLE_CONFIRM_URL
	OOBCodeDigits     int           // MFA_OOB_CODE_DIGITS
	OOBCodeTTL        time.Duration // MFA_OOB_CODE_TTL
	OOBMaxAttempts    int           // MFA_OOB_MAX_ATTEMPTS
	SMSUserRate       int           // MFA_SMS_USER_RATE
	SMSHourlyLimit    int           // MFA_SMS_HOURLY_LIMIT
	SMSRegions        []string      // MFA_SMS_REGIONS
	SMSPerNumberRate  int           // MFA_SMS_NUMBER_RATE

	// Delivery of codes by email and SMS (the notifier). SMTPURL's scheme says how to talk to the
	// mail server: smtp (STARTTLS required), smtps (implicit TLS) or smtp+insecure (plain, for
	// development); empty turns email off. SMSProvider is "", "webhook" or "twilio"; empty turns
	// SMS off.
	SMTPURL          string // MFA_SMTP_URL
	MailFrom         string // MFA_MAIL_FROM
	SMSProvider      string // MFA_SMS_PROVIDER
	SMSWebhookURL    string // MFA_SMS_WEBHOOK_URL
	SMSWebhookSecret string // MFA_SMS_WEBHOOK_SECRET
	TwilioAccountSID string // MFA_TWILIO_ACCOUNT_SID
	TwilioAuthToken  string // MFA_TWILIO_AUTH_TOKEN
	TwilioFrom       string // MFA_TWILIO_FROM
	TwilioBaseURL    string // MFA_TWILIO_BASE_URL
	// DeliveryKey seals delivery requests on MFA_DELIVERIES (32 bytes, base64 or hex: see
	// DeliveryKeyBytes); the publishers of codes and the notifier must share it.
	DeliveryKey   string // MFA_DELIVERY_KEY
	TemplatesDir  string // MFA_TEMPLATES_DIR
	DefaultLocale string // MFA_DEFAULT_LOCALE

	// Passkeys (WEBAUTHN): the relying party, as set; empty takes the default. WebAuthn()
	// resolves the defaults and decides whether the settings can work.
	WebAuthnRPID             string   // MFA_WEBAUTHN_RP_ID
	WebAuthnRPName           string   // MFA_WEBAUTHN_RP_NAME
	WebAuthnOrigins          []string // MFA_WEBAUTHN_ORIGINS
	WebAuthnUserVerification string   // MFA_WEBAUTHN_USER_VERIFICATION
}

// MaxEnrollmentTTL bounds MFA_ENROLLMENT_TTL: an enrollment is a QR on a screen, and the status
// store keeps enrollments for a week only.
const MaxEnrollmentTTL = 24 * time.Hour

// Bounds of MFA_VERIFICATION_TTL: a sign-in verification needs time to open an app and type a
// code, and one left open for more than an hour is no longer the sign-in it was started for.
const (
	MinVerificationTTL = 30 * time.Second
	MaxVerificationTTL = time.Hour
)

// Bounds of the command settings: more than MaxCommandConcurrency commands at once per endpoint
// is a queue, not concurrency, and a command that may run past MaxCommandTimeout answers nobody.
const (
	MaxCommandConcurrency = 65536
	MaxCommandTimeout     = 5 * time.Minute
)

// MaxBridgeConnections bounds MFA_BRIDGE_MAX_CONNECTIONS: each connection is a file descriptor
// and a goroutine, and a replica is better scaled out than grown past this.
const MaxBridgeConnections = 1_000_000

// MaxBridgeFrameBurst bounds MFA_BRIDGE_FRAME_BURST; companion apps send a handful of frames.
const MaxBridgeFrameBurst = 10_000

// MinPushWebhookSecretBytes is the shortest MFA_PUSH_WEBHOOK_SECRET: an HMAC-SHA256 key should
// be as long as the hash.
const MinPushWebhookSecretBytes = 32

// PushRateWindow is the window of MFA_PUSH_RATE, and MaxPushRate its bound: more push prompts
// than that are a user being flooded into approving one.
const (
	PushRateWindow = 10 * time.Minute
	MaxPushRate    = 100
)

// Bounds of MFA_STEP_UP_MAX_AGE: a proof older than an hour says little about who holds the
// session now, and an mfa_token lives at most 5 minutes anyway.
const (
	MinStepUpMaxAge = 10 * time.Second
	MaxStepUpMaxAge = time.Hour
)

// Bounds of the per-user limits: a burst past MaxUserStartBurst or more than MaxUserStreams
// streams of one user is no limit; 0 is how a load test turns one off.
const (
	MaxUserStartBurst = 10_000
	MaxUserStreams    = 100_000
)

// MaxNATSReplicas bounds MFA_NATS_REPLICAS: JetStream keeps at most 5 replicas of a stream.
const MaxNATSReplicas = 5

// Variable describes one setting, for docs and --help.
type Variable struct {
	Name, Default, Description string
}

// Variables lists every setting with its default.
var Variables = []Variable{
	{"MFA_HTTP_ADDR", ":8080", "HTTP listen address"},
	{"MFA_PUBLIC_URL", "(http://localhost:<port of MFA_HTTP_ADDR>)", "public base URL, put in the QR (`burl`) so the companion app can connect back"},
	{"MFA_NATS_URL", "(unset: the dev stack embeds NATS; services require it)", "NATS server URL(s), comma-separated"},
	{"MFA_NATS_REPLICAS", "1", "replicas of the MFA_EVENTS stream and the KV buckets a service creates when they are missing (1 to 5; 3 on a NATS cluster); an existing stream or bucket is left as configured, with a warning when it differs"},
	{"MFA_EMBEDDED_NATS_ADDR", "127.0.0.1:4222", "where the dev stack's embedded NATS listens, so downstream consumers can connect"},
	{"MFA_DATA_DIR", ".mfaflow", "dev stack data: JetStream store, generated keys"},
	{"MFA_STORE", "nats", "storage backend: nats (JetStream KV) or mongo"},
	{"MFA_MONGODB_URI", "", "MongoDB connection string when MFA_STORE=mongo"},
	{"MFA_ENROLLMENT_TTL", "10m", "how long an enrollment stays open (Go duration)"},
	{"MFA_VERIFICATION_TTL", "5m", "how long a sign-in verification stays open (Go duration, 30s to 1h)"},
	{"MFA_ISSUER", "mfaflow", "issuer shown in authenticator apps"},
	{"MFA_CLIENT_ID", "(derived from MFA_ISSUER)", "authenticator client id (`cid` in the QR)"},
	{"MFA_SECRET_KEY", "(dev stack: generated in MFA_DATA_DIR)", "32-byte key (base64 or hex) that encrypts TOTP secrets at rest"},
	{"MFA_SECRET_KEYS", "", "key ring for rotating MFA_SECRET_KEY without downtime: id:key,id:key (ids 1 to 255), the current key first; replaces MFA_SECRET_KEY"},
	{"MFA_JWT_SECRET", "(dev stack: generated in MFA_DATA_DIR)", "HS256 key that verifies Bearer tokens (at least 32 bytes)"},
	{"MFA_JWT_ISSUER", "", "required `iss` of Bearer tokens, when set"},
	{"MFA_JWT_JWKS_URL", "", "the identity provider's JWKS URL: Bearer tokens (RS256, ES256, ES384, EdDSA) are verified against its keys, refreshed on an unknown kid; excludes MFA_JWT_SECRET"},
	{"MFA_JWT_AUDIENCE", "", "required `aud` of Bearer tokens, when set"},
	{"MFA_NATS_CREDS", "", "path of a NATS .creds file (user JWT and NKey seed) to connect with"},
	{"MFA_NATS_NKEY", "", "path of a file holding an NKey seed (SU…) to connect with"},
	{"MFA_NATS_TLS_CERT", "", "path of a PEM client certificate for NATS (with MFA_NATS_TLS_KEY)"},
	{"MFA_NATS_TLS_KEY", "", "path of the PEM private key of MFA_NATS_TLS_CERT"},
	{"MFA_NATS_TLS_CA", "", "path of the PEM CA certificate(s) that signed the NATS server's certificate"},
	{"MFA_LOCKOUT_THRESHOLD", "5", "wrong sign-in codes in a row that lock a user's code checks (1 to 100)"},
	{"MFA_LOCKOUT_DURATION", "1m", "length of a user's first lock; each further lock in a row doubles it"},
	{"MFA_LOCKOUT_MAX_DURATION", "15m", "longest lock (at most 24h)"},
	{"MFA_SIGNING_KEY", "(dev stack: generated into MFA_DATA_DIR/signing.key)", "PEM EC P-256 private key(s) that sign mfa_tokens (ES256): the first signs, all are published in the JWKS; `\\n` may stand for newlines; required by the status service"},
	{"MFA_PUSH_WEBHOOK_URL", "", "absolute http(s) URL that receives a signed wake-up {ph_id, challenge_id, expires_at} for each push challenge to a device that is not connected; empty = off"},
	{"MFA_PUSH_WEBHOOK_SECRET", "", "HMAC-SHA256 key (at least 32 bytes) that signs wake-ups; required when MFA_PUSH_WEBHOOK_URL is set"},
	{"MFA_PUSH_RATE", "5", "push sign-ins one user may start per 10 minutes (1 to 100)"},
	{"MFA_STEP_UP", "on", "on: once a user has a factor, enrolling another, removing one and new recovery codes need X-MFA-Token (a fresh mfa_token of the user, used once), else 403 step_up_required; off: the identity provider enforces this"},
	{"MFA_STEP_UP_MAX_AGE", "5m", "how old the auth_time of an X-MFA-Token may be (Go duration, 10s to 1h)"},
	{"MFA_LOG_LEVEL", "info", "debug, info, warn or error"},
	{"MFA_POLL_RATE", "1", "status polls per second one user may make of one enrollment (0 = unlimited); faster polls get 429"},
	{"MFA_POLL_BURST", "5", "polls allowed at once before MFA_POLL_RATE applies"},
	{"MFA_USER_START_RATE", "20", "enrollment initiations, sign-in initiations, recovery-code sets and disable links one user may start per minute, per replica of each service (0 = unlimited); more get 429 `too_many_requests` with Retry-After. A service token's sign-ins count against the user they name"},
	{"MFA_USER_START_BURST", "10", "initiations one user may start at once before MFA_USER_START_RATE applies (1 to 10000)"},
	{"MFA_USER_STREAMS", "20", "live status streams (SSE and websocket) one user may hold open on one status replica (0 = unlimited); one more is refused with 429 `too_many_requests` and Retry-After before the stream starts"},
	{"MFA_DISABLE_CONFIRM_URL", "", "the frontend page an emailed \"disable MFA\" link opens, with ?token=… appended (valid 15 minutes); empty: the demo page at MFA_PUBLIC_URL"},
	{"MFA_OOB_CODE_DIGITS", "6", "digits of a code sent by email or SMS (6 to 8)"},
	{"MFA_OOB_CODE_TTL", "5m", "how long a code sent by email or SMS works (Go duration, 1m to 30m)"},
	{"MFA_OOB_MAX_ATTEMPTS", "5", "wrong codes that make an enrollment FAILED (1 to 20)"},
	{"MFA_SMS_USER_RATE", "10", "text messages one user may be sent per hour (1 to 1000); more get 429 `too_many_requests` and nothing is sent"},
	{"MFA_SMS_NUMBER_RATE", "5", "text messages one phone number may be sent per hour (1 to 1000)"},
	{"MFA_SMS_HOURLY_LIMIT", "1000", "text messages the whole deployment may send per hour (1 to 10000000): a ceiling against SMS pumping"},
	{"MFA_SMS_REGIONS", "", "regions text messages may go to, as ISO 3166 codes (DE,AT,CH); empty: all. Numbers elsewhere get 400 `region_not_allowed`"},
	{"MFA_COMMAND_CONCURRENCY", "256", "NATS commands one endpoint runs at once on one replica; more get `unavailable` at once"},
	{"MFA_COMMAND_TIMEOUT", "10s", "deadline of each NATS command a service handles (Go duration); past it the caller gets `unavailable`"},
	{"MFA_BRIDGE_MAX_CONNECTIONS", "10000", "websocket connections one mobile-bridge replica holds open; one more is refused with 503 `unavailable` and Retry-After (keep below the open-file limit)"},
	{"MFA_BRIDGE_FRAME_RATE", "10", "frames per second one bridge connection may send (after the burst); faster frames get a `too_many_requests` error frame"},
	{"MFA_BRIDGE_FRAME_BURST", "20", "frames one bridge connection may send at once before MFA_BRIDGE_FRAME_RATE applies"},
	{"MFA_SMTP_URL", "", "mail server of the notifier: smtp://user:pass@host:587 (STARTTLS required), smtps://user:pass@host:465 (implicit TLS) or smtp+insecure://host:1025 (plain, development only); empty = no email (the dev stack runs its own inbox)"},
	{"MFA_MAIL_FROM", "mfaflow <no-reply@example.org>", "From address of the notifier's mails (RFC 5322, with or without a display name); its domain ends every Message-ID"},
	{"MFA_SMS_PROVIDER", "", "how the notifier sends SMS: webhook (MFA_SMS_WEBHOOK_*) or twilio (MFA_TWILIO_*); empty = no SMS (the dev stack runs its own receiver)"},
	{"MFA_SMS_WEBHOOK_URL", "", "absolute http(s) URL that receives a signed POST {to, body, delivery_id} per SMS (MFA_SMS_PROVIDER=webhook)"},
	{"MFA_SMS_WEBHOOK_SECRET", "", "HMAC-SHA256 key (at least 32 bytes) that signs SMS webhook requests like push wake-ups (X-Mfaflow-Signature); required with MFA_SMS_PROVIDER=webhook"},
	{"MFA_TWILIO_ACCOUNT_SID", "", "Twilio account SID (MFA_SMS_PROVIDER=twilio)"},
	{"MFA_TWILIO_AUTH_TOKEN", "", "Twilio auth token (MFA_SMS_PROVIDER=twilio)"},
	{"MFA_TWILIO_FROM", "", "Twilio sender: an E.164 number or a messaging service SID (MFA_SMS_PROVIDER=twilio)"},
	{"MFA_TWILIO_BASE_URL", "https://api.twilio.com", "base URL of Twilio's API (tests point it at a local server)"},
	{"MFA_DELIVERY_KEY", "(dev stack: generated in MFA_DATA_DIR)", "32-byte key (base64 or hex) that seals delivery requests (codes, addresses) on the MFA_DELIVERIES stream; the device registry and the notifier must share it"},
	{"MFA_TEMPLATES_DIR", "", "directory whose files override the notifier's built-in templates, file by file (<locale>/<kind>.subject.txt, .txt, .html; see services/notifier)"},
	{"MFA_DEFAULT_LOCALE", "en", "language of messages when the user's locale is unknown or has no templates (en, de, or a locale of MFA_TEMPLATES_DIR)"},
	{"MFA_WEBAUTHN_RP_ID", "(the host of MFA_PUBLIC_URL)", "relying party id of passkeys (WEBAUTHN): a domain name (localhost for development), never an IP address; where the settings cannot work, WEBAUTHN is inactive and the registry's start-up log says what to set"},
	{"MFA_WEBAUTHN_RP_NAME", "(MFA_ISSUER)", "relying party name authenticators show for passkeys"},
	{"MFA_WEBAUTHN_ORIGINS", "(the origin of MFA_PUBLIC_URL)", "origins browsers may register and use passkeys from, comma-separated (https://app.example.org); each at the RP ID or below it"},
	{"MFA_WEBAUTHN_USER_VERIFICATION", "preferred", "user verification passkey ceremonies ask for: preferred or required (a PIN or biometric every time)"},
}

// FromEnv reads the configuration through getenv (os.Getenv in main) and applies defaults.
func FromEnv(getenv func(string) string) (Config, error) {
	get := func(name string) string {
		for _, v := range Variables {
			if v.Name == name {
				if s := strings.TrimSpace(getenv(name)); s != "" {
					return s
				}
				if strings.HasPrefix(v.Default, "(") {
					return ""
				}
				return v.Default
			}
		}
		panic("config: unknown variable " + name)
	}
	c := Config{
		HTTPAddr:         get("MFA_HTTP_ADDR"),
		PublicURL:        strings.TrimRight(get("MFA_PUBLIC_URL"), "/"),
		NATSURL:          get("MFA_NATS_URL"),
		EmbeddedNATSAddr: get("MFA_EMBEDDED_NATS_ADDR"),
		DataDir:          get("MFA_DATA_DIR"),
		Store:            get("MFA_STORE"),
		MongoURI:         get("MFA_MONGODB_URI"),
		Issuer:           get("MFA_ISSUER"),
		ClientID:         get("MFA_CLIENT_ID"),
		SecretKey:        get("MFA_SECRET_KEY"),
		SecretKeys:       get("MFA_SECRET_KEYS"),
		JWTSecret:        get("MFA_JWT_SECRET"),
		JWTIssuer:        get("MFA_JWT_ISSUER"),
		JWKSURL:          get("MFA_JWT_JWKS_URL"),
		NATSCreds:        get("MFA_NATS_CREDS"),
		NATSNKey:         get("MFA_NATS_NKEY"),
		NATSTLSCert:      get("MFA_NATS_TLS_CERT"),
		NATSTLSKey:       get("MFA_NATS_TLS_KEY"),
		NATSTLSCA:        get("MFA_NATS_TLS_CA"),
		JWTAudience:      get("MFA_JWT_AUDIENCE"),
		// A PEM in a one-line env var (a Kubernetes secret, a .env file) has its newlines as `\n`.
		SigningKey:        strings.ReplaceAll(get("MFA_SIGNING_KEY"), `\n`, "\n"),
		PushWebhookURL:    get("MFA_PUSH_WEBHOOK_URL"),
		PushWebhookSecret: get("MFA_PUSH_WEBHOOK_SECRET"),

		SMTPURL:          get("MFA_SMTP_URL"),
		MailFrom:         get("MFA_MAIL_FROM"),
		SMSProvider:      get("MFA_SMS_PROVIDER"),
		SMSWebhookURL:    get("MFA_SMS_WEBHOOK_URL"),
		SMSWebhookSecret: get("MFA_SMS_WEBHOOK_SECRET"),
		TwilioAccountSID: get("MFA_TWILIO_ACCOUNT_SID"),
		TwilioAuthToken:  get("MFA_TWILIO_AUTH_TOKEN"),
		TwilioFrom:       get("MFA_TWILIO_FROM"),
		TwilioBaseURL:    strings.TrimRight(get("MFA_TWILIO_BASE_URL"), "/"),
		DeliveryKey:      get("MFA_DELIVERY_KEY"),
		TemplatesDir:     get("MFA_TEMPLATES_DIR"),
		DefaultLocale:    get("MFA_DEFAULT_LOCALE"),

		WebAuthnRPID:             strings.ToLower(get("MFA_WEBAUTHN_RP_ID")),
		WebAuthnRPName:           get("MFA_WEBAUTHN_RP_NAME"),
		WebAuthnUserVerification: get("MFA_WEBAUTHN_USER_VERIFICATION"),
	}
	for _, o := range strings.Split(get("MFA_WEBAUTHN_ORIGINS"), ",") {
		if o = strings.TrimRight(strings.TrimSpace(o), "/"); o != "" {
			c.WebAuthnOrigins = append(c.WebAuthnOrigins, o)
		}
	}
	var errs []error
	ttl, err := time.ParseDuration(get("MFA_ENROLLMENT_TTL"))
	if err != nil || ttl <= 0 || ttl > MaxEnrollmentTTL {
		errs = append(errs, fmt.Errorf("MFA_ENROLLMENT_TTL: want a Go duration between 1s and %v such as 10m, got %q", MaxEnrollmentTTL, get("MFA_ENROLLMENT_TTL")))
	}
	c.EnrollmentTTL = ttl
	if c.VerificationTTL, err = time.ParseDuration(get("MFA_VERIFICATION_TTL")); err != nil || c.VerificationTTL < MinVerificationTTL || c.VerificationTTL > MaxVerificationTTL {
		errs = append(errs, fmt.Errorf("MFA_VERIFICATION_TTL: want a Go duration between %v and %v such as 5m, got %q", MinVerificationTTL, MaxVerificationTTL, get("MFA_VERIFICATION_TTL")))
	}
	if c.NATSReplicas, err = strconv.Atoi(get("MFA_NATS_REPLICAS")); err != nil || c.NATSReplicas < 1 || c.NATSReplicas > MaxNATSReplicas {
		errs = append(errs, fmt.Errorf("MFA_NATS_REPLICAS: want a whole number between 1 and %d, got %q", MaxNATSReplicas, get("MFA_NATS_REPLICAS")))
	}
	if c.LockoutThreshold, err = strconv.Atoi(get("MFA_LOCKOUT_THRESHOLD")); err != nil || c.LockoutThreshold < 1 || c.LockoutThreshold > 100 {
		errs = append(errs, fmt.Errorf("MFA_LOCKOUT_THRESHOLD: want a whole number between 1 and 100, got %q", get("MFA_LOCKOUT_THRESHOLD")))
	}
	if c.LockoutDuration, err = time.ParseDuration(get("MFA_LOCKOUT_DURATION")); err != nil || c.LockoutDuration < time.Second || c.LockoutDuration > 24*time.Hour {
		errs = append(errs, fmt.Errorf("MFA_LOCKOUT_DURATION: want a Go duration between 1s and 24h such as 1m, got %q", get("MFA_LOCKOUT_DURATION")))
	}
	if c.LockoutMaxDuration, err = time.ParseDuration(get("MFA_LOCKOUT_MAX_DURATION")); err != nil || c.LockoutMaxDuration < c.LockoutDuration || c.LockoutMaxDuration > 24*time.Hour {
		errs = append(errs, fmt.Errorf("MFA_LOCKOUT_MAX_DURATION: want a Go duration between MFA_LOCKOUT_DURATION and 24h such as 15m, got %q", get("MFA_LOCKOUT_MAX_DURATION")))
	}
	if (c.NATSTLSCert == "") != (c.NATSTLSKey == "") {
		errs = append(errs, errors.New("MFA_NATS_TLS_CERT and MFA_NATS_TLS_KEY go together"))
	}
	if c.NATSCreds != "" && c.NATSNKey != "" {
		errs = append(errs, errors.New("MFA_NATS_CREDS and MFA_NATS_NKEY exclude each other (a .creds file holds its own seed)"))
	}
	if c.JWKSURL != "" {
		if u, err := url.Parse(c.JWKSURL); err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
			errs = append(errs, errors.New("MFA_JWT_JWKS_URL: want an absolute http(s) URL"))
		}
		if c.JWTSecret != "" {
			errs = append(errs, errors.New("MFA_JWT_JWKS_URL and MFA_JWT_SECRET exclude each other: tokens come from the identity provider or from a shared secret, not both"))
		}
	}
	if c.SigningKey != "" && !strings.Contains(c.SigningKey, "-----BEGIN ") {
		// Only the shape: the status service parses the keys (mfatoken.ParseKeys). Never echo the value.
		errs = append(errs, errors.New("MFA_SIGNING_KEY: want PEM text (-----BEGIN PRIVATE KEY----- …), one or more EC P-256 private keys"))
	}
	if c.PushWebhookURL != "" {
		// Never echo the URL: its path or query may hold the adapter's token.
		if u, err := url.Parse(c.PushWebhookURL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			errs = append(errs, errors.New("MFA_PUSH_WEBHOOK_URL: want an absolute http or https URL such as https://push.example.com/wake"))
		}
		if len(c.PushWebhookSecret) < MinPushWebhookSecretBytes {
			errs = append(errs, fmt.Errorf("MFA_PUSH_WEBHOOK_SECRET: want at least %d bytes when MFA_PUSH_WEBHOOK_URL is set", MinPushWebhookSecretBytes))
		}
	}
	if c.PushRate, err = strconv.Atoi(get("MFA_PUSH_RATE")); err != nil || c.PushRate < 1 || c.PushRate > MaxPushRate {
		errs = append(errs, fmt.Errorf("MFA_PUSH_RATE: want a whole number between 1 and %d, got %q", MaxPushRate, get("MFA_PUSH_RATE")))
	}
	switch get("MFA_STEP_UP") {
	case "on":
		c.StepUp = true
	case "off":
	default:
		errs = append(errs, fmt.Errorf("MFA_STEP_UP: want on or off, got %q", get("MFA_STEP_UP")))
	}
	if c.StepUpMaxAge, err = time.ParseDuration(get("MFA_STEP_UP_MAX_AGE")); err != nil || c.StepUpMaxAge < MinStepUpMaxAge || c.StepUpMaxAge > MaxStepUpMaxAge {
		errs = append(errs, fmt.Errorf("MFA_STEP_UP_MAX_AGE: want a Go duration between %v and %v such as 5m, got %q", MinStepUpMaxAge, MaxStepUpMaxAge, get("MFA_STEP_UP_MAX_AGE")))
	}
	if err := c.LogLevel.UnmarshalText([]byte(get("MFA_LOG_LEVEL"))); err != nil {
		errs = append(errs, fmt.Errorf("MFA_LOG_LEVEL: %w", err))
	}
	if c.PollRate, err = strconv.ParseFloat(get("MFA_POLL_RATE"), 64); err != nil || c.PollRate < 0 {
		errs = append(errs, fmt.Errorf("MFA_POLL_RATE: want a number >= 0, got %q", get("MFA_POLL_RATE")))
	}
	if c.PollBurst, err = strconv.Atoi(get("MFA_POLL_BURST")); err != nil || c.PollBurst < 1 {
		errs = append(errs, fmt.Errorf("MFA_POLL_BURST: want a whole number >= 1, got %q", get("MFA_POLL_BURST")))
	}
	if c.UserStartRate, err = strconv.ParseFloat(get("MFA_USER_START_RATE"), 64); err != nil || !(c.UserStartRate >= 0) || math.IsInf(c.UserStartRate, 0) {
		errs = append(errs, fmt.Errorf("MFA_USER_START_RATE: want a number of initiations per minute >= 0 (0 = unlimited), got %q", get("MFA_USER_START_RATE")))
	}
	if c.UserStartBurst, err = strconv.Atoi(get("MFA_USER_START_BURST")); err != nil || c.UserStartBurst < 1 || c.UserStartBurst > MaxUserStartBurst {
		errs = append(errs, fmt.Errorf("MFA_USER_START_BURST: want a whole number between 1 and %d, got %q", MaxUserStartBurst, get("MFA_USER_START_BURST")))
	}
	if c.UserStreams, err = strconv.Atoi(get("MFA_USER_STREAMS")); err != nil || c.UserStreams < 0 || c.UserStreams > MaxUserStreams {
		errs = append(errs, fmt.Errorf("MFA_USER_STREAMS: want a whole number between 0 (unlimited) and %d, got %q", MaxUserStreams, get("MFA_USER_STREAMS")))
	}
	c.DisableConfirmURL = get("MFA_DISABLE_CONFIRM_URL")
	if u, perr := url.Parse(c.DisableConfirmURL); c.DisableConfirmURL != "" && (perr != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "") {
		errs = append(errs, fmt.Errorf("MFA_DISABLE_CONFIRM_URL: want an absolute http(s) URL, got %q", c.DisableConfirmURL))
	}
	if c.OOBCodeDigits, err = strconv.Atoi(get("MFA_OOB_CODE_DIGITS")); err != nil || c.OOBCodeDigits < 6 || c.OOBCodeDigits > 8 {
		errs = append(errs, fmt.Errorf("MFA_OOB_CODE_DIGITS: want 6, 7 or 8, got %q", get("MFA_OOB_CODE_DIGITS")))
	}
	if c.OOBCodeTTL, err = time.ParseDuration(get("MFA_OOB_CODE_TTL")); err != nil || c.OOBCodeTTL < time.Minute || c.OOBCodeTTL > 30*time.Minute {
		errs = append(errs, fmt.Errorf("MFA_OOB_CODE_TTL: want a Go duration between 1m and 30m, got %q", get("MFA_OOB_CODE_TTL")))
	}
	if c.OOBMaxAttempts, err = strconv.Atoi(get("MFA_OOB_MAX_ATTEMPTS")); err != nil || c.OOBMaxAttempts < 1 || c.OOBMaxAttempts > 20 {
		errs = append(errs, fmt.Errorf("MFA_OOB_MAX_ATTEMPTS: want a whole number between 1 and 20, got %q", get("MFA_OOB_MAX_ATTEMPTS")))
	}
	for _, r := range []struct {
		name string
		dst  *int
		max  int
	}{{"MFA_SMS_USER_RATE", &c.SMSUserRate, 1000}, {"MFA_SMS_NUMBER_RATE", &c.SMSPerNumberRate, 1000}, {"MFA_SMS_HOURLY_LIMIT", &c.SMSHourlyLimit, 10_000_000}} {
		if *r.dst, err = strconv.Atoi(get(r.name)); err != nil || *r.dst < 1 || *r.dst > r.max {
			errs = append(errs, fmt.Errorf("%s: want a whole number between 1 and %d, got %q", r.name, r.max, get(r.name)))
		}
	}
	for _, region := range strings.Split(get("MFA_SMS_REGIONS"), ",") {
		region = strings.ToUpper(strings.TrimSpace(region))
		if region == "" {
			continue
		}
		if len(region) != 2 || region[0] < 'A' || region[0] > 'Z' || region[1] < 'A' || region[1] > 'Z' {
			errs = append(errs, fmt.Errorf("MFA_SMS_REGIONS: want ISO 3166 region codes such as DE,AT,CH, got %q", region))
			continue
		}
		c.SMSRegions = append(c.SMSRegions, region)
	}
	if c.CommandConcurrency, err = strconv.Atoi(get("MFA_COMMAND_CONCURRENCY")); err != nil || c.CommandConcurrency < 1 || c.CommandConcurrency > MaxCommandConcurrency {
		errs = append(errs, fmt.Errorf("MFA_COMMAND_CONCURRENCY: want a whole number between 1 and %d, got %q", MaxCommandConcurrency, get("MFA_COMMAND_CONCURRENCY")))
	}
	if c.CommandTimeout, err = time.ParseDuration(get("MFA_COMMAND_TIMEOUT")); err != nil || c.CommandTimeout <= 0 || c.CommandTimeout > MaxCommandTimeout {
		errs = append(errs, fmt.Errorf("MFA_COMMAND_TIMEOUT: want a Go duration above 0 and at most %v such as 10s, got %q", MaxCommandTimeout, get("MFA_COMMAND_TIMEOUT")))
	}
	if c.BridgeMaxConnections, err = strconv.Atoi(get("MFA_BRIDGE_MAX_CONNECTIONS")); err != nil || c.BridgeMaxConnections < 1 || c.BridgeMaxConnections > MaxBridgeConnections {
		errs = append(errs, fmt.Errorf("MFA_BRIDGE_MAX_CONNECTIONS: want a whole number between 1 and %d, got %q", MaxBridgeConnections, get("MFA_BRIDGE_MAX_CONNECTIONS")))
	}
	if c.BridgeFrameRate, err = strconv.ParseFloat(get("MFA_BRIDGE_FRAME_RATE"), 64); err != nil || !(c.BridgeFrameRate > 0) || math.IsInf(c.BridgeFrameRate, 0) {
		errs = append(errs, fmt.Errorf("MFA_BRIDGE_FRAME_RATE: want a number above 0, got %q", get("MFA_BRIDGE_FRAME_RATE")))
	}
	if c.BridgeFrameBurst, err = strconv.Atoi(get("MFA_BRIDGE_FRAME_BURST")); err != nil || c.BridgeFrameBurst < 1 || c.BridgeFrameBurst > MaxBridgeFrameBurst {
		errs = append(errs, fmt.Errorf("MFA_BRIDGE_FRAME_BURST: want a whole number between 1 and %d, got %q", MaxBridgeFrameBurst, get("MFA_BRIDGE_FRAME_BURST")))
	}
	errs = append(errs, c.validateDelivery()...)
	switch c.WebAuthnUserVerification {
	case UserVerificationPreferred, UserVerificationRequired:
	default:
		errs = append(errs, fmt.Errorf("MFA_WEBAUTHN_USER_VERIFICATION: want preferred or required, got %q", c.WebAuthnUserVerification))
	}
	switch c.Store {
	case "nats":
	case "mongo":
		// Never echo the URI: it may hold a password.
		if c.MongoURI == "" {
			errs = append(errs, errors.New("MFA_STORE=mongo needs MFA_MONGODB_URI (mongodb://host:27017/mfaflow)"))
		} else if !strings.HasPrefix(c.MongoURI, "mongodb://") && !strings.HasPrefix(c.MongoURI, "mongodb+srv://") {
			errs = append(errs, errors.New("MFA_MONGODB_URI (MFA_STORE=mongo): want a mongodb:// or mongodb+srv:// connection string"))
		}
	default:
		errs = append(errs, fmt.Errorf("MFA_STORE: want nats or mongo, got %q", c.Store))
	}
	if c.PublicURL == "" {
		c.PublicURL = DefaultPublicURL(c.HTTPAddr)
	}
	return c, errors.Join(errs...)
}

// DefaultPublicURL is http://localhost:<port> for a listen address.
func DefaultPublicURL(addr string) string {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return "http://localhost:8080"
	}
	if host == "" || host == "0.0.0.0" || host == "::" {
		host = "localhost"
	}
	return "http://" + net.JoinHostPort(host, port)
}

// LogValue masks the secrets, so a Config can be logged at start-up.
func (c Config) LogValue() slog.Value {
	mask := func(s string) string {
		if s == "" {
			return ""
		}
		return "********"
	}
	// Scheme and host only: the path or query of a webhook URL may be a credential.
	webhook := ""
	if u, err := url.Parse(c.PushWebhookURL); err == nil && u.Host != "" {
		webhook = u.Scheme + "://" + u.Host
	} else if c.PushWebhookURL != "" {
		webhook = "********"
	}
	mongo := c.MongoURI
	if i := strings.Index(mongo, "@"); i > 0 {
		mongo = "mongodb://********" + mongo[i:]
	}
	return slog.GroupValue(
		slog.String("http_addr", c.HTTPAddr), slog.String("public_url", c.PublicURL),
		slog.String("nats_url", natsx.Redact(c.NATSURL)), slog.Int("nats_replicas", c.NATSReplicas), slog.String("embedded_nats_addr", c.EmbeddedNATSAddr),
		slog.String("data_dir", c.DataDir), slog.String("store", c.Store), slog.String("mongodb_uri", mongo),
		slog.Duration("enrollment_ttl", c.EnrollmentTTL), slog.Duration("verification_ttl", c.VerificationTTL),
		slog.String("issuer", c.Issuer),
		slog.String("secret_key", mask(c.SecretKey)), slog.String("secret_keys", mask(c.SecretKeys)), slog.String("jwt_secret", mask(c.JWTSecret)),
		slog.String("signing_key", mask(c.SigningKey)),
		slog.String("jwt_issuer", c.JWTIssuer), slog.String("log_level", c.LogLevel.String()),
		slog.Int("command_concurrency", c.CommandConcurrency), slog.Duration("command_timeout", c.CommandTimeout),
		slog.Int("bridge_max_connections", c.BridgeMaxConnections), slog.Float64("bridge_frame_rate", c.BridgeFrameRate),
		slog.Int("bridge_frame_burst", c.BridgeFrameBurst),
		slog.String("push_webhook_url", webhook), slog.String("push_webhook_secret", mask(c.PushWebhookSecret)),
		slog.Int("push_rate", c.PushRate),
		slog.Float64("user_start_rate", c.UserStartRate), slog.Int("user_start_burst", c.UserStartBurst),
		slog.Int("user_streams", c.UserStreams), slog.Bool("step_up", c.StepUp), slog.Duration("step_up_max_age", c.StepUpMaxAge),
		slog.String("smtp_url", RedactURL(c.SMTPURL)), slog.String("mail_from", c.MailFrom), slog.String("sms_provider", c.SMSProvider),
		slog.String("sms_webhook_url", hostOnly(c.SMSWebhookURL)), slog.String("sms_webhook_secret", mask(c.SMSWebhookSecret)),
		slog.String("twilio_account_sid", c.TwilioAccountSID), slog.String("twilio_auth_token", mask(c.TwilioAuthToken)),
		slog.String("twilio_from", c.TwilioFrom), slog.String("twilio_base_url", hostOnly(c.TwilioBaseURL)),
		slog.String("delivery_key", mask(c.DeliveryKey)), slog.String("templates_dir", c.TemplatesDir), slog.String("default_locale", c.DefaultLocale),
		slog.String("webauthn_rp_id", c.WebAuthnRPID), slog.String("webauthn_rp_name", c.WebAuthnRPName),
		slog.String("webauthn_origins", strings.Join(c.WebAuthnOrigins, ",")), slog.String("webauthn_user_verification", c.WebAuthnUserVerification),
	)
}

// Logger returns the process logger: JSON on stderr at the configured level.
func (c Config) Logger() *slog.Logger {
	return newLogger(c.LogLevel)
}

// NATSOptions are the connection options of MFA_NATS_CREDS, MFA_NATS_NKEY and MFA_NATS_TLS_*.
func (c Config) NATSOptions() ([]nats.Option, error) {
	var opts []nats.Option
	if c.NATSCreds != "" {
		opts = append(opts, nats.UserCredentials(c.NATSCreds))
	}
	if c.NATSNKey != "" {
		o, err := nats.NkeyOptionFromSeed(c.NATSNKey)
		if err != nil {
			return nil, fmt.Errorf("MFA_NATS_NKEY: %w", err)
		}
		opts = append(opts, o)
	}
	if c.NATSTLSCert != "" {
		opts = append(opts, nats.ClientCert(c.NATSTLSCert, c.NATSTLSKey))
	}
	if c.NATSTLSCA != "" {
		opts = append(opts, nats.RootCAs(c.NATSTLSCA))
	}
	return opts, nil
}

// Verifier returns the verifier of Bearer tokens: the identity provider's JWKS when
// MFA_JWT_JWKS_URL is set, else HS256 with MFA_JWT_SECRET.
func (c Config) Verifier() (auth.Verifier, error) {
	if c.JWKSURL != "" {
		return &auth.JWKS{URL: c.JWKSURL, Issuer: c.JWTIssuer, Audience: c.JWTAudience}, nil
	}
	return c.TokenVerifier()
}

// TokenVerifier returns the HS256 verifier of Bearer tokens from MFA_JWT_SECRET.
func (c Config) TokenVerifier() (auth.HS256, error) {
	if len(c.JWTSecret) < auth.MinKeyBytes {
		return auth.HS256{}, fmt.Errorf("MFA_JWT_SECRET: want at least %d bytes", auth.MinKeyBytes)
	}
	return auth.HS256{Key: []byte(c.JWTSecret), Issuer: c.JWTIssuer, Audience: c.JWTAudience}, nil
}

// CommandLimits are the bounds of every service's NATS command endpoints
// (MFA_COMMAND_CONCURRENCY, MFA_COMMAND_TIMEOUT).
func (c Config) CommandLimits() rpc.Limits {
	return rpc.Limits{MaxInFlight: c.CommandConcurrency, Timeout: c.CommandTimeout}
}

package registrysvc

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"

	"github.com/mfaflow/mfaflow/pkg/config"
	"github.com/mfaflow/mfaflow/pkg/serve"
	"github.com/mfaflow/mfaflow/services/device-registry/internal/device"
	"github.com/mfaflow/mfaflow/services/device-registry/internal/secretbox"
	"github.com/nats-io/nats.go"
)

// Name names the service in logs, in its NATS connection and in $SRV discovery.
const Name = "device-registry"

// ConfigFrom maps the process configuration (the MFA_* environment) to this service's Config.
// The service's main and the dev stack both call it, so the environment is wired once.
func ConfigFrom(env config.Config) (Config, error) {
	var (
		key     []byte
		ring    map[byte][]byte
		current byte
		err     error
	)
	switch {
	case env.SecretKeys != "":
		if current, ring, err = secretbox.ParseKeyRing(env.SecretKeys); err != nil {
			return Config{}, fmt.Errorf("MFA_SECRET_KEYS: %w", err)
		}
	case env.SecretKey == "":
		return Config{}, errors.New("MFA_SECRET_KEY (32 bytes, base64 or hex) or MFA_SECRET_KEYS (id:key,… current first) is required")
	default:
		if key, err = secretbox.ParseKey(env.SecretKey); err != nil {
			return Config{}, fmt.Errorf("MFA_SECRET_KEY: %w", err)
		}
	}
	verifier, err := env.Verifier()
	if err != nil {
		return Config{}, err
	}
	// Without MFA_DELIVERY_KEY the registry sends no codes: EMAIL and SMS stay inactive.
	var deliveryKey []byte
	if env.DeliveryKey != "" {
		if deliveryKey, err = env.DeliveryKeyBytes(); err != nil {
			return Config{}, err
		}
	}
	confirmURL := env.DisableConfirmURL
	if confirmURL == "" {
		confirmURL = strings.TrimRight(env.PublicURL, "/") + "/"
	}
	// Passkey settings that cannot work leave WEBAUTHN inactive; the registry logs why.
	var (
		passkeys *config.WebAuthn
		inactive string
	)
	if w, werr := env.WebAuthn(); werr != nil {
		inactive = werr.Error()
	} else {
		passkeys = &w
	}
	return Config{
		WebAuthn: passkeys, WebAuthnInactive: inactive,
		DeliveryKey: deliveryKey, DisableConfirmURL: confirmURL,
		SecretKey: key, SecretKeys: ring, CurrentKey: current, Verifier: verifier, Commands: env.CommandLimits(), Store: env.Store, MongoURI: env.MongoURI, Replicas: env.NATSReplicas,
		StepUpOff: !env.StepUp,
		Lockout:   device.LockoutPolicy{Threshold: env.LockoutThreshold, Duration: env.LockoutDuration, MaxDuration: env.LockoutMaxDuration},
		OOB: device.OOBPolicy{Digits: env.OOBCodeDigits, CodeTTL: env.OOBCodeTTL, SMSPerUser: env.SMSUserRate,
			SMSPerDestination: env.SMSPerNumberRate, SMSGlobal: env.SMSHourlyLimit, SMSRegions: env.SMSRegions},
		UserStartsPerMinute: env.UserStartRate, UserStartBurst: env.UserStartBurst,
	}, nil
}

// Run is the service's main: it runs the service as its own process against MFA_NATS_URL until
// ctx ends, then shuts down HTTP, the service and the NATS connection (awaiting its drain).
func Run(ctx context.Context, env config.Config) error {
	cfg, err := ConfigFrom(env)
	if err != nil {
		return err
	}
	return serve.Standalone(ctx, env, Name, func(nc *nats.Conn, log *slog.Logger) (serve.Component, error) {
		return New(ctx, nc, cfg, log)
	})
}

module github.com/mfaflow/mfaflow/devstack

go 1.26.8

require (
	github.com/mfaflow/mfaflow/events v0.0.0
	github.com/mfaflow/mfaflow/mobile-bridge v0.0.0
	github.com/mfaflow/mfaflow/pkg v0.0.0
	github.com/mfaflow/mfaflow/services/device-registry v0.0.0
	github.com/mfaflow/mfaflow/services/initiation v0.0.0
	github.com/mfaflow/mfaflow/services/status v0.0.0
)

replace (
	github.com/mfaflow/mfaflow/events => ../events
	github.com/mfaflow/mfaflow/mobile-bridge => ../mobile-bridge
	github.com/mfaflow/mfaflow/pkg => ../pkg
	github.com/mfaflow/mfaflow/services/device-registry => ../services/device-registry
	github.com/mfaflow/mfaflow/services/initiation => ../services/initiation
	github.com/mfaflow/mfaflow/services/status => ../services/status
)

package natsx

import (
	"testing"
	"time"
)

// SetAttemptTimeout shortens AwaitJetStream's attempts for tb.
func SetAttemptTimeout(tb testing.TB, d time.Duration) {
	old := attemptTimeout
	attemptTimeout = d
	tb.Cleanup(func() { attemptTimeout = old })
}

package mongodoc

import "time"

// SetClaimTimeout shortens how long c's version claims hold, for tests.
func SetClaimTimeout(c *Collection, d time.Duration) { c.claimTimeout = d }

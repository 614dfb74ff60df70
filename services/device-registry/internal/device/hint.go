package device

import (
	"slices"
	"sync"
	"time"
)

// deviceHints remembers, for a little while, the verified TOTP devices a user's readiness found
// noted in the user's index, so that the code check of the same sign-in reads those devices
// beside the lockout instead of reading the index first (one round trip and one read fewer).
//
// A hint only chooses what the check reads first: the check verifies every device it reads as
// it always does, and when the hinted devices do not accept the code (a device added or removed
// since, a peer replica's readiness, a wrong code) it reads the user's devices from the index
// and decides on those. So a stale hint costs a read, never a different answer.
type deviceHints struct {
	mu sync.Mutex
	m  map[string]deviceHint
}

type deviceHint struct {
	phids []string
	at    time.Time
}

// Hint bounds: how long a readiness answer helps its check (a sign-in's code usually follows
// within seconds) and how many users are remembered (past it the map starts over).
const (
	hintTTL   = 2 * time.Minute
	maxHinted = 1 << 16
)

func (h *deviceHints) put(sub string, phids []string, now time.Time) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.m == nil || len(h.m) >= maxHinted {
		h.m = make(map[string]deviceHint, 1024)
	}
	h.m[sub] = deviceHint{phids: slices.Clone(phids), at: now}
}

func (h *deviceHints) get(sub string, now time.Time) []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	d, ok := h.m[sub]
	if !ok || now.Sub(d.at) > hintTTL || now.Before(d.at) {
		return nil
	}
	return d.phids
}

func (h *deviceHints) forget(sub string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	delete(h.m, sub)
}

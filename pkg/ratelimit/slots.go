package ratelimit

import (
	"crypto/sha256"
	"math"
	"strconv"
	"sync"
	"time"
)

// Slots bounds how many things (live streams, say) one key holds open at once. An entry exists
// only while its key holds a slot, so memory follows what is open, never what was.
type Slots struct {
	max   int
	mu    sync.Mutex
	count map[string]int
}

// NewSlots returns slots allowing max open per key; max 0 means unlimited.
func NewSlots(max int) *Slots { return &Slots{max: max, count: map[string]int{}} }

// Acquire takes a slot for key. It returns false when key holds max already; otherwise the
// caller must call release exactly once (later calls do nothing) when the thing closes.
func (s *Slots) Acquire(key string) (release func(), ok bool) {
	if s == nil || s.max <= 0 {
		return func() {}, true
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.count[key] >= s.max {
		return nil, false
	}
	s.count[key]++
	var once sync.Once
	return func() { once.Do(func() { s.release(key) }) }, true
}

func (s *Slots) release(key string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.count[key]--; s.count[key] <= 0 {
		delete(s.count, key)
	}
}

// Open reports how many slots key holds.
func (s *Slots) Open(key string) int {
	if s == nil {
		return 0
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.count[key]
}

// Len reports how many keys hold a slot.
func (s *Slots) Len() int {
	if s == nil {
		return 0
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.count)
}

// Key is a fixed-size key for parts (a user, a user and an enrollment): a token with a huge
// sub claim cannot make a limiter hold huge keys.
func Key(parts ...string) string {
	h := sha256.New()
	for _, p := range parts {
		h.Write([]byte(p))
		h.Write([]byte{0})
	}
	return string(h.Sum(nil)[:16])
}

// RetryAfter is the value of a Retry-After header for a wait: whole seconds, at least 1.
func RetryAfter(wait time.Duration) string {
	return strconv.Itoa(max(int(math.Ceil(wait.Seconds())), 1))
}

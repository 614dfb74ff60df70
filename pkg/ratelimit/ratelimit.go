// Package ratelimit holds per-key limits: a token bucket (Limiter), for polls of one enrollment
// and initiations of one user, and a count of open streams (Slots). With the bucket, each key may
// make Burst requests at once and Rate per second after that. It is per process; behind N
// replicas the effective limit is up to N times higher, which is fine for its purpose
// (stopping a runaway loop or one token's flood, not metering).
package ratelimit

import (
	"math"
	"sync"
	"time"
)

// DefaultMaxKeys is the number of keys a limiter tracks when MaxKeys is 0. A bucket costs
// about 100 bytes plus its key, so the default bounds a limiter to roughly 10-20 MB.
const DefaultMaxKeys = 100_000

// Limiter limits requests per key.
//
// The number of tracked keys is bounded (MaxKeys). When a new key arrives and the table is
// full, idle buckets (refilled, so indistinguishable from new ones) are swept first; if it is
// still full, the stalest of a few sampled buckets is evicted to make room. Evicting fails
// open: the evicted key simply gets a fresh burst. Refusing new keys instead would let one
// caller who fills the table lock every other user out. Keyed per user (initiations), filling
// the table takes as many users' tokens as it has keys, so one stolen session stays limited;
// keyed per user and enrollment (polls), filling it at worst hands pollers fresh bursts.
type Limiter struct {
	Rate  float64 // tokens per second
	Burst float64 // bucket size
	Now   func() time.Time
	// MaxKeys bounds the keys tracked at once; 0 means DefaultMaxKeys.
	MaxKeys int

	mu         sync.Mutex
	buckets    map[string]*bucket
	swept      time.Time
	forceSwept time.Time
}

type bucket struct {
	tokens float64
	last   time.Time
}

// New returns a limiter allowing rate requests per second with bursts of burst.
func New(rate float64, burst int) *Limiter {
	return &Limiter{Rate: rate, Burst: float64(max(burst, 1)), buckets: map[string]*bucket{}}
}

func (l *Limiter) now() time.Time {
	if l.Now != nil {
		return l.Now()
	}
	return time.Now()
}

// Allow takes a token for key. When none is left it returns false and how long until one is.
func (l *Limiter) Allow(key string) (bool, time.Duration) {
	if l == nil || l.Rate <= 0 {
		return true, 0
	}
	now := l.now()
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.buckets == nil {
		l.buckets = map[string]*bucket{}
	}
	l.sweep(now)
	b, ok := l.buckets[key]
	if !ok {
		l.makeRoom(now)
		b = &bucket{tokens: l.Burst, last: now}
		l.buckets[key] = b
	}
	b.tokens = math.Min(l.Burst, b.tokens+now.Sub(b.last).Seconds()*l.Rate)
	b.last = now
	if b.tokens >= 1 {
		b.tokens--
		return true, 0
	}
	wait := time.Duration((1 - b.tokens) / l.Rate * float64(time.Second))
	return false, wait
}

// Len reports how many keys the limiter tracks.
func (l *Limiter) Len() int {
	if l == nil {
		return 0
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.buckets)
}

func (l *Limiter) maxKeys() int {
	if l.MaxKeys > 0 {
		return l.MaxKeys
	}
	return DefaultMaxKeys
}

// evictSample is how many buckets makeRoom looks at to pick the stalest one to evict.
const evictSample = 8

// makeRoom ensures there is space for one more key. A full table is swept of idle buckets at
// most once a second (a sweep walks every key); if that frees nothing, the stalest of a few
// buckets, sampled in map order, is evicted.
func (l *Limiter) makeRoom(now time.Time) {
	if len(l.buckets) < l.maxKeys() {
		return
	}
	if now.Sub(l.forceSwept) >= time.Second {
		l.forceSwept = now
		l.drop(now)
	}
	for len(l.buckets) >= l.maxKeys() {
		var victim string
		var oldest time.Time
		n := 0
		for k, b := range l.buckets {
			if n == 0 || b.last.Before(oldest) {
				victim, oldest = k, b.last
			}
			if n++; n == evictSample {
				break
			}
		}
		delete(l.buckets, victim)
	}
}

// sweep drops full buckets now and then so idle keys do not pile up.
func (l *Limiter) sweep(now time.Time) {
	if now.Sub(l.swept) < time.Minute {
		return
	}
	l.swept = now
	l.drop(now)
}

// drop deletes the buckets that have refilled: they behave exactly like absent ones.
func (l *Limiter) drop(now time.Time) {
	full := time.Duration(l.Burst / l.Rate * float64(time.Second))
	for k, b := range l.buckets {
		if now.Sub(b.last) > full {
			delete(l.buckets, k)
		}
	}
}

// PerMinute returns a limiter of perMinute requests a minute per key, with bursts of burst, on
// the clock now (nil means time.Now); nil, which allows everything, when perMinute is 0.
func PerMinute(perMinute float64, burst int, now func() time.Time) *Limiter {
	if perMinute <= 0 {
		return nil
	}
	l := New(perMinute/60, burst)
	l.Now = now
	return l
}

package ratelimit_test

import (
	"strconv"
	"testing"
	"time"

	"github.com/mfaflow/mfaflow/pkg/ratelimit"
)

// TestLimiterKeyCap: however many distinct keys arrive, the limiter tracks at most MaxKeys.
func TestLimiterKeyCap(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	l := ratelimit.New(1, 2)
	l.MaxKeys = 100
	l.Now = func() time.Time { return now }
	for i := range 10_000 {
		if ok, _ := l.Allow("k" + strconv.Itoa(i)); !ok {
			t.Fatalf("first request of key %d refused", i)
		}
		if n := l.Len(); n > 100 {
			t.Fatalf("after %d keys the limiter tracks %d, cap 100", i+1, n)
		}
		now = now.Add(time.Microsecond)
	}
}

// TestLimiterFullSweepsIdleFirst: a full table drops idle buckets before evicting anything, so
// a key that is being limited right now stays limited.
func TestLimiterFullSweepsIdleFirst(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	l := ratelimit.New(1, 2)
	l.MaxKeys = 100
	l.Now = func() time.Time { return now }
	for i := range 99 {
		l.Allow("idle" + strconv.Itoa(i))
	}
	now = now.Add(10 * time.Second) // the 99 buckets have refilled: idle
	for range 2 {
		l.Allow("busy")
	}
	if ok, _ := l.Allow("busy"); ok {
		t.Fatal("busy allowed past its burst")
	}
	if l.Len() != 100 {
		t.Fatalf("len %d, want a full table of 100", l.Len())
	}
	if ok, _ := l.Allow("new"); !ok {
		t.Fatal("a new key refused on a full table")
	}
	if n := l.Len(); n != 2 {
		t.Fatalf("len %d after the sweep, want 2 (busy and new)", n)
	}
	if ok, _ := l.Allow("busy"); ok {
		t.Fatal("the sweep reset a bucket that is still limiting")
	}
}

func TestLimiterDefaultCap(t *testing.T) {
	if ratelimit.DefaultMaxKeys != 100_000 {
		t.Fatalf("DefaultMaxKeys %d", ratelimit.DefaultMaxKeys)
	}
	l := ratelimit.New(1, 1)
	for i := range ratelimit.DefaultMaxKeys + 10 {
		l.Allow(strconv.Itoa(i))
	}
	if n := l.Len(); n > ratelimit.DefaultMaxKeys || n == 0 {
		t.Fatalf("len %d, want at most the default cap %d", n, ratelimit.DefaultMaxKeys)
	}
}
